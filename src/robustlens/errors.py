"""User-facing errors.

A :class:`UserError` is a mistake in what the user asked for (a missing path, a bad
argument, a checkpoint for another architecture). The command line prints it as one
line, without a traceback, and exits with status 2. Everything else is a bug and keeps
its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input; its message names the culprit and what was expected."""


def check(condition: bool, message: str) -> None:
    """Raise :class:`UserError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise UserError(message)
