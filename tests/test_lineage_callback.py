"""mlflow_anf.lightning.SnapshotLineage on a tiny Lightning model (no lanedet): provenance and the data snapshot before
fit, the export hook and the model snapshot after a successful fit only, a role the run already records is not taken
again, and a process that is not global rank 0 touches nothing. Real local provider, real sqlite MLflow store."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

pl = pytest.importorskip("pytorch_lightning")
torch = pytest.importorskip("torch")

from pydantic import ValidationError  # noqa: E402
from pytorch_lightning.strategies import SingleDeviceStrategy  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from mlflow_anf.lightning import SnapshotLineage, SnapshotLineageConfig, directory_volume  # noqa: E402
from mlflow_anf.vocabulary import TAG_PROVENANCE, parse_snapshot_tags, snapshot_record_tag  # noqa: E402


class Tiny(pl.LightningModule):
    """One linear layer; ``fail`` raises from the second training step; records the run's snapshot roles as seen
    when training starts."""

    def __init__(self, client: Any = None, run_id: str | None = None, fail: BaseException | None = None) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.client, self.run_id, self.fail = client, run_id, fail
        self.roles_at_train_start: list[str] | None = None

    def on_train_start(self) -> None:
        if self.client is not None:
            tags = self.client.get_run(self.run_id).data.tags
            self.roles_at_train_start = sorted(parse_snapshot_tags(tags))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.fail is not None and batch_idx == 1:
            raise self.fail
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self) -> DataLoader:
        gen = torch.Generator().manual_seed(0)
        return DataLoader(TensorDataset(torch.randn(8, 2, generator=gen), torch.randn(8, 1, generator=gen)),
                          batch_size=4)


class Export:
    """The export hook: writes the model into the model volume, remembering what the run recorded at that moment."""

    def __init__(self, out: Path, client: Any, run_id: str) -> None:
        self.out, self.client, self.run_id = out, client, run_id
        self.calls: list[list[str]] = []

    def __call__(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.calls.append(sorted(parse_snapshot_tags(self.client.get_run(self.run_id).data.tags)))
        (self.out / "model").mkdir(parents=True, exist_ok=True)
        torch.save(module.state_dict(), self.out / "model" / "weights.pt")


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Any]:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.create_experiment("lineage", artifact_location=str(tmp_path / "artifacts"))
    run_id = client.create_run(exp).info.run_id
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    (data / "labels.json").write_text("{}\n")
    out.mkdir()
    return {"client": client, "run_id": run_id, "data": data, "out": out, "tmp": tmp_path}


def _config(w: dict[str, Any], **overrides: Any) -> SnapshotLineageConfig:
    values: dict[str, Any] = {
        "provider": "local", "data_volume": directory_volume("local", w["data"]),
        "model_volume": directory_volume("local", w["out"]), "model_path": "model", "provenance": False,
    }
    return SnapshotLineageConfig(**{**values, **overrides})


def _trainer(tmp: Path, callback: SnapshotLineage, **kwargs: Any) -> pl.Trainer:
    return pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp / "pl"),
                      callbacks=[callback], **kwargs)


def _snapshots(volume: Path) -> list[str]:
    return sorted(p.name for p in (volume / ".snapshot").iterdir()) if (volume / ".snapshot").exists() else []


def test_data_snapshot_before_fit_model_snapshot_after(world: dict[str, Any]) -> None:
    w = world
    export = Export(w["out"], w["client"], w["run_id"])
    lineage = SnapshotLineage(_config(w), run_id=w["run_id"], export_model=export, client=w["client"])
    module = Tiny(w["client"], w["run_id"])
    _trainer(w["tmp"], lineage).fit(module)

    assert module.roles_at_train_start == ["data"]  # the data snapshot is recorded before the first step
    assert export.calls == [["data"]]  # the export ran after fit, before the model snapshot
    refs = parse_snapshot_tags(w["client"].get_run(w["run_id"]).data.tags)
    assert sorted(refs) == ["data", "model"]
    assert _snapshots(w["data"]) == [refs["data"].name] and _snapshots(w["out"]) == [refs["model"].name]
    assert (w["out"] / ".snapshot" / refs["model"].name / "model" / "weights.pt").is_file()
    assert refs["model"].artifact_uri and refs["model"].artifact_uri.startswith("snapshot://local/")
    assert "/model" in refs["model"].artifact_uri and refs["data"].artifact_uri is None
    assert TAG_PROVENANCE not in w["client"].get_run(w["run_id"]).data.tags  # provenance=False


@pytest.mark.parametrize("stop", [RuntimeError("boom"), "sigterm", "stopped"], ids=["error", "sigterm", "stop-signal"])
def test_a_fit_that_does_not_succeed_takes_no_model_snapshot(world: dict[str, Any], stop: Any) -> None:
    """An error, Lightning's SIGTERMException and the project's TrainingStopped (both SystemExit) end fit without
    on_fit_end: the data snapshot is there, the export and the model snapshot are not."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    class TrainingStopped(SystemExit):  # what a stop-signal handler raises (lanedet's has this shape)
        pass

    exc = {"sigterm": SIGTERMException(), "stopped": TrainingStopped(143)}.get(stop, stop)
    w = world
    export = Export(w["out"], w["client"], w["run_id"])
    lineage = SnapshotLineage(_config(w), run_id=w["run_id"], export_model=export, client=w["client"])
    with pytest.raises(type(exc)):
        _trainer(w["tmp"], lineage).fit(Tiny(fail=exc))
    refs = parse_snapshot_tags(w["client"].get_run(w["run_id"]).data.tags)
    assert sorted(refs) == ["data"] and len(_snapshots(w["data"])) == 1
    assert export.calls == [] and _snapshots(w["out"]) == [] and not (w["out"] / "model").exists()


