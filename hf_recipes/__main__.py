"""``python -m hf_recipes`` is the ``hf-recipes`` command."""

import sys

from hf_recipes.cli import main

sys.exit(main())
