"""MLflow integration: run tags, the snapshot dataset source, snapshot_and_log, get_run_snapshots, restore."""

from __future__ import annotations

import json

import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

import mlflow_anf
from mlflow_anf.dataset_source import SnapshotDatasetSource
from mlflow_anf.snapshots import Snapshot, SnapshotError, SnapshotNotFound, SnapshotVerificationError
from mlflow_anf.snapshots.local import LocalSnapshotProvider
from mlflow_anf.tracking import (
    LABEL_EXPERIMENT_ID,
    LABEL_ROLE,
    LABEL_RUN_ID,
    SnapshotRef,
    dataset_digest,
    get_run_snapshots,
    log_snapshot,
    restore,
    snapshot_and_log,
)


@pytest.fixture()
def run_id(tracking: MlflowClient) -> Iterator[str]:
    run = tracking.create_run(experiment_id="0")
    yield run.info.run_id
    tracking.set_terminated(run.info.run_id)


@pytest.fixture()
def volume(tmp_path: Path) -> Path:
    vol = tmp_path / "tusimple"
    (vol / "clips").mkdir(parents=True)
    (vol / "clips" / "20.jpg").write_bytes(os.urandom(5_000))
    (vol / "label_data_0313.json").write_text('{"lanes": []}\n')
    return vol


@pytest.fixture()
def provider() -> LocalSnapshotProvider:
    return LocalSnapshotProvider()


def test_data_snapshot_sets_tags_and_a_dataset_input(
    tracking: MlflowClient, run_id: str, provider: LocalSnapshotProvider, volume: Path
) -> None:
    snap = provider.create(str(volume), "train-v1")
    ref = log_snapshot(snap, "data", run_id=run_id)
    assert ref == SnapshotRef.from_snapshot(snap, "data")

    run = tracking.get_run(run_id)
    tags = run.data.tags
    # one tag for the snapshot, its record as JSON (the run page is not crowded with one tag per field)
    assert [k for k in tags if k.startswith("mlflow_anf.snapshot")] == ["mlflow_anf.snapshot.data"]
    assert json.loads(tags["mlflow_anf.snapshot.data"]) == {
        "snapshot_id": "train-v1", "name": "train-v1", "provider": "local", "volume": str(volume.resolve()),
        "digest": snap.digest, "ref": snap.ref, "created": snap.created.isoformat()}
    # the params MLflow's compare view lists: the snapshot and the digest the Datasets column shows
    assert run.data.params == {"mlflow_anf.data.snapshot": snap.ref, "mlflow_anf.data.digest": dataset_digest(snap)}

    [dataset_input] = run.inputs.dataset_inputs
    dataset = dataset_input.dataset
    assert dataset.name == volume.name  # the volume, not the snapshot: the snapshot's name carries its time
    assert dataset.source_type == "mlflow_anf_snapshot"
    assert dataset.digest == dataset_digest(snap)
    assert len(dataset.digest) <= 36 and snap.digest.split(":")[1].startswith(dataset.digest)
    assert {t.key: t.value for t in dataset_input.tags} == {"mlflow.data.context": "training"}

    # MLflow finds our source class through the entry point and gives back the read-only snapshot directory.
    source = mlflow.data.get_source(dataset)
    assert isinstance(source, SnapshotDatasetSource)
    assert source == SnapshotDatasetSource.from_snapshot(snap)
    path = Path(source.load())
    assert path == volume / ".snapshot" / "train-v1"
    assert (path / "label_data_0313.json").read_text() == '{"lanes": []}\n'
    assert (path / "label_data_0313.json").stat().st_mode & 0o222 == 0


def test_model_snapshot_only_sets_tags(
    tracking: MlflowClient, run_id: str, provider: LocalSnapshotProvider, volume: Path
) -> None:
    snap = provider.create(str(volume), "ckpt")
    log_snapshot(snap, "model", run_id=run_id)
    run = tracking.get_run(run_id)
    assert json.loads(run.data.tags["mlflow_anf.snapshot.model"])["name"] == "ckpt"
    assert run.inputs.dataset_inputs == [] and run.data.params == {}  # only the data snapshot is a dataset


