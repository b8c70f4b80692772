"""The data package's base error (its own module so that frame reading and label parsing can both raise it)."""

from __future__ import annotations


class DataError(Exception):
    """A dataset file (image, label file, split) is missing or unreadable; the message names the file."""


class PrepareError(DataError):
    """The source cannot be turned into a prepared root; the message names the file, line or archive member."""
