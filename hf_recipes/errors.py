"""The one exception type users see: a problem with their input, told in one line."""

import difflib
from typing import Sequence


class RecipeError(Exception):
    """Bad input or set-up. The CLI prints ``error: <message>`` and exits 2, without a traceback."""


def one_line(err: BaseException) -> str:
    """An exception's message as one line: a multi-line library message is joined, not cut after its first line."""
    if isinstance(err, OSError) and err.strerror:  # permission denied, disk full, not a directory, ...
        return f"{err.strerror}: {err.filename}" if err.filename else err.strerror
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    return text or type(err).__name__


def did_you_mean(name: str, known: Sequence[str]) -> str:
    """" (did you mean 'x'?)" with the closest of ``known`` to a misspelled ``name``, or "" when none is close."""
    hint = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean '{hint[0]}'?)" if hint else ""
