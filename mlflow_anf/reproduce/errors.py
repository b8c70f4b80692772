"""The errors of a reproduction; ``exit_code`` is the CLI's documented code for each."""

from __future__ import annotations


class ReproduceError(Exception):
    """A reproduction refused or failed; ``exit_code`` is the CLI's documented code for it."""

    exit_code = 2


class SourceGone(ReproduceError, LookupError):
    """The snapshot, code version or image the run needs no longer exists."""

    exit_code = 3


class CodeMismatch(ReproduceError, ValueError):
    """The project's code is not the code the run ran (and no ``allow_code_change``)."""


class ReproductionFailed(ReproduceError):
    """The reproduction ran and failed."""

    exit_code = 4