def test_log_snapshot_uses_the_active_run(tracking: MlflowClient, provider: LocalSnapshotProvider, volume: Path):
    snap = provider.create(str(volume), "active")
    with pytest.raises(ValueError, match="run_id: no active MLflow run"):
        log_snapshot(snap, "data")
    with mlflow.start_run() as run:
        log_snapshot(snap, "data")
    assert get_run_snapshots(run.info.run_id)["data"].name == "active"
    with pytest.raises(ValueError, match="role"):
        log_snapshot(snap, "Data.Set", run_id=run.info.run_id)


def test_source_round_trips_and_explains_remote_load() -> None:
    remote = SnapshotDatasetSource(
        provider="anf", volume="acct/pool/vol", name="train-v1", snapshot_id="/subscriptions/x/snap", digest=None
    )
    assert SnapshotDatasetSource.from_dict(remote.to_dict()) == remote
    assert SnapshotDatasetSource.from_json(remote.to_json()) == remote
    assert remote._get_source_type() == "mlflow_anf_snapshot"
    with pytest.raises(SnapshotError, match=r"mlflow-anf snapshot restore --provider anf --volume acct/pool/vol"):
        remote.load()
    with pytest.raises(ValueError, match="unknown field"):
        SnapshotDatasetSource.from_dict({**remote.to_dict(), "token": "x"})
    with pytest.raises(ValueError, match="missing field.*volume"):
        SnapshotDatasetSource.from_dict({"provider": "anf", "name": "x"})
    assert not SnapshotDatasetSource._can_resolve("s3://bucket/data")
    gone = SnapshotDatasetSource(provider="local", volume="/v", name="n", path="/definitely/not/here")
    with pytest.raises(SnapshotNotFound, match="does not exist"):
        gone.load()


def test_snapshot_and_log_labels_the_snapshot_with_the_run(
    tracking: MlflowClient, run_id: str, provider: LocalSnapshotProvider, volume: Path
) -> None:
    snap = snapshot_and_log(provider, str(volume), "data", run_id=run_id, labels={"team": "lanes"})
    run = tracking.get_run(run_id)
    assert snap.labels == {
        "team": "lanes",
        LABEL_RUN_ID: run_id,
        LABEL_EXPERIMENT_ID: run.info.experiment_id,
        LABEL_ROLE: "data",
    }
    assert provider.list(str(volume), labels={LABEL_RUN_ID: run_id}) == [snap]
    assert json.loads(run.data.tags["mlflow_anf.snapshot.data"])["digest"] == snap.digest
    assert len(run.inputs.dataset_inputs) == 1


def test_snapshot_and_log_checks_the_run_before_creating(
    tracking: MlflowClient, provider: LocalSnapshotProvider, volume: Path
) -> None:
    with pytest.raises(MlflowException):
        snapshot_and_log(provider, str(volume), "data", run_id="0" * 32)
    assert provider.list(str(volume)) == []


def test_get_run_snapshots_parses_tags_back(
    tracking: MlflowClient, run_id: str, provider: LocalSnapshotProvider, volume: Path
) -> None:
    data = provider.create(str(volume), "data-1")
    model = provider.create(str(volume), "model-1")
    log_snapshot(data, "data", run_id=run_id)
    log_snapshot(model, "model", run_id=run_id)
    tracking.set_tag(run_id, "mlflow_anf.backend.job", "train-42")  # other mlflow_anf tags are not snapshots
    refs = get_run_snapshots(run_id)
    assert sorted(refs) == ["data", "model"]
    assert refs["data"] == SnapshotRef.from_snapshot(data, "data")
    assert refs["model"].ref == model.ref and refs["model"].created == model.created

    record = json.loads(tracking.get_run(run_id).data.tags["mlflow_anf.snapshot.model"])
    del record["volume"]
    tracking.set_tag(run_id, "mlflow_anf.snapshot.model", json.dumps(record))
    with pytest.raises(SnapshotError, match=r"missing field\(s\) volume \(tag mlflow_anf.snapshot.model,"):
        get_run_snapshots(run_id)
    tracking.set_tag(run_id, "mlflow_anf.snapshot.model", "{not json")
    with pytest.raises(SnapshotError, match="mlflow_anf.snapshot.model: not a JSON snapshot record"):
        get_run_snapshots(run_id)


