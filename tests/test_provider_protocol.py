"""The provider protocol: every registered provider class has the traits and the protocol's restore keywords, and
the traits answer what callers used to branch on by provider name."""

from __future__ import annotations

import ast
import inspect
import os
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest

import mlflow_anf
from mlflow_anf.snapshots import provider_class, traits_for
from mlflow_anf.snapshots.base import ProviderTraits, Snapshot, SnapshotInputError, SnapshotNotFound
from mlflow_anf.snapshots.files import SnapshotArtifactNotFound, SnapshotFiles
from mlflow_anf.snapshots.local import LocalSnapshotProvider
from mlflow_anf.snapshots.local.files import LocalSnapshotFiles

PROTOCOL_RESTORE_KEYWORDS = {"wait": bool, "timeout_s": None, "verify": True}


def _record(provider: str, volume: str, name: str, **details: object) -> Snapshot:
    return Snapshot(
        provider=provider, volume=volume, name=name, id=f"id-{name}", created=datetime.now(timezone.utc),
        details=details,
    )  # fmt: skip


@pytest.mark.parametrize("name", ["local", "csi", "anf"])
def test_registered_provider_follows_the_protocol(name: str) -> None:
    cls = provider_class(name)
    assert issubclass(cls, ProviderTraits) and traits_for(name) is cls
    assert cls.name == name
    params = inspect.signature(cls.restore).parameters
    for keyword, default in PROTOCOL_RESTORE_KEYWORDS.items():
        assert keyword in params, f"{name}: restore has no {keyword!r} keyword"
        assert params[keyword].kind is inspect.Parameter.KEYWORD_ONLY, f"{name}: restore's {keyword!r}"
        if default is bool:  # wait: the provider may default it to True (anf), but it is a flag
            assert isinstance(params[keyword].default, bool), f"{name}: restore's wait default"
        else:
            assert params[keyword].default is default, f"{name}: restore's {keyword!r} default"
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()), f"{name}: **options"
    for method in ("create", "list", "get", "delete", "verify"):
        assert callable(getattr(cls, method, None)), f"{name}: no {method}"


def test_local_restore_defaults_are_the_protocols() -> None:
    params = inspect.signature(LocalSnapshotProvider.restore).parameters
    assert (params["wait"].default, params["timeout_s"].default, params["verify"].default) == (False, None, True)


def test_unregistered_provider_gets_the_remote_defaults() -> None:
    traits = traits_for("somebody-elses")
    assert traits is ProviderTraits and traits.restore_needs_mount and traits.local_root("x") is None


# ---------------------------------------------------------------------------------------------------- local
def test_local_traits(tmp_path: Path) -> None:
    local = traits_for("local")
    with pytest.raises(SnapshotInputError, match="volume: 'data' must be an absolute directory"):
        local.check_volume("data")
    assert local.check_volume(str(tmp_path)) == str(tmp_path)
    with pytest.raises(SnapshotInputError, match="snapshot: 'Upper_case' is not a valid snapshot name"):
        local.check_name("Upper_case")
    assert local.check_name("nightly-1.2") == "nightly-1.2"
    (tmp_path / "data").mkdir()
    assert local.refers_to("data", str(tmp_path / "data"), base=tmp_path)  # relative to the base
    assert local.refers_to(str(tmp_path / "data") + "/", str(tmp_path / "data"), base=Path("/elsewhere"))
    assert not local.refers_to("data", str(tmp_path / "data"), base=Path("/elsewhere"))
    assert not local.refers_to("file://" + str(tmp_path / "data"), str(tmp_path / "data"), base=tmp_path)
    assert local.default_restore_target(str(tmp_path / "data"), tmp_path / "work") == str(tmp_path / "work" / "data")
    snap = _record("local", str(tmp_path / "data"), "s1", path=str(tmp_path / "data" / ".snapshot" / "s1"))
    assert local.local_path(snap) == str(tmp_path / "data" / ".snapshot" / "s1")
    assert local.local_path(_record("local", str(tmp_path), "s1")) is None
    assert not local.restore_needs_mount and local.local_root(str(tmp_path)) == tmp_path


