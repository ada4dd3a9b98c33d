"""Exceptions for bad user input.

:class:`InputError` is raised for anything the user can fix (a bad file, column, argument or value). The CLI turns
it into a one-line message and exit code 2. It subclasses :class:`ValueError` so library users can catch either.
"""

from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """A user-fixable problem with an input file, column or argument; the message is one line."""
