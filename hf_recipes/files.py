"""A file the user names is a regular file, or one line says what it is instead (light: the CLI uses it before
torch and transformers are imported)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from hf_recipes.errors import RecipeError

# What a path that is no regular file is, by its stat mode: read as data, a pipe or a socket blocks and a device
# (e.g. /dev/zero) never ends.
SPECIAL_FILES = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
                 (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def check_regular_file(path: str | os.PathLike, option: str) -> None:
    """Missing files, broken symbolic links, directories and special files (pipe, socket, device, or a symbolic link
    to one) are one line naming ``option`` and what the path is; nothing is opened."""
    p = Path(path)
    if not p.exists():
        if p.is_symlink():
            raise RecipeError(f"{option} {path} is a broken symbolic link (to {os.readlink(p)}): point it at a file "
                              "or pass the file itself")
        raise RecipeError(f"{option} not found: {path}")
    if p.is_dir():
        raise RecipeError(f"{option} is a directory, not a file: {path}")
    kind = next((name for is_kind, name in SPECIAL_FILES if is_kind(p.stat().st_mode)), None)
    if kind is not None:
        target = f" (a symbolic link to {p.resolve()})" if p.is_symlink() else ""
        raise RecipeError(f"{option} {path}{target} is {kind}, not a regular file: save its content to a file and "
                          "pass that")
