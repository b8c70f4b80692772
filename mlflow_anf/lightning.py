"""The training edge as a Lightning callback: a run's lineage (provenance, data snapshot, model snapshot) recorded
around ``Trainer.fit``.

:class:`SnapshotLineage` is added to a ``pytorch_lightning.Trainer``'s callbacks on every rank; only the process
with global rank 0 (``trainer.is_global_zero``) does anything:

* before fit (``on_fit_start``): the run's provenance (:func:`mlflow_anf.provenance.log_provenance`), then the data
  snapshot (:func:`mlflow_anf.tracking.snapshot_and_log`, role ``data``);
* after a *successful* fit (``on_fit_end``): the project's model export (a hook it passes), then the model snapshot
  (role ``model``) with the model's path inside the model volume, so the run's
  ``mlflow_anf.snapshot.model`` record's ``artifact_uri`` loads the model from the snapshot.

A role the run already records (the ``mpijob`` backend records the data snapshot before the job starts), or that the
backend says it takes itself (``mlflow_anf.backend.snapshot_roles``: the launcher snapshots the model after the
training process exited), is not taken here. The configuration is one pydantic model, :class:`SnapshotLineageConfig`; which volume belongs to which
directory is the caller's decision, helped by :func:`directory_volume` (provider traits, no provider names).

This is the one module of ``mlflow_anf`` that imports Lightning, at the top: only Lightning users import it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mlflow_anf.extras import require_extra
from mlflow_anf.snapshots import SnapshotInputError, get_provider, traits_for
from mlflow_anf.snapshots.uri import check_path
from mlflow_anf.vocabulary import ROLE_DATA, ROLE_MODEL, TAG_BACKEND_SNAPSHOT_ROLES, parse_snapshot_tags

log = logging.getLogger(__name__)
pl = require_extra("lightning", "pytorch_lightning", "SnapshotLineage (the Lightning callback of mlflow-anf)")

#: ``export_model(trainer, pl_module)``: writes the trained model where the model snapshot will find it
ExportHook = Callable[[pl.Trainer, pl.LightningModule], None]


class SnapshotLineageConfig(BaseModel):
    """What :class:`SnapshotLineage` records, and where from. Field names are what an error names."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: str = Field("local", description="snapshot provider name (mlflow_anf.snapshots registry)")
    provider_options: dict[str, Any] = Field(default_factory=dict, description="the provider's own options")
    data_volume: str | None = Field(None, description="volume snapshotted before fit (role data)")
    model_volume: str | None = Field(None, description="volume snapshotted after a successful fit (role model)")
    model_path: str | None = Field(None, description="path of the exported model inside the model volume; recorded "
                                   "as the model snapshot's artifact URI")
    snapshot_data: bool = True
    snapshot_model: bool = True
    provenance: bool = Field(True, description="log provenance (code, image, seeds, packages) before fit")
    entry_point: str | None = Field(None, description="entry point name recorded in the provenance")
    code_path: str | None = Field(None, description="a file of the training code (provenance: which tree ran)")

    @field_validator("model_path")
    @classmethod
    def _relative(cls, value: str | None) -> str | None:
        if value is not None:
            check_path(value, "model_path")
        return value

    @model_validator(mode="after")
    def _volumes_given(self) -> SnapshotLineageConfig:
        traits = traits_for(self.provider)
        for role, wanted, field in ((ROLE_DATA, self.snapshot_data, "data_volume"),
                                    (ROLE_MODEL, self.snapshot_model, "model_volume")):
            volume = getattr(self, field)
            if wanted and not volume:
                raise SnapshotInputError(f"{field}: the {role} snapshot needs a volume of the {self.provider} provider")
            if wanted:
                traits.check_volume(volume, field)
        return self

    @property
    def enabled(self) -> bool:
        return self.snapshot_data or self.snapshot_model

    def build_provider(self) -> Any:
        """The provider (``None`` when no role is enabled); a refused option raises ``ProviderConfigError``."""
        return get_provider(self.provider, **self.provider_options) if self.enabled else None


def directory_volume(provider: str, directory: str | os.PathLike[str]) -> str | None:
    """*directory* as a volume of *provider* where its volumes are directories on this machine (local), else
    ``None``: a remote provider's volume (a PVC, an ANF volume) must be named explicitly."""
    path = str(Path(directory).resolve())
    return path if traits_for(provider).local_root(path) is not None else None


