"""Optional dependencies (the extras of ``pyproject.toml``) imported on a user's path: a missing one is an error that
names the extra to install, never a bare ``No module named 'kubernetes'``.

    kubernetes = require_extra("k8s", "kubernetes", "the mpijob backend")

The extras are those of the ``mlflow-anf`` distribution (``[project.optional-dependencies]``); :data:`EXTRAS` keeps
what each one brings, for the message.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: extra -> what it brings (its pyproject.toml line)
EXTRAS: dict[str, str] = {
    "k8s": "the Kubernetes client (kubernetes)",
    "azure": "the Azure SDK (azure-mgmt-netapp, azure-identity)",
    "registry": "the container registry client (python-dxf)",
    "lightning": "PyTorch Lightning (pytorch-lightning)",
}


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message says which extra brings it."""

    def __init__(self, message: str, *, extra: str, module: str) -> None:
        super().__init__(message, name=module)
        self.extra = extra


def install_hint(extra: str) -> str:
    """``pip install 'mlflow-anf[extra]'``."""
    return f"pip install 'mlflow-anf[{extra}]'"


def missing_extra(extra: str, module: str, purpose: str) -> MissingExtraError:
    """The error for *purpose* needing *module*, which *extra* installs."""
    if extra not in EXTRAS:
        raise KeyError(f"unknown extra {extra!r} (known: {', '.join(sorted(EXTRAS))})")
    return MissingExtraError(
        f"{purpose} needs {EXTRAS[extra]}, which is not installed: {install_hint(extra)}", extra=extra, module=module
    )


def require_extra(extra: str, module: str, purpose: str) -> ModuleType:
    """Import *module* (e.g. ``kubernetes``), or raise :class:`MissingExtraError` naming *extra* and *purpose* (what
    the user asked for, e.g. ``"--backend mpijob"``).

    Only the module itself missing (or a parent package of it) is this error; an ImportError from *inside* an
    installed package (a broken install, a wrong version) propagates unchanged, since installing the extra again
    would not be the fix."""
    try:
        importlib.import_module(module.partition(".")[0])  # the distribution itself: a cached submodule would hide it
        return importlib.import_module(module)
    except ImportError as exc:
        missing = getattr(exc, "name", None)
        if missing is None or not (module == missing or module.startswith(missing + ".")):
            raise
        raise missing_extra(extra, module, purpose) from exc


__all__ = ["EXTRAS", "MissingExtraError", "install_hint", "missing_extra", "require_extra"]
