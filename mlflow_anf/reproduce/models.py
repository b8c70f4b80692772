"""The options and the result of a reproduction (no I/O here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mlflow_anf.reproduce.diff import TIMING_METRICS, RunDiff
from mlflow_anf.reproduce.errors import CodeMismatch, ReproduceError, ReproductionFailed, SourceGone  # noqa: F401


class ReproduceOptions(BaseModel):
    """What :func:`reproduce` may change; every field is recorded on the new run when it matters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: str | None = Field(None, description="backend to run through (default: the run's own)")
    backend_config: dict[str, Any] = Field(default_factory=dict, description="merged over the recorded config")
    overrides: dict[str, str] = Field(default_factory=dict, description="param overrides (recorded)")
    project_dir: Path | None = Field(None, description="the MLproject directory (default: the recorded one)")
    workdir: Path | None = Field(None, description="local: where data/ and outputs/ of the reproduction go")
    target: str | None = Field(None, description="name of the restored volume (default: derived)")
    restored: str | None = Field(None, description="use this already restored volume instead of restoring")
    restore_only: bool = Field(False, description="restore the data, print the volume, run nothing")
    provider_options: dict[str, Any] = Field(default_factory=dict, description="snapshot provider options")
    allow_code_change: bool = Field(False, description="run even if the code differs from the recorded code")
    image_check: bool = Field(True, description="mpijob: check the registry still has the image")
    wait: bool | None = Field(None, description="mpijob: wait for the job (local runs always wait)")
    experiment_id: str | None = Field(None, description="default: the source run's experiment")
    ignore_metrics: tuple[str, ...] = Field(TIMING_METRICS, description="metric name patterns not compared")


class ReproduceResult(BaseModel):
    """What a reproduction did: the report ``mlflow-anf reproduce`` prints."""

    source_run_id: str
    run_id: str | None = None
    entry_point: str
    backend: str
    project_dir: str
    params: dict[str, str] = Field(default_factory=dict)
    overrides: dict[str, str] = Field(default_factory=dict)
    rewritten: dict[str, dict[str, str]] = Field(default_factory=dict)
    restored: dict[str, str] | None = None
    code: str = ""
    image: str | None = None
    status: str = ""
    comparison: RunDiff | None = None
    notes: list[str] = Field(default_factory=list)

    @property
    def identical(self) -> bool | None:
        """Same final (non-timing) metrics and data digest as the source; ``None`` when not compared."""
        if self.comparison is None:
            return None
        summary = self.comparison.summary
        return summary.metrics and summary.data is not False
