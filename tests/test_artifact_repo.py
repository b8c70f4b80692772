"""The ``snapshot://`` artifact repository: models read back from inside a snapshot, with real MLflow and torch."""

from __future__ import annotations

import filecmp
import importlib.metadata
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow import MlflowClient
from mlflow.store.artifact.artifact_repository_registry import (
    get_artifact_repository,
    get_registered_artifact_repositories,
)

from mlflow_anf.artifact_repo import (
    MOUNTS_ENV,
    InvalidSnapshotUri,
    SnapshotArtifactNotFound,
    SnapshotArtifactRepository,
    SnapshotLocation,
    SnapshotNotMounted,
    SnapshotReadOnlyError,
    parse_mounts,
    parse_snapshot_uri,
    snapshot_artifact_uri,
)
from mlflow_anf.snapshots import Snapshot, SnapshotError, SnapshotNotFound, SnapshotVerificationError
from mlflow_anf.snapshots.local import MANIFEST_NAME, LocalSnapshotProvider


def _save(model: torch.nn.Module, path: Path) -> None:
    # pip_requirements given: MLflow would otherwise start a subprocess to infer them.
    mlflow.pytorch.save_model(model, str(path), serialization_format="pickle", pip_requirements=["torch"])


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two saved MLflow models with different weights (saving once per module keeps the tests fast)."""
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    _save(torch.nn.Linear(4, 2), base / "a")
    _save(torch.nn.Linear(4, 2), base / "b")
    return base / "a", base / "b"


@pytest.fixture()
def out(tmp_path: Path, saved_models: tuple[Path, Path]) -> Path:
    """A training output directory as mlflow_anf_lanedet.train leaves it: the MLflow model at ``model/``."""
    out = tmp_path / "out"
    out.mkdir()
    shutil.copytree(saved_models[0], out / "model")
    (out / "metrics.json").write_text('{"accuracy": 0.9}\n')
    return out


@pytest.fixture()
def snap(out: Path) -> Snapshot:
    return LocalSnapshotProvider().create(str(out), "model-1")


def _weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


# --------------------------------------------------------------------------------------------- reading models back
def test_model_loads_from_the_snapshot_after_the_live_copy_is_overwritten_then_deleted(
    out: Path, snap: Snapshot, saved_models: tuple[Path, Path]
) -> None:
    original = _weights(mlflow.pytorch.load_model(str(out / "model")))
    uri = snapshot_artifact_uri(snap, "model")

    shutil.rmtree(out / "model")  # a later run writes its model over the same output directory
    shutil.copytree(saved_models[1], out / "model")
    live = _weights(mlflow.pytorch.load_model(str(out / "model")))
    assert not _same(live, original)
    assert _same(_weights(mlflow.pytorch.load_model(uri)), original)

    shutil.rmtree(out / "model")
    assert _same(_weights(mlflow.pytorch.load_model(uri)), original)


def test_download_artifacts_copies_files_and_directories_out_of_the_snapshot(
    out: Path, snap: Snapshot, tmp_path: Path
) -> None:
    snapdir = out / ".snapshot" / "model-1"
    shutil.rmtree(out / "model")

    got = Path(mlflow.artifacts.download_artifacts(snapshot_artifact_uri(snap, "model/MLmodel")))
    assert got.name == "MLmodel" and got.read_bytes() == (snapdir / "model" / "MLmodel").read_bytes()

    dst = tmp_path / "dst"
    got_dir = Path(mlflow.artifacts.download_artifacts(snapshot_artifact_uri(snap, "model"), dst_path=str(dst)))
    assert got_dir == dst / "model"
    cmp = filecmp.dircmp(snapdir / "model", got_dir)
    assert cmp.left_list == cmp.right_list and not cmp.diff_files
    copied = got_dir / "MLmodel"
    assert os.stat(copied).st_mtime_ns == os.stat(snapdir / "model" / "MLmodel").st_mtime_ns
    copied.write_text("edited")  # a download is the caller's own writable copy...
    assert (snapdir / "model" / "MLmodel").read_text() != "edited"  # ...and the snapshot is untouched
    assert not [p for p in dst.rglob("*") if ".part-" in p.name]

    whole = Path(mlflow.artifacts.download_artifacts(snapshot_artifact_uri(snap), dst_path=str(tmp_path / "all")))
    assert sorted(p.name for p in whole.iterdir()) == ["metrics.json", "model"]  # no snapshot manifest
    assert LocalSnapshotProvider().verify(snap).ok


def test_registered_model_version_and_run_tag_point_into_the_snapshot(
    tracking: MlflowClient, out: Path, snap: Snapshot
) -> None:
    original = _weights(mlflow.pytorch.load_model(str(out / "model")))
    uri = snapshot_artifact_uri(snap, "model")
    run = tracking.create_run(experiment_id="0")
    tracking.set_tag(run.info.run_id, "mlflow_anf.snapshot.model.artifact_uri", uri)
    version = mlflow.register_model(uri, "lanedet-from-snapshot")
    shutil.rmtree(out / "model")

    tagged = tracking.get_run(run.info.run_id).data.tags["mlflow_anf.snapshot.model.artifact_uri"]
    assert _same(_weights(mlflow.pytorch.load_model(tagged)), original)
    assert _same(_weights(mlflow.pytorch.load_model(f"models:/lanedet-from-snapshot/{version.version}")), original)


def test_listing(out: Path, snap: Snapshot) -> None:
    repo = get_artifact_repository(snapshot_artifact_uri(snap))
    assert isinstance(repo, SnapshotArtifactRepository)
    top = repo.list_artifacts()
    assert [(f.path, f.is_dir) for f in top] == [("metrics.json", False), ("model", True)]
    assert top[0].file_size == (out / "metrics.json").stat().st_size
    inner = repo.list_artifacts("model")
    assert "model/MLmodel" in [f.path for f in inner] and ("model/data", True) in [(f.path, f.is_dir) for f in inner]
    assert repo.list_artifacts("model/MLmodel") == []  # a file lists as nothing, as in every MLflow repository
    sub = get_artifact_repository(snapshot_artifact_uri(snap, "model"))
    assert [f.path for f in sub.list_artifacts()] == [f.path.removeprefix("model/") for f in inner]
    assert sub.get_local_path("MLmodel") == str(out.resolve() / ".snapshot" / "model-1" / "model" / "MLmodel")
    listed = mlflow.artifacts.list_artifacts(snapshot_artifact_uri(snap, "model"))
    assert [f.path for f in listed] == [f.path for f in inner]


def test_a_uri_without_a_trailing_slash_still_names_the_snapshot(out: Path, snap: Snapshot, tmp_path: Path) -> None:
    bare = snapshot_artifact_uri(snap).replace("model-1/?", "model-1?")
    assert parse_snapshot_uri(bare) == parse_snapshot_uri(snapshot_artifact_uri(snap))
    got = Path(mlflow.artifacts.download_artifacts(bare, dst_path=str(tmp_path / "d")))  # MLflow splits off "model-1"
    assert got.name == "model-1" and (got / "model" / "MLmodel").is_file()
    volume_only = get_artifact_repository(bare.replace("/model-1?", "/?"))  # what MLflow's split builds
    assert [f.path for f in volume_only.list_artifacts("model-1")] == ["model-1/metrics.json", "model-1/model"]
    with pytest.raises(InvalidSnapshotUri, match="names no snapshot"):
        volume_only.list_artifacts()


def test_volume_names_with_uri_special_characters_survive_mlflow(
    tmp_path: Path, saved_models: tuple[Path, Path]
) -> None:
    vol = tmp_path / "out dir&x=1%2F+ü?#"
    shutil.copytree(saved_models[0], vol / "my model")
    snap = LocalSnapshotProvider().create(str(vol), "s1")
    uri = snapshot_artifact_uri(snap, "my model")
    assert parse_snapshot_uri(uri).volume == str(vol.resolve())
    expected = _weights(mlflow.pytorch.load_model(str(saved_models[0])))  # MLflow cannot load this live path
    shutil.rmtree(vol / "my model")
    assert _same(_weights(mlflow.pytorch.load_model(uri)), expected)


# ------------------------------------------------------------------------------------------------- read-only
def test_every_write_is_refused_and_leaves_the_snapshot_unchanged(out: Path, snap: Snapshot, tmp_path: Path) -> None:
    repo = get_artifact_repository(snapshot_artifact_uri(snap))
    extra = tmp_path / "extra.txt"
    extra.write_text("x")
    for attempt in (
        lambda: repo.log_artifact(str(extra)),
        lambda: repo.log_artifact(str(extra), "model"),
        lambda: repo.log_artifacts(str(tmp_path)),
        lambda: repo.delete_artifacts("model"),
        lambda: repo.delete_artifacts(),
        lambda: repo._log_artifact_async("extra.txt", None),
        lambda: repo.upload_trace_data("{}"),
    ):
        with pytest.raises(SnapshotReadOnlyError, match="read-only"):
            attempt()
    assert LocalSnapshotProvider().verify(snap).ok
    assert not (out / ".snapshot" / "model-1" / "extra.txt").exists()


# ------------------------------------------------------------------------------------------------- clear errors
def test_unknown_snapshot_volume_and_path(out: Path, snap: Snapshot, tmp_path: Path) -> None:
    uri = snapshot_artifact_uri(snap, "model")
    with pytest.raises(SnapshotNotFound, match="'model-2' not found"):
        get_artifact_repository(uri.replace("model-1", "model-2"))
    with pytest.raises(SnapshotNotFound, match="not an existing directory"):
        get_artifact_repository(uri.replace("out", "gone"))
    with pytest.raises(SnapshotArtifactNotFound, match="no artifact 'model/nope'"):
        mlflow.artifacts.download_artifacts(snapshot_artifact_uri(snap, "model/nope"))
    repo = get_artifact_repository(snapshot_artifact_uri(snap))
    with pytest.raises(SnapshotArtifactNotFound, match="manifest is not an artifact"):
        repo.download_artifacts(MANIFEST_NAME, str(tmp_path))
    with pytest.raises(SnapshotArtifactNotFound, match="nope"):
        repo.list_artifacts("nope")


def test_a_reused_snapshot_name_is_refused(out: Path, snap: Snapshot) -> None:
    uri = snapshot_artifact_uri(snap, "model")
    provider = LocalSnapshotProvider()
    provider.delete(str(out), "model-1")
    (out / "metrics.json").unlink()
    provider.create(str(out), "model-1")  # same name, other content
    with pytest.raises(SnapshotVerificationError, match="name was reused"):
        mlflow.pytorch.load_model(uri)


def test_path_traversal_is_refused(out: Path, snap: Snapshot, tmp_path: Path) -> None:
    repo = get_artifact_repository(snapshot_artifact_uri(snap, "model"))
    for bad in ("../metrics.json", "data/../../..", "/etc/passwd", "a\\b"):
        with pytest.raises(InvalidSnapshotUri, match="artifact path"):
            repo.list_artifacts(bad)
        with pytest.raises(InvalidSnapshotUri, match="artifact path"):
            repo.download_artifacts(bad, str(tmp_path))
    with pytest.raises(InvalidSnapshotUri, match=r"path: 'model/\.\./\.\.' contains '\.\.'"):
        snapshot_artifact_uri(snap, "model/../..")
    with pytest.raises(InvalidSnapshotUri, match="contains '..'"):
        get_artifact_repository(snapshot_artifact_uri(snap).replace("model-1/?", "model-1/../../x?"))


def test_a_symlink_out_of_the_snapshot_is_not_followed(tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    vol.mkdir()
    secret = tmp_path / "live.txt"
    secret.write_text("live data")
    (vol / "inside.txt").write_text("pinned")
    (vol / "leak").symlink_to(secret)
    (vol / "ok").symlink_to("inside.txt")
    snap = LocalSnapshotProvider().create(str(vol), "s1")
    repo = get_artifact_repository(snapshot_artifact_uri(snap))
    dst = tmp_path / "dst"
    dst.mkdir()
    assert Path(repo.download_artifacts("ok", str(dst))).read_text() == "pinned"
    with pytest.raises(InvalidSnapshotUri, match="leads out of the snapshot"):
        repo.download_artifacts("leak", str(dst))
    assert sorted(p.name for p in dst.iterdir()) == ["ok"]


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("file:///tmp/x", "scheme must be 'snapshot://', got file://"),
        ("snapshot:///s1/model?volume=%2Fv", "provider missing"),
        ("snapshot://Local/s1?volume=%2Fv", "provider 'Local' is not a provider name"),
        ("snapshot://local/s1/model", "'volume' .* is missing"),
        ("snapshot://local/s1/model?volume=", "'volume' .* is missing"),
        ("snapshot://local/s1?volume=%2Fv&volume=%2Fw", "'volume' is given more than once"),
        ("snapshot://local/s1?volume=%2Fv&colour=red", "unknown query parameter 'colour'"),
        ("snapshot://local/s1?volume=%2Fv&", "query string: '' is not 'key=value'"),
        ("snapshot://local/s1?volume=%ff", "'volume' is not percent-quoted UTF-8"),
        ("snapshot://local/s1/model?volume=%2Fv#frag", "fragment"),
        ("snapshot://local/s1?volume=relative%2Fdir", "volume: 'relative/dir' must be an absolute directory"),
        ("snapshot://local/Bad_Name/model?volume=%2Fv", "snapshot: 'Bad_Name' is not a valid snapshot name"),
        ("snapshot://anf/-x/model?volume=p%2Fv", "snapshot: '-x' is not a valid snapshot name"),
        ("snapshot://local/s1?volume=%2Fv&digest=nohex", "digest: 'nohex'"),
        ("snapshot://csi/s1?volume=ns%2Fpvc&dir=a%2Fb", "dir: 'a/b' is not a valid snapshot name"),
    ],
)
def test_bad_uris_name_the_wrong_part(uri: str, message: str) -> None:
    with pytest.raises(InvalidSnapshotUri, match=message):
        parse_snapshot_uri(uri)


def test_uri_round_trip_and_shapes(snap: Snapshot) -> None:
    for path in ("", "model", "model/data/model.pth", "model/"):
        uri = snapshot_artifact_uri(snap, path)
        loc = parse_snapshot_uri(uri)
        assert loc.uri() == uri and loc.snapshot == "model-1" and loc.path == path.rstrip("/")
    quoted = snap.volume.replace("/", "%2F")
    assert snapshot_artifact_uri(snap) == f"snapshot://local/model-1/?volume={quoted}&digest={snap.digest}"
    with pytest.raises(InvalidSnapshotUri, match="absolute"):
        snapshot_artifact_uri(snap, "/model")
    with pytest.raises(InvalidSnapshotUri, match="character '\\?'"):
        snapshot_artifact_uri(snap, "model?x")
    with pytest.raises(InvalidSnapshotUri, match="path: a path needs a snapshot name"):
        SnapshotLocation(provider="local", volume="/v", path="model")


# ------------------------------------------------------------------------------------ csi / anf through a mount
def _record(provider: str, volume: str, name: str, **details: str) -> Snapshot:
    return Snapshot(
        provider=provider, volume=volume, name=name, id=f"id-{name}", created=datetime.now(timezone.utc),
        details=details,
    )  # fmt: skip


def test_anf_snapshot_is_read_through_the_volume_mount(
    tmp_path: Path, saved_models: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    mount = tmp_path / "mnt" / "models"  # stands in for an NFS mount of the ANF volume
    shutil.copytree(saved_models[0], mount / ".snapshot" / "nightly-1" / "model")
    snap = _record("anf", "pool1/models", "nightly-1")
    uri = snapshot_artifact_uri(snap, "model")
    assert uri == "snapshot://anf/nightly-1/model?volume=pool1%2Fmodels"

    monkeypatch.delenv(MOUNTS_ENV, raising=False)
    with pytest.raises(SnapshotNotMounted) as err:
        mlflow.pytorch.load_model(uri)
    text = str(err.value)
    assert MOUNTS_ENV in text and "mlflow-anf snapshot restore --provider anf --volume pool1/models nightly-1" in text

    # read when the repository is created, not when the module was imported
    monkeypatch.setenv(MOUNTS_ENV, f"csi:ns/other=/nowhere, anf:pool1/models={mount}")
    expected = _weights(mlflow.pytorch.load_model(str(saved_models[0])))
    assert _same(_weights(mlflow.pytorch.load_model(uri)), expected)

    with pytest.raises(SnapshotNotFound, match="'nightly-2' of anf volume 'pool1/models' not found"):
        get_artifact_repository(uri.replace("nightly-1", "nightly-2"))

    monkeypatch.setenv(MOUNTS_ENV, f"pool1/models={tmp_path}")  # unqualified entry, but no .snapshot there
    with pytest.raises(SnapshotNotFound, match="snapshot directory visible"):
        get_artifact_repository(uri)

    monkeypatch.setenv(MOUNTS_ENV, f"anf:pool1/models={tmp_path / 'unmounted'}")
    with pytest.raises(SnapshotNotMounted, match="is not a directory on this machine"):
        get_artifact_repository(uri)


def test_csi_snapshot_uses_the_storage_side_directory_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mount = tmp_path / "pvc"
    (mount / ".snapshot" / "snapshot-5f2e" / "model").mkdir(parents=True)
    (mount / ".snapshot" / "snapshot-5f2e" / "model" / "MLmodel").write_text("flavors: {}\n")
    snap = _record("csi", "team-a/outputs", "run-42-model", snapshot_handle="pvc-91ab/snapshot-5f2e")
    uri = snapshot_artifact_uri(snap, "model")
    assert parse_snapshot_uri(uri).dir == "snapshot-5f2e"

    monkeypatch.setenv(MOUNTS_ENV, f"team-a/outputs={mount}")
    repo = get_artifact_repository(uri)
    assert [f.path for f in repo.list_artifacts()] == ["MLmodel"]
    assert Path(repo.download_artifacts("MLmodel", str(tmp_path))).read_text() == "flavors: {}\n"
    with pytest.raises(SnapshotReadOnlyError):
        repo.log_artifact(str(mount / ".snapshot" / "snapshot-5f2e" / "model" / "MLmodel"))

    with pytest.raises(InvalidSnapshotUri, match="details.snapshot_handle is missing"):
        snapshot_artifact_uri(_record("csi", "team-a/outputs", "pending"))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("pool/vol", "entry 1 'pool/vol' is not"),
        ("a=/x,,pool/vol=relative", "entry 3 .* must be an absolute path"),
        ("anf:=/x", "entry 1 'anf:=/x' names no volume after 'anf:'"),
        ("v=/a,v=/b", "entry 2 maps volume 'v' a second time"),
    ],
)
def test_bad_mount_entries_are_named(value: str, message: str) -> None:
    with pytest.raises(SnapshotError, match=f"{MOUNTS_ENV}: {message}"):
        parse_mounts(value)


def test_mount_entries_parse() -> None:
    mounts = parse_mounts(" anf:pool1/v1=/mnt/a , ns/pvc=/mnt/b,")
    assert [(m.provider, m.volume, str(m.path)) for m in mounts] == [
        ("anf", "pool1/v1", "/mnt/a"),
        (None, "ns/pvc", "/mnt/b"),
    ]
    assert parse_mounts(None) == [] and parse_mounts("") == []


# ------------------------------------------------------------------------------------------------- entry point
def test_the_snapshot_scheme_is_registered_through_the_entry_point() -> None:
    eps = importlib.metadata.entry_points(group="mlflow.artifact_repository")
    assert [ep.value for ep in eps if ep.name == "snapshot"] == ["mlflow_anf.artifact_repo:SnapshotArtifactRepository"]
    assert get_registered_artifact_repositories()["snapshot"] is SnapshotArtifactRepository


# ------------------------------------------------------------------------------------ issue #11: data safety
def test_list_artifacts_does_not_follow_a_link_out_of_the_snapshot(tmp_path: Path) -> None:
    """Red team: list_artifacts stat-ed through a symlink that leaves the snapshot (size and type of live data)."""
    vol = tmp_path / "vol"
    vol.mkdir()
    live = tmp_path / "live"
    live.mkdir()
    (live / "weights.bin").write_bytes(b"\0" * 1234)
    (vol / "inside.txt").write_text("pinned")
    (vol / "leak-dir").symlink_to(live)
    (vol / "leak-file").symlink_to(live / "weights.bin")
    (vol / "ok").symlink_to("inside.txt")
    snap = LocalSnapshotProvider().create(str(vol), "s1")
    repo = get_artifact_repository(snapshot_artifact_uri(snap))
    infos = {i.path: (i.is_dir, i.file_size) for i in repo.list_artifacts()}
    assert infos == {"inside.txt": (False, 6), "leak-dir": (False, None), "leak-file": (False, None), "ok": (False, 6)}
    with pytest.raises(InvalidSnapshotUri, match="leads out of the snapshot"):
        repo.list_artifacts("leak-dir")


def test_content_rewritten_in_place_is_never_served(tmp_path: Path) -> None:
    """Red team: root rewrote a hard-linked live file in place; `load_text` through snapshot:// returned the new
    bytes. Reads check inode/mtime/size against the manifest and hash the file when they differ."""
    vol = tmp_path / "vol"
    vol.mkdir()
    live = vol / "metrics.json"
    live.write_text('{"accuracy": 0.9}\n')
    (vol / "other.txt").write_text("other")
    snap = LocalSnapshotProvider(LocalSnapshotProvider.Config(method="hardlink")).create(str(vol), "s1")
    uri = snapshot_artifact_uri(snap, "metrics.json")
    assert mlflow.artifacts.load_text(uri) == '{"accuracy": 0.9}\n'
    live.chmod(0o644)
    live.write_text('{"accuracy": 1.0}\n')  # same size, in place: the snapshot's inode changes too
    from mlflow.exceptions import MlflowException

    with pytest.raises((SnapshotVerificationError, MlflowException), match="'metrics.json' no longer matches"):
        mlflow.artifacts.load_text(uri)  # MLflow may gather the error into an MlflowException, message kept
    repo = get_artifact_repository(snapshot_artifact_uri(snap))
    with pytest.raises(SnapshotVerificationError, match="no longer matches"):
        repo.get_local_path("metrics.json")
    dst = tmp_path / "dst"
    dst.mkdir()
    with pytest.raises((SnapshotVerificationError, MlflowException), match="no longer matches"):
        repo.download_artifacts("", str(dst))  # a directory: MLflow gathers the per-file errors
    assert not (dst / "metrics.json").exists() and not [p for p in dst.rglob("*.part-*")]
    assert Path(repo.download_artifacts("other.txt", str(dst))).read_text() == "other"  # the rest still reads
