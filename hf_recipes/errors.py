"""The one exception type users see: a problem with their input, told in one line."""


class RecipeError(Exception):
    """Bad input or set-up. The CLI prints ``error: <message>`` and exits non-zero, without a traceback."""