class SnapshotLineage(pl.Callback):
    """Provenance and the data snapshot before ``fit``, model export and the model snapshot after a successful one.

    *run_id*: the MLflow run to record on (default: the run of the trainer's ``MLFlowLogger``, else the active run,
    else ``MLFLOW_RUN_ID``). *provider*: a built provider (default: built from the config now, so a bad option fails
    before any training). *export_model*: called on rank 0 after a successful fit, before the model snapshot.
    *client*: an ``MlflowClient`` (default: the ``MLFlowLogger``'s when the run comes from it, else one for the
    current tracking URI). Add it to the callbacks of every rank: ranks other than 0 neither read nor write anything.
    """

    def __init__(self, config: SnapshotLineageConfig, *, run_id: str | None = None, provider: Any = None,
                 export_model: ExportHook | None = None, client: Any = None) -> None:
        self.config = config
        self.run_id = run_id
        self.provider = provider if provider is not None else config.build_provider()
        self.export_model = export_model
        self._client = client

    # ------------------------------------------------------------------------------------------- hooks
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Called once the strategy is set up, before the first training step (pytorch_lightning 2.6,
        # trainer/trainer.py:1056-1058, in Trainer._run). Every rank calls it; only global rank 0 records.
        if not trainer.is_global_zero:
            return
        run_id = self._resolve_run_id(trainer)
        cfg = self.config
        if cfg.provenance:
            from mlflow_anf.provenance import log_provenance

            log_provenance(run_id, entry_point=cfg.entry_point, code_path=cfg.code_path,
                           provider_options=cfg.provider_options, client=self.client)
        if cfg.snapshot_data:
            self._snapshot(ROLE_DATA, cfg.data_volume, run_id)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Called only when the fit stage returned: Trainer._run calls _run_stage() and then, on the next lines,
        # the on_fit_end hooks (pytorch_lightning 2.6, trainer/trainer.py:1075-1089). An exception in fit - the
        # project's TrainingStopped (a SystemExit raised by its stop-signal handler), Lightning's SIGTERMException
        # (also a SystemExit, raised by the loops after SIGTERM: loops/fit_loop.py:502-503,
        # loops/training_epoch_loop.py:272), KeyboardInterrupt or an error - leaves _run_stage and reaches
        # _call_and_handle_interrupt (trainer/call.py:56-72), which calls on_exception (call.py:78), never
        # on_fit_end. So reaching here means the fit succeeded (or ended early on purpose, trainer.should_stop).
        if not trainer.is_global_zero:
            return
        run_id = self._resolve_run_id(trainer)
        if self.export_model is not None:
            self.export_model(trainer, pl_module)
        if self.config.snapshot_model:
            self._snapshot(ROLE_MODEL, self.config.model_volume, run_id, artifact_path=self.config.model_path)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if trainer.is_global_zero and self.config.snapshot_model:
            log.info("fit ended by %s: no model export, no model snapshot", type(exception).__name__)

    # ------------------------------------------------------------------------------------------- helpers
    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient()
        return self._client

    def _resolve_run_id(self, trainer: pl.Trainer) -> str:
        if self.run_id:
            return self.run_id
        from pytorch_lightning.loggers import MLFlowLogger

        for logger in trainer.loggers:
            if isinstance(logger, MLFlowLogger) and logger.run_id:
                self.run_id = logger.run_id
                if self._client is None:
                    self._client = logger.experiment  # an MlflowClient for the logger's tracking URI
                return logger.run_id
        import mlflow

        active = mlflow.active_run()
        run_id = active.info.run_id if active is not None else os.environ.get("MLFLOW_RUN_ID")
        if not run_id:
            raise ValueError("run_id: no MLflow run to record the lineage on (no MLFlowLogger, no active run, "
                             "no MLFLOW_RUN_ID); pass SnapshotLineage(run_id=...)")
        self.run_id = run_id
        return run_id

    def _snapshot(self, role: str, volume: str | None, run_id: str, artifact_path: str | None = None) -> Any:
        tags = self.client.get_run(run_id).data.tags
        recorded = parse_snapshot_tags(tags, strict=False, source=f"run {run_id}").get(role)
        if recorded is not None:
            log.info("run %s already records a %s snapshot (%s): not taking another", run_id, role, recorded.ref)
            return None
        if role in tags.get(TAG_BACKEND_SNAPSHOT_ROLES, "").split(","):
            log.info("run %s: the backend takes the %s snapshot (%s): not taking it here", run_id, role,
                     TAG_BACKEND_SNAPSHOT_ROLES)
            return None
        assert volume is not None  # the config refuses an enabled role without a volume
        from mlflow_anf.tracking import snapshot_and_log

        snap = snapshot_and_log(self.provider, volume, role, run_id=run_id, client=self.client,
                                artifact_path=artifact_path)
        log.info("%s snapshot %s", role, snap.ref)
        return snap