def test_local_snapshot_files_check_the_manifest(tmp_path: Path) -> None:
    volume = tmp_path / "vol"
    volume.mkdir()
    (volume / "a.txt").write_text("a\n")
    snap = LocalSnapshotProvider().create(str(volume), "s1")
    reader = traits_for("local").snapshot_files(volume, "s1", provider="local", volume=str(volume))
    assert isinstance(reader, LocalSnapshotFiles) and reader.root == Path(snap.details["path"]).resolve()
    assert [(i.name, i.is_dir, i.size) for i in reader.list_dir(reader.root, top=True)] == [("a.txt", False, 2)]
    with pytest.raises(SnapshotArtifactNotFound, match="the snapshot manifest is not an artifact"):
        reader.resolve((".mlflow-anf-snapshot.json",), "here")
    reader.check_file(reader.resolve(("a.txt",), "here"), "here")
    with pytest.raises(Exception, match="name was reused"):
        traits_for("local").snapshot_files(volume, "s1", provider="local", volume=str(volume), digest="sha256:00")


# ---------------------------------------------------------------------------------------------------- csi
def test_csi_traits() -> None:
    csi = traits_for("csi")
    assert csi.refers_to("team-a/data", "team-a/data", base=Path("/"))
    assert csi.refers_to("data", "team-a/data", base=Path("/"))  # the bare PVC name
    assert not csi.refers_to("team-b/data", "team-a/data", base=Path("/"))
    assert csi.param_value("data", "team-a/data", "team-a/data-repro") == "data-repro"
    assert csi.param_value("team-a/data", "team-a/data", "team-a/data-repro") == "team-a/data-repro"
    assert csi.restore_scope("team-a/data") == "team-a" and csi.restore_scope("data") is None
    snap = _record("csi", "team-a/data", "s1", snapshot_handle="pvc-91ab/snapshot-5f2e")
    assert csi.storage_dir(snap) == "snapshot-5f2e"
    assert csi.storage_dir(_record("csi", "team-a/data", "s1", snapshot_handle="pvc-91ab/s1")) is None
    with pytest.raises(SnapshotInputError, match="details.snapshot_handle is missing"):
        csi.storage_dir(_record("csi", "team-a/data", "s1"))
    assert csi.restore_needs_mount and csi.local_root("team-a/data") is None


def test_remote_snapshot_files_serve_as_is_and_say_how_to_reach(tmp_path: Path) -> None:
    mount = tmp_path / "mnt"
    (mount / ".snapshot" / "snapshot-5f2e").mkdir(parents=True)
    (mount / ".snapshot" / "snapshot-5f2e" / "m.bin").write_bytes(b"12345")
    csi = traits_for("csi")
    reader = csi.snapshot_files(mount, "s1", provider="csi", volume="team-a/data", dir_name="snapshot-5f2e")
    assert type(reader) is SnapshotFiles and reader.expected_sha256(mount, os.stat(mount), "x") is None
    path = reader.resolve(("m.bin",), "m.bin in csi:team-a/data")
    reader.copy_file(path, tmp_path / "copy.bin", "m.bin")
    assert (tmp_path / "copy.bin").read_bytes() == b"12345"
    with pytest.raises(SnapshotNotFound, match="'s2' of csi volume 'team-a/data' not found"):
        csi.snapshot_files(mount, "s2", provider="csi", volume="team-a/data")
    with pytest.raises(SnapshotNotFound, match="snapshot directory visible\\? mount it"):
        csi.snapshot_files(tmp_path, "s1", provider="csi", volume="team-a/data", hint="mount it")


# ---------------------------------------------------------------------------------------------------- anf
def test_anf_traits() -> None:
    anf = traits_for("anf")
    assert anf.restore_needs_mount is True
    assert isinstance(anf.mount_hint, str) and anf.mount_hint.strip()
    assert anf.local_root("pool1/vol") is None and anf.supports_labels is False


# ------------------------------------------------------------------------------------- no name comparisons
_ADAPTERS = ["artifact_repo.py", "dataset_source.py", "tracking.py", "cli.py"]


@pytest.mark.parametrize("module", _ADAPTERS)
def test_adapters_never_compare_a_provider_name_or_reach_into_a_provider(module: str) -> None:
    source = (Path(mlflow_anf.__file__).parent / module).read_text()
    assert not re.search(r"""[!=]= *["'](local|csi|anf)["']""", source), f"{module} compares a provider's name"
    imports = [
        node.module
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ImportFrom) and node.module is not None
    ]
    reaching = [m for m in imports if re.match(r"mlflow_anf\.snapshots\.(local|csi|anf)\b", m)]
    assert not reaching, f"{module} imports a provider's module: {reaching}"
