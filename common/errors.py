"""User-facing errors: one clear message and a non-zero exit, never a deep traceback."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])

EXIT_USER_ERROR = 2


class UserError(Exception):
    """An error the user can fix (bad input, missing file, wrong config); printed without a traceback."""


class ConfigError(UserError):
    """A config file or a command-line override is invalid."""


class FormatError(UserError):
    """An on-disk file does not match the clip format; the message names the file."""


class MediaError(UserError):
    """A video or audio file cannot be read or written."""


def cli_entry(func: F) -> F:
    """Wrap a command's main(): UserError -> message on stderr and exit code 2.

    Set SPFEM_TRACEBACK=1 to see the full traceback while debugging.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            if os.environ.get("SPFEM_TRACEBACK"):
                raise
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]