def test_a_role_the_run_already_records_is_not_taken_again(world: dict[str, Any],
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """As under the mpijob backend, which records the data snapshot before the job starts."""
    from mlflow_anf.snapshots import get_provider
    from mlflow_anf.tracking import snapshot_and_log

    w = world
    backend_volume = w["tmp"] / "pvc"
    backend_volume.mkdir()
    (backend_volume / "labels.json").write_text("{}\n")
    taken = snapshot_and_log(get_provider("local"), str(backend_volume), "data", run_id=w["run_id"], client=w["client"])
    before = dict(w["client"].get_run(w["run_id"]).data.tags)

    export = Export(w["out"], w["client"], w["run_id"])
    lineage = SnapshotLineage(_config(w), run_id=w["run_id"], export_model=export, client=w["client"])
    with caplog.at_level(logging.INFO, logger="mlflow_anf.lightning"):
        _trainer(w["tmp"], lineage).fit(Tiny())

    tags = w["client"].get_run(w["run_id"]).data.tags
    assert {k: v for k, v in tags.items() if k.startswith(snapshot_record_tag("data"))} == {
        k: v for k, v in before.items() if k.startswith(snapshot_record_tag("data"))}
    assert parse_snapshot_tags(tags)["data"].name == taken.name
    assert _snapshots(w["data"]) == []  # the training's own data volume was not snapshotted
    assert f"already records a data snapshot ({taken.ref})" in caplog.text
    assert export.calls == [["data"]] and len(_snapshots(w["out"])) == 1  # the model role was not recorded: taken

    # a second fit with the same callback: both roles are now recorded, neither is taken again (the export runs)
    with caplog.at_level(logging.INFO, logger="mlflow_anf.lightning"):
        _trainer(w["tmp"], lineage).fit(Tiny())
    assert len(_snapshots(w["out"])) == 1 and len(export.calls) == 2
    assert "already records a model snapshot" in caplog.text


def test_roles_the_backend_takes_itself_are_left_to_it(world: dict[str, Any],
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """The mpijob backend records before submitting which roles it snapshots (the model from the launcher, after the
    training process exited); the callback takes neither, but the export still runs."""
    from mlflow_anf.vocabulary import TAG_BACKEND_SNAPSHOT_ROLES

    w = world
    w["client"].set_tag(w["run_id"], TAG_BACKEND_SNAPSHOT_ROLES, "data,model")
    export = Export(w["out"], w["client"], w["run_id"])
    lineage = SnapshotLineage(_config(w), run_id=w["run_id"], export_model=export, client=w["client"])
    with caplog.at_level(logging.INFO, logger="mlflow_anf.lightning"):
        _trainer(w["tmp"], lineage).fit(Tiny())
    assert parse_snapshot_tags(w["client"].get_run(w["run_id"]).data.tags) == {}
    assert _snapshots(w["data"]) == [] and _snapshots(w["out"]) == []
    assert export.calls == [[]]  # the model was exported for the launcher's snapshot
    assert "the backend takes the model snapshot" in caplog.text

    # only the model: the data snapshot is the callback's again
    w["client"].set_tag(w["run_id"], TAG_BACKEND_SNAPSHOT_ROLES, "model")
    _trainer(w["tmp"], lineage).fit(Tiny())
    assert sorted(parse_snapshot_tags(w["client"].get_run(w["run_id"]).data.tags)) == ["data"]


class _NotRankZero(SingleDeviceStrategy):
    """A single-device strategy that reports being another rank than 0, as rank 1 of a DDP job would."""

    def __init__(self) -> None:
        super().__init__(device=torch.device("cpu"))
        self.global_rank = 1  # SingleDeviceStrategy keeps it as a plain attribute (0)

    @property
    def is_global_zero(self) -> bool:  # SingleDeviceStrategy answers True whatever the rank
        return self.global_rank == 0


class _NoMlflow:
    """A client whose every use fails the test: a process other than rank 0 must not talk to MLflow at all."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"rank != 0 used the MLflow client ({name})")


def test_a_process_other_than_rank_zero_does_nothing(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    w = world
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    calls: list[str] = []
    lineage = SnapshotLineage(_config(w, provenance=True), export_model=lambda t, m: calls.append("export"),
                              client=_NoMlflow())  # no run id and no active run either: resolving one would raise
    trainer = _trainer(w["tmp"], lineage, strategy=_NotRankZero())
    assert not trainer.is_global_zero
    trainer.fit(Tiny())
    assert calls == [] and _snapshots(w["data"]) == [] and _snapshots(w["out"]) == []
    assert parse_snapshot_tags(w["client"].get_run(w["run_id"]).data.tags) == {}


def test_provenance_is_logged_before_fit_and_the_run_comes_from_the_mlflow_logger(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytorch_lightning.loggers import MLFlowLogger

    w = world
    monkeypatch.delenv("MLFLOW_ANF_DIRTY_TREE", raising=False)
    logger = MLFlowLogger(tracking_uri=w["client"].tracking_uri, run_id=w["run_id"])
    lineage = SnapshotLineage(_config(w, provenance=True, snapshot_model=False, entry_point="tiny",
                                      code_path=__file__))
    pl.Trainer(max_epochs=1, accelerator="cpu", logger=logger, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, default_root_dir=str(w["tmp"] / "pl"), callbacks=[lineage]).fit(Tiny())
    tags = w["client"].get_run(w["run_id"]).data.tags
    assert TAG_PROVENANCE in tags and sorted(parse_snapshot_tags(tags)) == ["data"]
    assert _snapshots(w["out"]) == []  # snapshot_model=False


def test_config_refuses_what_cannot_work(tmp_path: Path) -> None:
    from mlflow_anf.snapshots import ProviderConfigError

    with pytest.raises(ValidationError, match="data_volume"):
        SnapshotLineageConfig(provider="local", model_volume=str(tmp_path))
    with pytest.raises(ValidationError, match="model_volume"):
        SnapshotLineageConfig(provider="local", data_volume=str(tmp_path))
    with pytest.raises(ValidationError, match="model_volume.*absolute"):
        SnapshotLineageConfig(provider="local", data_volume=str(tmp_path), model_volume="relative/dir")
    with pytest.raises(ValidationError, match="model_path"):
        SnapshotLineageConfig(snapshot_data=False, snapshot_model=False, model_path="../outside")
    with pytest.raises(ValidationError, match="colour"):
        SnapshotLineageConfig(snapshot_data=False, snapshot_model=False, colour="red")
    nothing = SnapshotLineageConfig(snapshot_data=False, snapshot_model=False)
    assert nothing.build_provider() is None
    cfg = SnapshotLineageConfig(data_volume=str(tmp_path), model_volume=str(tmp_path), provider_options={"x": "1"})
    with pytest.raises(ProviderConfigError, match="'x'"):
        SnapshotLineage(cfg)  # the provider is built (and its options checked) when the callback is made


def test_directory_volume_follows_the_provider_traits(tmp_path: Path) -> None:
    assert directory_volume("local", tmp_path / "a" / ".." / "b") == str((tmp_path / "b").resolve())
    assert directory_volume("csi", tmp_path) is None and directory_volume("anf", tmp_path) is None
