"""Steps 3 and 4 of a reproduction: restore the plan's data snapshot to a new volume (:func:`restore`), then point
the run's params - and the backend config's ``data_pvc`` - at it (:func:`point_at`). Each returns a new frozen
value; the plan is only read. Providers are asked through their traits, never by name."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mlflow_anf.progress import SILENT, Progress
from mlflow_anf.reproduce.checks import redacted_keys
from mlflow_anf.reproduce.errors import ReproduceError, SourceGone
from mlflow_anf.reproduce.planning import ReproductionPlan
from mlflow_anf.snapshots import traits_for
from mlflow_anf.vocabulary import ROLE_MODEL

log = logging.getLogger(__name__)

#: the backend config key naming the data volume the job mounts
DATA_VOLUME_KEY = "data_pvc"


class RestoredData(BaseModel):
    """The volume the reproduction runs on: restored now from the run's data snapshot, or named by ``--restored``."""

    model_config = ConfigDict(frozen=True)

    source: str = Field("", description="the snapshot's ref ('' when the run recorded none)")
    volume: str
    provider: str = ""
    restored_now: bool = Field(description="False: an already restored volume (--restored)")

    def report(self) -> dict[str, str]:
        """The ``restored`` part of the reproduction's report."""
        return {"source": self.source, "volume": self.volume, "provider": self.provider}


class PointedRun(BaseModel):
    """The params and backend config of the reproduction, pointed at the restored volume, overrides applied."""

    model_config = ConfigDict(frozen=True)

    params: dict[str, str]
    overrides: dict[str, str] = Field(default_factory=dict)
    rewritten: dict[str, dict[str, str]] = Field(default_factory=dict, description="key -> {from, to}")
    backend_config: dict[str, Any] | None = None


def provider_for(plan: ReproductionPlan) -> Any:
    """The provider that holds the run's data snapshot: configured from ``--option``, else the one the backend
    would use for it (:func:`mlflow_anf.backend.plugin.snapshot_provider`), else from the recorded options."""
    from mlflow_anf.snapshots import get_provider

    ref, opts = plan.data, plan.options
    assert ref is not None
    if opts.provider_options:
        return get_provider(ref.provider, **opts.provider_options)
    if plan.backend_config is not None:
        from mlflow_anf.backend.plugin import snapshot_provider

        provider = snapshot_provider(plan.backend_config, ref.provider)
        if provider is not None:
            return provider
    prov = plan.source.provenance
    recorded = prov.provider_options if prov else {}
    redacted = redacted_keys(recorded)
    if redacted:
        raise ReproduceError(f"provider {ref.provider!r}: option(s) {', '.join(redacted)} were not recorded "
                             "(secret-looking); pass the options with --option/--provider-config")
    return get_provider(ref.provider, **recorded)


def restore(plan: ReproductionPlan, *, provider: Any = None,
            say: Callable[[str], None] = lambda msg: log.info("%s", msg), progress: Progress = SILENT) -> RestoredData:
    """Step 3: the plan's data snapshot restored to ``plan.target`` (or the ``--restored`` volume, untouched).

    *provider*: the snapshot's provider (default: :func:`provider_for`). When the backend snapshots the data before it
    submits (``plan.restore_wait``) this waits until the new volume is usable. A snapshot that is gone raises
    :class:`SourceGone`.
    """
    from mlflow_anf.snapshots.base import SnapshotError, SnapshotNotFound
    from mlflow_anf.tracking import restore as restore_snapshot

    ref = plan.data
    if plan.options.restored:
        return RestoredData(source=ref.ref if ref else "", volume=plan.options.restored,
                            provider=ref.provider if ref else "", restored_now=False)
    assert ref is not None and plan.target is not None  # plan() refuses a run without a data snapshot
    provider = provider if provider is not None else provider_for(plan)
    options: dict[str, Any] = {"wait": True, "timeout_s": plan.restore_timeout_s} if plan.restore_wait else {}
    say(f"restoring {ref.ref} to {plan.target} ...")
    try:
        with progress.step(f"restore {ref.ref} to {plan.target}"):
            volume = restore_snapshot(ref, plan.target, provider=provider, **options)
    except SnapshotNotFound as exc:
        raise SourceGone(f"data snapshot {ref.ref} of the run is gone: {exc}") from None
    except SnapshotError as exc:
        raise ReproduceError(f"data snapshot {ref.ref}: restore to {plan.target} failed: {exc}") from None
    say(f"restored data: {volume}")
    return RestoredData(source=ref.ref, volume=volume, provider=ref.provider, restored_now=True)


def rewrite_params(params: Mapping[str, str], replacements: Sequence[tuple[Callable[[str], bool], str]]
                   ) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """Replace each param value matched by a predicate with its new value; returns (params, {key: {from, to}})."""
    out = dict(params)
    changed: dict[str, dict[str, str]] = {}
    for key, value in params.items():
        for matches, new in replacements:
            if matches(value):
                out[key] = new
                changed[key] = {"from": value, "to": new}
                break
    return out, changed


def _replacements(plan: ReproductionPlan, volume: str) -> list[tuple[Callable[[str], bool], str]]:
    """(does a param value name it, what it becomes): the data volume -> the restored one; a model output directory
    on this machine -> a fresh ``outputs/`` in the workdir (the run's own outputs are never overwritten)."""
    ref, base = plan.data, plan.param_base
    if ref is None:
        return []
    traits = traits_for(ref.provider)
    out: list[tuple[Callable[[str], bool], str]] = []
    for value in {v for v in plan.params.values() if traits.refers_to(v, ref.volume, base=base)}:
        out.append((lambda v, old=value: v == old, traits.param_value(value, ref.volume, volume)))
    model = plan.source.snapshots.get(ROLE_MODEL)
    if model is not None:
        model_traits = traits_for(model.provider)
        if model_traits.local_root(model.volume) is not None:
            outputs = str(plan.workdir / "outputs")
            out.append((lambda v: model_traits.refers_to(v, model.volume, base=base), outputs))
    return out


def _point_backend_config(plan: ReproductionPlan, volume: str) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The backend config with its data volume pointed at the restored one, and the rewrite (when there was one)."""
    config, ref = plan.backend_config, plan.data
    if config is None or ref is None:
        return config, {}
    value = config.get(DATA_VOLUME_KEY)
    traits = traits_for(ref.provider)
    if not isinstance(value, str) or not traits.refers_to(value, ref.volume, base=plan.param_base):
        return dict(config), {}
    new = traits.param_value(value, ref.volume, volume)
    return {**config, DATA_VOLUME_KEY: new}, {f"backend_config.{DATA_VOLUME_KEY}": {"from": value, "to": new}}


def point_at(plan: ReproductionPlan, restored: RestoredData) -> PointedRun:
    """Step 4: the plan's params with every value naming the recorded data volume rewritten to the restored one (and
    the backend config's ``data_pvc``), then the ``-P`` overrides; every rewrite is returned to be recorded."""
    params, rewritten = rewrite_params(plan.params, _replacements(plan, restored.volume))
    backend_config, config_rewrite = _point_backend_config(plan, restored.volume)
    overrides = dict(plan.options.overrides)
    return PointedRun(params={**params, **overrides}, overrides=overrides, rewritten={**rewritten, **config_rewrite},
                      backend_config=backend_config)
