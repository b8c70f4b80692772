"""Errors of the ``anf`` provider, and :func:`redact`, which scrubs every text they carry."""

from __future__ import annotations

import os

from mlflow_anf.snapshots.base import SnapshotError, SnapshotInputError, SnapshotNotFound

_SECRET_ENV = ("AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PASSWORD", "AZURE_PASSWORD")


class AnfInputError(SnapshotInputError):
    """A request the provider refuses before sending anything: bad name, target in the way, too little capacity."""


class AnfNotFound(SnapshotNotFound):
    """An ANF resource (snapshot, volume, capacity pool, account) does not exist."""


class AnfApiError(SnapshotError):
    """ARM answered with an error (after the SDK's retries) or could not be reached."""

    def __init__(self, message: str, *, status_code: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code


class RevertNotConfirmed(AnfInputError):
    """``revert`` was called without ``confirm`` equal to the volume's name; nothing was sent."""


def redact(text: str) -> str:
    """Scrub credentials (bearer tokens, ``client_secret=``-style fields, ...: :func:`mlflow_anf.secrets.redact_text`)
    and the values of Azure secret env vars from *text*."""
    from mlflow_anf.secrets import redact_text

    return redact_text(text, [os.environ.get(var) for var in _SECRET_ENV])
