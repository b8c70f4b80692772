"""A missing optional dependency names the extra that brings it, where a user meets it (issue #15, part 2): each
path runs the real command (click's CliRunner in this process, or a subprocess) with the module made unimportable
the way Python itself reports an uninstalled one (``sys.modules[name] = None`` makes ``import name`` raise
``ModuleNotFoundError`` with ``name`` set: importlib's ``_find_and_load``, CPython Lib/importlib/_bootstrap.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlflow_anf.cli import main
from mlflow_anf.extras import EXTRAS, MissingExtraError, require_extra
from tests.conftest import REPO_ROOT

ANF_OPTIONS = ["--option", "subscription_id=00000000-0000-0000-0000-000000000000", "--option", "resource_group=rg",
               "--option", "account=acct"]


def _runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)  # click < 8.2
    except TypeError:
        return CliRunner()


def _block(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    import kubernetes.client  # noqa: F401 - cached submodules (as after other tests) must not hide the blocked package

    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def _assert_names_extra(result: object, extra: str, purpose: str) -> None:
    stderr = result.stderr  # type: ignore[attr-defined]
    assert result.exit_code == 2, (result.exit_code, stderr, result.exception)  # type: ignore[attr-defined]
    assert f"pip install 'mlflow-anf[{extra}]'" in stderr and purpose in stderr, stderr
    assert "Traceback" not in stderr and "No module named" not in stderr


def test_require_extra_names_the_extra_and_lets_a_broken_install_through(monkeypatch: pytest.MonkeyPatch,
                                                                       tmp_path: Path) -> None:
    _block(monkeypatch, "kubernetes")
    with pytest.raises(MissingExtraError, match=r"^x needs the Kubernetes client \(kubernetes\), which is not "
                                                r"installed: pip install 'mlflow-anf\[k8s\]'$") as info:
        require_extra("k8s", "kubernetes", "x")
    assert info.value.extra == "k8s"
    # an ImportError from inside an installed package is not "install the extra": it goes through unchanged
    (tmp_path / "half_installed").mkdir()
    (tmp_path / "half_installed" / "__init__.py").write_text("import its_missing_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as inner:
        require_extra("k8s", "half_installed", "x")
    assert not isinstance(inner.value, MissingExtraError) and inner.value.name == "its_missing_dependency"
    with pytest.raises(KeyError, match="unknown extra 'k9s'"):
        require_extra("k9s", "kubernetes", "x")


def test_every_named_extra_is_one_of_pyproject() -> None:
    import tomllib

    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(EXTRAS) <= set(extras)


def test_doctor_without_kubernetes_names_the_k8s_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _block(monkeypatch, "kubernetes")
    cfg = {"namespace": "lane", "image": "x.io/y:1", "kubeconfig": str(tmp_path / "kubeconfig")}
    result = _runner().invoke(main, ["doctor", "-c", json.dumps(cfg), "--tracking-uri", "http://m:5000"])
    _assert_names_extra(result, "k8s", "`mlflow-anf doctor`")


def test_csi_snapshot_commands_without_kubernetes_name_the_k8s_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    _block(monkeypatch, "kubernetes")
    result = _runner().invoke(main, ["snapshot", "list", "--provider", "csi", "--volume", "lane/data"])
    _assert_names_extra(result, "k8s", "the csi snapshot provider")


def test_anf_commands_without_the_azure_sdk_name_the_azure_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    _block(monkeypatch, "azure.mgmt.netapp", "azure.identity")
    result = _runner().invoke(main, ["snapshot", "list", "--provider", "anf", "--volume", "pool/vol", *ANF_OPTIONS])
    _assert_names_extra(result, "azure", "the anf snapshot provider")
    result = _runner().invoke(main, ["volume", "show", "pool/vol", *ANF_OPTIONS])
    _assert_names_extra(result, "azure", "the anf snapshot provider")


def test_render_needs_no_kubernetes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rendering only plans: it works without the k8s extra (nothing to install for a dry run)."""
    _block(monkeypatch, "kubernetes")
    cfg = {"namespace": "lane", "image": "x.io/y:1", "tracking_uri": "http://m:5000"}
    result = _runner().invoke(main, ["render", str(REPO_ROOT), "-e", "train", "-P", "data_dir=/mnt/d",
                                     "-c", json.dumps(cfg)])
    assert result.exit_code == 0, result.stderr
    assert "kind: MPIJob" in result.stdout


def _python_with_blocked(blocked: list[str], code: str, *args: str, cwd: Path | None = None,
                         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    prelude = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in blocked)
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "project"),
                                              full_env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", prelude + code, *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env=full_env, stdin=subprocess.DEVNULL)


@pytest.mark.slow
def test_mlflow_run_backend_mpijob_without_kubernetes_names_the_k8s_extra(tmp_path: Path) -> None:
    """`mlflow run --backend mpijob` (MLflow's own CLI, which loads the backend by its entry point) stops before
    fetching or creating anything, with MLflow's one-line error naming the extra."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "MLproject").write_text("name: p\nentry_points:\n  main:\n    command: python -c pass\n")
    cfg = json.dumps({"namespace": "lane", "image": "x.io/y:1", "tracking_uri": "http://m:5000"})
    proc = _python_with_blocked(
        ["kubernetes"], "from mlflow.cli import cli\nsys.exit(cli())",
        "run", str(project), "--backend", "mpijob", "--backend-config", cfg, "--env-manager", "local",
        env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "`--backend mpijob` needs the Kubernetes client" in proc.stderr
    assert "pip install 'mlflow-anf[k8s]'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_lightning_callback_without_lightning_names_the_lightning_extra() -> None:
    proc = _python_with_blocked(["pytorch_lightning"], "from mlflow_anf.lightning import SnapshotLineage")
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last == ("mlflow_anf.extras.MissingExtraError: SnapshotLineage (the Lightning callback of mlflow-anf) "
                    "needs PyTorch Lightning (pytorch-lightning), which is not installed: "
                    "pip install 'mlflow-anf[lightning]'"), last


def test_the_registry_check_without_python_dxf_names_the_registry_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """reproduce's image check is optional: without python-dxf it reports 'unknown' and says what to install."""
    from mlflow_anf.reproduce.image import check_image

    _block(monkeypatch, "dxf")
    check = check_image("registry.example.com/lanedet:0.1.0")
    assert check.status == "unknown" and "pip install 'mlflow-anf[registry]'" in (check.detail or "")