def test_restore_from_a_run(
    tracking: MlflowClient, run_id: str, provider: LocalSnapshotProvider, volume: Path, tmp_path: Path
) -> None:
    snap = snapshot_and_log(provider, str(volume), "data", run_id=run_id, name="for-restore")
    out = restore(run_id, str(tmp_path / "again"))
    assert (Path(out) / "label_data_0313.json").read_text() == '{"lanes": []}\n'
    with pytest.raises(SnapshotNotFound, match="no 'model' snapshot"):
        restore(run_id, str(tmp_path / "model"), role="model")

    # Same name, new content: the run's recorded digest no longer matches, so nothing is restored.
    provider.delete(str(volume), "for-restore")
    (volume / "label_data_0313.json").unlink()
    (volume / "label_data_0313.json").write_text("{}\n")
    provider.create(str(volume), "for-restore")
    with pytest.raises(SnapshotVerificationError, match="the run recorded"):
        restore(run_id, str(tmp_path / "stale"))
    assert not (tmp_path / "stale").exists()
    assert restore(snap.model_copy(update={"digest": None}), str(tmp_path / "by-record"))


def test_public_api_is_lazy() -> None:
    code = textwrap.dedent(
        """
        import sys
        import mlflow_anf
        assert "mlflow" not in sys.modules and "mlflow_anf.tracking" not in sys.modules
        assert callable(mlflow_anf.get_run_snapshots)
        assert "mlflow_anf.tracking" in sys.modules
        for name in ("log_snapshot", "snapshot_and_log", "restore", "get_provider"):
            assert name in dir(mlflow_anf) and callable(getattr(mlflow_anf, name))
        try:
            mlflow_anf.nope
        except AttributeError as exc:
            assert "nope" in str(exc)
        else:
            raise SystemExit("no AttributeError")
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert mlflow_anf.restore is restore


def _doctor_header_digest(snapdir: Path) -> None:
    """Give the manifest header a digest its entries do not have (restore checks it only with verify)."""
    manifest = snapdir / ".mlflow-anf-snapshot.json"
    snapdir.chmod(0o755)
    manifest.chmod(0o644)
    header, rest = manifest.read_text().split("\n", 1)
    manifest.write_text(re.sub(r'"digest":"sha256:[0-9a-f]+"', f'"digest":"sha256:{"0" * 64}"', header) + "\n" + rest)


def test_restore_passes_the_protocol_keywords(
    provider: LocalSnapshotProvider, volume: Path, tmp_path: Path
) -> None:
    snap = provider.create(str(volume), "kw")
    _doctor_header_digest(Path(snap.details["path"]))
    record = snap.model_copy(update={"digest": None})
    with pytest.raises(SnapshotVerificationError, match="manifest entries do not match its digest"):
        restore(record, str(tmp_path / "checked"))
    assert not (tmp_path / "checked").exists()
    out = restore(record, str(tmp_path / "unchecked"), verify=False, wait=True, timeout_s=1.0)
    assert (Path(out) / "label_data_0313.json").read_text() == '{"lanes": []}\n'

    class WaitsByDefault(LocalSnapshotProvider):  # a provider whose wait defaults to True, like anf's
        seen: list[tuple[bool, float | None, bool]] = []

        def restore(self, snapshot: Snapshot, target: str, *, wait: bool = True, timeout_s: float | None = None,
                    verify: bool = True) -> str:  # fmt: skip
            self.seen.append((wait, timeout_s, verify))
            return super().restore(snapshot, target, wait=wait, timeout_s=timeout_s, verify=verify)

    waits = WaitsByDefault()
    restore(record, str(tmp_path / "default-wait"), provider=waits, verify=False)
    restore(record, str(tmp_path / "no-wait"), provider=waits, wait=False, timeout_s=2.5, verify=False)
    assert waits.seen == [(True, None, False), (False, 2.5, False)]  # wait=None kept the provider's default
