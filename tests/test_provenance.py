"""Provenance: code version (git commit + dirty check, or a content digest), dirty-tree policy, redaction, image,
seeds, and the MLflow round trip (artifact + tags) - against real git repositories and a real sqlite store."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from mlflow_anf.provenance import (
    ARTIFACT_PATH,
    ENV_DIRTY_POLICY,
    REDACTED,
    TAG_BACKEND_CONFIG,
    TAG_BACKEND_IMAGE,
    TAG_CODE_COMMIT,
    TAG_CODE_DIGEST,
    TAG_CODE_DIRTY,
    TAG_IMAGE_DIGEST,
    DirtyTreeError,
    ProvenanceError,
    ProvenancePolicy,
    backend_config_from_tags,
    code_version,
    collect_provenance,
    commit_exists,
    find_project_root,
    image_info,
    load_provenance,
    log_provenance,
    redact,
    seeds_from,
    tree_digest,
)
from tests.support.git import commit_all, git

def make_project(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "MLproject").write_text("name: p\nentry_points:\n  main:\n    command: python pkg/train.py\n")
    (root / "pkg" / "train.py").write_text("print('train')\n")
    (root / "pkg" / "util.py").write_text("X = 1\n")
    (root / ".gitignore").write_text("outputs/\n*.log\n")
    return root


@pytest.fixture
def repo(git_repo: Path) -> Path:
    make_project(git_repo)
    commit_all(git_repo, "first")
    return git_repo


# ---- code version -----------------------------------------------------------------------------------------------
def test_clean_git_tree_records_commit_and_a_digest_equal_to_an_exported_copy(repo: Path, tmp_path: Path) -> None:
    version = code_version(repo / "pkg" / "train.py")
    assert version.kind == "git" and version.root == str(repo.resolve())
    assert version.commit == git(repo, "rev-parse", "HEAD") and version.branch == "main"
    assert version.dirty is False and version.dirty_files == []
    assert version.files == 4 and version.digest.startswith("sha256:")
    # the same files without .git (an image's /workspace) digest the same: the digest names the content
    export = tmp_path / "export"
    shutil.copytree(repo, export, ignore=shutil.ignore_patterns(".git"))
    (export / "pkg" / "__pycache__").mkdir()
    (export / "pkg" / "__pycache__" / "train.cpython-311.pyc").write_bytes(b"\0")
    copy = code_version(export)
    assert copy.kind == "tree" and copy.commit is None
    assert copy.digest == version.digest


def test_every_kind_of_change_makes_the_tree_dirty_and_moves_the_digest(repo: Path) -> None:
    clean = code_version(repo)
    (repo / "outputs").mkdir()
    (repo / "outputs" / "model.bin").write_bytes(b"ignored by .gitignore")
    (repo / "run.log").write_text("ignored too")
    assert code_version(repo) == clean  # ignored files are neither dirty nor digested

    (repo / "pkg" / "util.py").write_text("X = 2\n")
    modified = code_version(repo)
    assert modified.dirty and modified.dirty_files == [" M pkg/util.py"]
    assert modified.commit == clean.commit and modified.digest != clean.digest

    (repo / "pkg" / "util.py").write_text("X = 1\n")
    (repo / "pkg" / "new.py").write_text("")
    untracked = code_version(repo)
    assert untracked.dirty and untracked.dirty_files == ["?? pkg/new.py"] and untracked.digest != clean.digest

    (repo / "pkg" / "new.py").unlink()
    os.chmod(repo / "pkg" / "train.py", 0o755)
    assert code_version(repo).digest != clean.digest  # the exec bit is part of the code
    os.chmod(repo / "pkg" / "train.py", 0o644)
    assert code_version(repo) == clean


def test_tree_without_git_skips_caches_and_records_symlinks(tmp_path: Path) -> None:
    root = make_project(tmp_path / "proj")
    base = code_version(root)
    assert base.kind == "tree" and base.files == 4
    for noise in (".venv/lib/x.py", "mlruns/0/meta.yaml", ".snapshot/s1/a", "pkg/__pycache__/a.pyc"):
        (root / noise).parent.mkdir(parents=True, exist_ok=True)
        (root / noise).write_text("noise")
    assert code_version(root).digest == base.digest
    (root / "link.py").symlink_to("pkg/util.py")
    linked = code_version(root)
    assert linked.files == 5 and linked.digest != base.digest
    assert code_version(root, ProvenancePolicy(max_files=3)).digest is None  # too big: no digest, no crash


def test_project_root_is_the_mlproject_directory_above_the_code(repo: Path, tmp_path: Path) -> None:
    assert find_project_root(repo / "pkg" / "train.py") == repo.resolve()
    lone = tmp_path / "lone" / "mod.py"
    lone.parent.mkdir()
    lone.write_text("")
    assert find_project_root(lone) == lone.parent.resolve()
    assert tree_digest(repo, ["pkg/util.py", "missing.py"])[1] == 1


def test_commit_exists(repo: Path) -> None:
    assert commit_exists(repo, git(repo, "rev-parse", "HEAD"))
    assert not commit_exists(repo, "0" * 40)


# ---- dirty-tree policy ------------------------------------------------------------------------------------------
def test_refuse_policy_raises_naming_the_files(repo: Path) -> None:
    (repo / "pkg" / "util.py").write_text("X = 3\n")
    with pytest.raises(DirtyTreeError) as err:
        collect_provenance(code_path=repo, policy=ProvenancePolicy(dirty="refuse"))
    assert "pkg/util.py" in str(err.value) and ENV_DIRTY_POLICY in str(err.value)


def test_warn_policy_warns_loudly_and_records_it(repo: Path, caplog: pytest.LogCaptureFixture) -> None:
    (repo / "pkg" / "util.py").write_text("X = 3\n")
    with caplog.at_level(logging.WARNING, logger="mlflow_anf.provenance"):
        record = collect_provenance(code_path=repo)
    assert "UNCOMMITTED CODE" in caplog.text and "pkg/util.py" in caplog.text
    assert record.code.dirty and "pkg/util.py" in record.warnings[0]
    assert collect_provenance(code_path=repo, policy=ProvenancePolicy(dirty="ignore")).warnings == []


def test_policy_from_env() -> None:
    assert ProvenancePolicy.from_env({}).dirty == "warn"
    assert ProvenancePolicy.from_env({ENV_DIRTY_POLICY: " Refuse "}).dirty == "refuse"
    with pytest.raises(ValueError, match=ENV_DIRTY_POLICY):
        ProvenancePolicy.from_env({ENV_DIRTY_POLICY: "sometimes"})


# ---- the other facts --------------------------------------------------------------------------------------------
def test_secrets_never_reach_the_record(repo: Path) -> None:
    git(repo, "remote", "add", "origin", "https://user:ghp_s3cr3t@github.example.com/org/repo.git")
    config = {"namespace": "lane", "secret_env": {"HF_TOKEN": {"secret": "hf", "key": "token"}},
              "image_pull_secrets": ["acr-pull"],
              "env": {"DB_PASSWORD": "hunter2"}}
    record = collect_provenance(
        code_path=repo, params={"seed": "7", "api_token": "abc", "lr": "0.1"},
        tags={TAG_BACKEND_CONFIG: json.dumps(config)}, provider_options={"client_secret": "x", "account": "a"},
    )
    text = record.model_dump_json()
    for secret in ("ghp_s3cr3t", "hunter2", '"abc"', '"x"'):
        assert secret not in text
    assert record.code.remote == "https://github.example.com/org/repo.git"
    assert record.params["api_token"] == REDACTED and record.params["lr"] == "0.1"
    assert record.backend_config["secret_env"] == {"HF_TOKEN": {"secret": "hf", "key": "token"}}  # a reference
    assert record.backend_config["env"]["DB_PASSWORD"] == REDACTED
    assert record.backend_config["image_pull_secrets"] == ["acr-pull"]
    assert record.provider_options == {"client_secret": REDACTED, "account": "a"}
    assert redact([{"token": 1}]) == [{"token": REDACTED}]


def test_image_seeds_and_backend_from_tags_and_env(repo: Path) -> None:
    digest = "sha256:" + "ab" * 32
    assert image_info({}, {}) is None
    assert image_info({}, {TAG_BACKEND_IMAGE: f"reg.io/lanedet:1@{digest}"}).digest == digest
    from_env = image_info({"MLFLOW_ANF_IMAGE": "reg.io/lanedet:1", "MLFLOW_ANF_IMAGE_DIGEST": digest},
                          {TAG_BACKEND_IMAGE: "other:2"})
    assert (from_env.ref, from_env.digest, from_env.source) == ("reg.io/lanedet:1", digest, "env")
    assert seeds_from({"seed": "42", "data_seed": "1", "deterministic": "True", "lr": "1"},
                      {"PYTHONHASHSEED": "0"}) == {"seed": "42", "data_seed": "1", "deterministic": "True",
                                                   "env.PYTHONHASHSEED": "0"}
    record = collect_provenance(code_path=repo, tags={"mlflow_anf.backend.mpijob": "lane/job-1",
                                                      TAG_BACKEND_IMAGE: "reg.io/lanedet:1"}, environ={})
    assert record.backend == "mpijob" and record.image.ref == "reg.io/lanedet:1" and record.image.digest is None
    assert record.packages["mlflow-anf"] and record.packages["torch"]


def test_truncated_backend_config_tag_is_named() -> None:
    with pytest.raises(ProvenanceError, match=TAG_BACKEND_CONFIG):
        backend_config_from_tags({TAG_BACKEND_CONFIG: '{"namespace": "lane", "ima'})


# ---- MLflow adapter ---------------------------------------------------------------------------------------------
@pytest.fixture
def experiment(mlflow_store: Any) -> str:
    return mlflow_store.experiment_id


def test_log_and_load_round_trip(tracking: MlflowClient, experiment: str, repo: Path) -> None:
    run_id = tracking.create_run(experiment, tags={"mlflow.project.entryPoint": "main"}).info.run_id
    tracking.log_param(run_id, "seed", "5")
    assert load_provenance(run_id, tracking) is None
    logged = log_provenance(run_id, code_path=repo / "pkg" / "train.py", client=tracking, environ={})
    loaded = load_provenance(run_id, tracking)
    assert loaded == logged
    assert loaded.entry_point == "main" and loaded.params == {"seed": "5"} and loaded.seeds == {"seed": "5"}
    tags = tracking.get_run(run_id).data.tags
    assert tags[TAG_CODE_COMMIT] == git(repo, "rev-parse", "HEAD")
    assert tags[TAG_CODE_DIRTY] == "false" and tags[TAG_CODE_DIGEST] == logged.code.digest
    assert TAG_IMAGE_DIGEST not in tags
    assert [a.path for a in tracking.list_artifacts(run_id, "mlflow_anf")] == [ARTIFACT_PATH]


def test_run_id_from_the_environment_and_refusal_logs_nothing(tracking: MlflowClient, experiment: str,
                                                              repo: Path) -> None:
    run_id = tracking.create_run(experiment).info.run_id
    (repo / "pkg" / "util.py").write_text("X = 9\n")
    env = {"MLFLOW_RUN_ID": run_id, ENV_DIRTY_POLICY: "refuse"}
    with pytest.raises(DirtyTreeError):
        log_provenance(code_path=repo, client=tracking, environ=env)
    assert load_provenance(run_id, tracking) is None
    assert TAG_CODE_DIRTY not in tracking.get_run(run_id).data.tags
    record = log_provenance(code_path=repo, client=tracking, environ={"MLFLOW_RUN_ID": run_id})
    assert record.run_id == run_id and tracking.get_run(run_id).data.tags[TAG_CODE_DIRTY] == "true"
    with pytest.raises(ValueError, match="run_id"):
        log_provenance(code_path=repo, client=tracking, environ={})


def test_unreadable_provenance_artifact_names_the_field(tracking: MlflowClient, experiment: str,
                                                        tmp_path: Path) -> None:
    run_id = tracking.create_run(experiment).info.run_id
    bad = tmp_path / "provenance.json"
    bad.write_text(json.dumps({"created": "2026-01-01T00:00:00Z", "code": {"kind": "svn", "root": "/x"}}))
    tracking.log_artifact(run_id, str(bad), "mlflow_anf")
    with pytest.raises(ProvenanceError, match=r"provenance.json: code.kind"):
        load_provenance(run_id, tracking)
