"""Snapshot store: a small provider protocol and its providers (local, csi, anf).

Providers are found through a lazy registry: ``get_provider("anf", subscription_id=...)`` imports
``mlflow_anf.snapshots.anf`` only then, so ``import mlflow_anf.snapshots`` never pulls in kubernetes or azure.

A provider class follows one convention so the registry, the CLI and other callers can build any of them:

* ``name: ClassVar[str]`` — its registry name;
* ``Config`` — a pydantic model of its options (``extra="forbid"``; secrets as ``SecretStr``);
* ``__init__(self, config: Config | None = None)``.

Adding a provider is one line in :data:`_PROVIDERS` (or :func:`register_provider` from a plugin).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from mlflow_anf.snapshots.base import (
    InvalidSnapshotName,
    ProviderTraits,
    Snapshot,
    SnapshotInputError,
    SnapshotError,
    SnapshotExists,
    SnapshotLimitExceeded,
    SnapshotNotFound,
    SnapshotProvider,
    SnapshotRole,
    SnapshotTimeout,
    SnapshotVerificationError,
    VerifyResult,
    validate_snapshot_name,
)

# registry name -> "module:Class"
_PROVIDERS: dict[str, str] = {
    "local": "mlflow_anf.snapshots.local:LocalSnapshotProvider",
    "csi": "mlflow_anf.snapshots.csi:CsiSnapshotProvider",
    "anf": "mlflow_anf.snapshots.anf:AnfSnapshotProvider",
}


class ProviderConfigError(SnapshotInputError):
    """Unknown provider, unknown option or an option value its ``Config`` model rejects."""


def available_providers() -> list[str]:
    """Registered provider names (nothing is imported)."""
    return sorted(_PROVIDERS)


def register_provider(name: str, target: str) -> None:
    """Register ``"module:Class"`` under *name* (for out-of-tree providers)."""
    if ":" not in target:
        raise ProviderConfigError(f"register_provider: target {target!r} must look like 'package.module:Class'")
    _PROVIDERS[name] = target


def provider_class(name: str) -> type:
    """Import and return the provider class registered as *name*."""
    target = _PROVIDERS.get(name)
    if target is None:
        raise ProviderConfigError(
            f"provider: unknown provider {name!r} (available: {', '.join(available_providers())})"
        )
    module_name, attr = target.split(":", 1)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SnapshotError(f"provider {name!r} cannot be loaded from {module_name}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise SnapshotError(f"provider {name!r}: {module_name} has no {attr}") from exc


def build_provider_config(cls: type, options: Mapping[str, Any], *, provider: str | None = None) -> BaseModel:
    """Validate *options* against ``cls.Config``; errors name the provider and option, never the value given."""
    label = provider or getattr(cls, "name", cls.__name__)
    config_model: type[BaseModel] = cls.Config
    known: set[str] = set()
    for field_name, field in config_model.model_fields.items():
        known.add(field_name)
        if isinstance(field.alias, str):
            known.add(field.alias)
    unknown = sorted(set(options) - known)
    if unknown:
        raise ProviderConfigError(
            f"provider {label!r}: unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
            f"(known options: {', '.join(sorted(config_model.model_fields)) or 'none'})"
        )
    try:
        return config_model.model_validate(dict(options))
    except ValidationError as exc:
        # include_input=False: a rejected value may be a secret.
        problems = "; ".join(
            f"option {'.'.join(str(p) for p in err['loc']) or '(all)'!r}: {err['msg']}"
            for err in exc.errors(include_url=False, include_input=False)
        )
        raise ProviderConfigError(f"provider {label!r}: {problems}") from None


def traits_for(name: str) -> type[ProviderTraits]:
    """What callers may ask of provider *name* (:class:`ProviderTraits`) without building one.

    An unregistered name (a URI naming a provider this installation lacks) gets the defaults: a remote provider.
    """
    if name not in _PROVIDERS:
        return ProviderTraits
    cls = provider_class(name)
    return cls if isinstance(cls, type) and issubclass(cls, ProviderTraits) else ProviderTraits


def get_provider(name: str, **options: Any) -> SnapshotProvider:
    """Build the provider registered as *name* from keyword options validated by its ``Config``."""
    cls = provider_class(name)
    return cls(build_provider_config(cls, options, provider=name))


__all__ = [
    "InvalidSnapshotName",
    "ProviderConfigError",
    "ProviderTraits",
    "Snapshot",
    "SnapshotError",
    "SnapshotExists",
    "SnapshotInputError",
    "SnapshotLimitExceeded",
    "SnapshotNotFound",
    "SnapshotProvider",
    "SnapshotRole",
    "SnapshotTimeout",
    "SnapshotVerificationError",
    "VerifyResult",
    "available_providers",
    "build_provider_config",
    "get_provider",
    "provider_class",
    "register_provider",
    "traits_for",
    "validate_snapshot_name",
]
