"""Bad-input corpus, ``mpijob`` backend share: backend configs and entry-point parameters that ``mlflow-anf render``
(and ``mlflow run --backend mpijob``) must refuse with one clear error naming the field, file or parameter, leaving
the working directory exactly as it was (:func:`tests.support.fs_state.tree_state`) and, where a cluster is involved,
without a single request to the API server or a run in the MLflow store."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from mlflow.exceptions import ExecutionException

from mlflow_anf.backend.plugin import MPIJobBackend
from mlflow_anf.cli import main
from tests.support.fs_state import state_diff, tree_state

REPO = Path(__file__).resolve().parents[1]
CANARY = "cAnArY-0b9d8e7f6a5c4d3e"
BASE = {"namespace": "lane-detection", "image": "registry.example.com/lanedet:0.1.0",
        "tracking_uri": "http://mlflow.lane-detection.svc:5000"}
OK_PARAMS = ("data_dir=/mnt/tusimple",)


@dataclass(frozen=True)
class Case:
    config: Any  # overrides of BASE (a dict), or the config file's exact text (a str)
    names: str  # what the one error must name (field, file:line, -P parameter)
    params: tuple[str, ...] = OK_PARAMS
    entry_point: str = "train"


CASES: dict[str, Case] = {
    # --- types
    "type-processes-word": Case({"processes": "three"}, "processes: Input should be a valid integer"),
    "type-wait-word": Case({"wait": "sometimes"}, "wait: Input should be a valid boolean"),
    "type-env-number": Case({"env": {"NUM_WORKERS": 4}}, "env.NUM_WORKERS: Input should be a valid string"),
    "type-labels-list": Case({"labels": ["team"]}, "labels: Input should be a valid dictionary"),
    "type-tolerations-mapping": Case({"tolerations": {"key": "sku"}}, "tolerations: Input should be a valid list"),
    "type-snapshot-bool": Case({"snapshot": True}, "snapshot: Input should be a valid dictionary"),
    "type-top-level-list": Case("[1, 2]", "(top level): expected a JSON object"),
    "file-bad-json": Case('{"namespace": "lane-detection",\n  "image": }\n', "cfg.json:2:"),
    "file-empty": Case("", "cfg.json:1:1: invalid JSON"),
    # --- unknown keys
    "unknown-top-level": Case({"procesess": 2}, "procesess: unknown key (did you mean 'processes'?)"),
    "unknown-snapshot-key": Case({"snapshot": {"modle": True}}, "snapshot.modle: unknown key (did you mean 'model'?)"),
    "unknown-secret-ref-value": Case({"secret_env": {"HF_TOKEN": {"secret": "hf", "key": "t", "value": CANARY}}},
                                     "secret_env.HF_TOKEN.value: unknown key"),
    "unknown-toleration-key": Case({"tolerations": [{"kee": "sku"}]}, "tolerations[0].kee: unknown key"),
    "mlflow-build-image": Case({"build_image": True}, "--build-image"),
    # --- bad names
    "name-namespace-case": Case({"namespace": "Lane_Detection"}, "namespace: 'Lane_Detection' is not a valid"),
    "name-namespace-long": Case({"namespace": "n" * 64}, "namespace: "),
    "name-job-digit": Case({"job_name": "9lives"}, "job_name: '9lives' is not a valid job name"),
    "name-job-too-long": Case({"job_name": "j" * 60}, "job_name: too long"),
    "name-data-pvc": Case({"data_pvc": "Bad_PVC"}, "data_pvc: 'Bad_PVC' is not a valid Kubernetes object name"),
    "name-service-account": Case({"service_account": "Launcher SA"}, "service_account: "),
    "name-secret-ref": Case({"secret_env": {"HF_TOKEN": {"secret": "Bad Name", "key": "t"}}},
                            "secret_env.HF_TOKEN.secret: "),
    "name-env-digit": Case({"env": {"1BAD": "x"}}, "env.1BAD: not a valid environment variable name"),
    "name-env-reserved": Case({"env": {"MLFLOW_RUN_ID": "x"}}, "env.MLFLOW_RUN_ID: set by the backend itself"),
    "name-label-key": Case({"labels": {"bad key!": "v"}}, "labels: 'bad key!' is not a valid label key"),
    # --- bad images
    "image-upper-case": Case({"image": "Registry/UPPER:tag"}, "image: 'Registry/UPPER:tag' is not a valid image"),
    "image-short-digest": Case({"image": "repo@sha256:abc"}, "image: 'repo@sha256:abc' is not a valid image"),
    "image-empty": Case({"image": ""}, "image: '' is not a valid image reference"),
    "image-missing": Case({"image": None}, "image: required"),
    "image-digest-required": Case({"require_image_digest": True}, "image: require_image_digest is set"),
    "image-with-credentials": Case({"image": f"lane:{CANARY}@registry.example.com/lanedet:1"},
                                   "image: holds a password before '@'"),
    # --- bad resources
    "resource-cpu-word": Case({"cpu": "lots"}, "cpu: 'lots' is not a positive Kubernetes quantity"),
    "resource-memory-negative": Case({"memory": "-4Gi"}, "memory: '-4Gi' is not a positive Kubernetes quantity"),
    "resource-memory-gb": Case({"launcher_memory": "2GB"}, "launcher_memory: '2GB' is not a positive"),
    "resource-shm-zero": Case({"shm_size": "0"}, "shm_size: '0' is not a positive Kubernetes quantity"),
    "resource-gpus-negative": Case({"gpus_per_process": -1}, "gpus_per_process: Input should be greater than"),
    "resource-gpu-name": Case({"gpu_resource": "gpu"}, "gpu_resource: 'gpu' is not an extended resource name"),
    "resource-slots": Case({"processes": 3, "slots_per_worker": 2}, "processes: 3 is not a multiple"),
    "resource-processes-zero": Case({"processes": 0}, "processes: Input should be greater than or equal to 1"),
    # --- secret-looking plain values (refused; the value is never repeated)
    "secret-env-storage-key": Case({"env": {"AZURE_STORAGE_KEY": CANARY}}, "env.AZURE_STORAGE_KEY: looks like"),
    "secret-env-db-pass": Case({"env": {"DB_PASS": CANARY}}, "env.DB_PASS: looks like a credential"),
    "secret-env-url-password": Case({"env": {"DATABASE_URL": f"postgresql://lane:{CANARY}@db/lanes"}},
                                    "env.DATABASE_URL: holds a password in the URL's user info"),
    "secret-env-jwt": Case({"env": {"CONFIG": f"eyJhbGciOiJIUzI1.eyJzdWIiOiIxMjM0.{CANARY}"}},
                           "env.CONFIG: holds a JSON web token"),
    "secret-tracking-uri-password": Case({"tracking_uri": f"https://lane:{CANARY}@mlflow.example.com"},
                                         "tracking_uri: must not embed a password"),
    "secret-tracking-uri-query": Case({"tracking_uri": f"https://mlflow.example.com/?access_token={CANARY}"},
                                      "tracking_uri: holds a credential in the URL's query parameter 'access_token'"),
    "secret-tracking-uri-user": Case({"tracking_uri": f"https://{CANARY}@mlflow.example.com"},
                                     "tracking_uri: must not embed user info"),
    "secret-annotation-key": Case({"annotations": {"example.com/db-password": CANARY}},
                                  "annotations.example.com/db-password: looks like a credential"),
    "secret-annotation-value": Case({"annotations": {"example.com/note": f"Server=db;Password={CANARY};"}},
                                    "annotations.example.com/note: holds a 'Password=' credential"),
    "secret-label-key": Case({"labels": {"example.com/token": CANARY}}, "labels.example.com/token: looks like"),
    "secret-mpi-arg": Case({"mpi_args": ["-x", f"HF_TOKEN={CANARY}"]}, "mpi_args[1]: holds a 'HF_TOKEN=' credential"),
    # --- bad kubeconfig / context values (the file itself: see the kubeconfig cases below)
    "kubeconfig-empty": Case({"kubeconfig": ""}, "kubeconfig: must be a non-empty single line"),
    "kubeconfig-newline": Case({"kubeconfig": "/home/lane/.kube/config\n/etc/passwd"}, "kubeconfig: must be a"),
    "kubeconfig-number": Case({"kubeconfig": 42}, "kubeconfig: Input should be a valid string"),
    "kube-context-blank": Case({"kube_context": "  "}, "kube_context: must be a non-empty single line"),
    # --- bad entry-point parameters (the project's own TrainConfig, the MLproject's declared types)
    "param-epochs-negative": Case({}, "-P epochs: Input should be greater than or equal to 1",
                                  params=(*OK_PARAMS, "epochs=-1")),
    "param-input-size-7x7": Case({}, "-P input_size: 7x7 must be at least 32x32 and multiples of 8",
                                 params=(*OK_PARAMS, "input_size=7x7")),
    "param-epochs-word": Case({}, "-P epochs: expected a number", params=(*OK_PARAMS, "epochs=many")),
    "param-epochs-fraction": Case({}, "-P epochs: Input should be a valid integer",
                                  params=(*OK_PARAMS, "epochs=2.5")),
    "param-lr-zero": Case({}, "-P lr: Input should be greater than 0", params=(*OK_PARAMS, "lr=0")),
    "param-backbone": Case({}, "-P backbone: Input should be 'vgg16_bn'", params=(*OK_PARAMS, "backbone=resnet9")),
    "param-unknown": Case({}, "-P bogus: not a parameter of this entry point", params=(*OK_PARAMS, "bogus=1")),
    "param-secret-name": Case({}, "-P db_password: looks like a credential",
                              params=(*OK_PARAMS, f"db_password={CANARY}")),
    "param-secret-value": Case({}, "-P snapshot_options: holds a 'client_secret=' credential",
                               params=(*OK_PARAMS, f"snapshot_options=client_secret={CANARY}")),
    "param-no-equals": Case({}, "-P/--param", params=("epochs",)),
    "param-missing-required": Case({}, "data_dir", params=()),
    "param-entry-point": Case({}, "trian", entry_point="trian"),
    # --- the model snapshot must be of the model (issue #13): output_dir on the snapshotted volume
    "model-output-default": Case({"data_pvc": "tusimple-data", "snapshot": {"model": True}},
                                 "-P output_dir: 'outputs' is /workspace/outputs in the pods"),
    "model-output-data-pvc": Case({"data_pvc": "tusimple-data",
                                   "snapshot": {"model": True, "model_pvc": "lanedet-models"}},
                                  "-P output_dir: '/mnt/models' is not on the model volume lanedet-models",
                                  params=(*OK_PARAMS, "output_dir=/mnt/models")),
    "model-mount-in-data": Case({"data_pvc": "tusimple-data", "snapshot": {
        "model": True, "model_pvc": "lanedet-models", "model_mount_path": "/mnt/models"}},
        "snapshot.model_mount_path: '/mnt/models' is inside data_mount_path"),
    "model-mount-no-pvc": Case({"data_pvc": "tusimple-data", "snapshot": {"model": True, "model_mount_path": "/m"}},
                               "snapshot.model_mount_path: set but snapshot.model_pvc is not a PVC of its own"),
}


def _runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)  # click < 8.2
    except TypeError:
        return CliRunner()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with a copy of the repository's MLproject (its `train` validated by the real
    `mlflow_anf_lanedet.config.TrainConfig`, reached through a link to the project code)."""
    work = tmp_path / "work"
    proj = work / "lanedet"
    proj.mkdir(parents=True)
    for name in ("MLproject", "conda.yaml", "python_env.yaml"):
        shutil.copy(REPO / name, proj / name)
    (proj / "project").symlink_to(REPO / "project")
    monkeypatch.chdir(work)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'never.db'}")  # render must not touch it
    return work


def test_the_corpus_is_large_and_names_many_fields() -> None:
    assert len(CASES) >= 35
    assert len({c.names.split(":")[0] for c in CASES.values()}) >= 30


@pytest.mark.parametrize("case_id", list(CASES))
def test_render_refuses_naming_the_field_and_writes_nothing(case_id: str, workdir: Path) -> None:
    case = CASES[case_id]
    if isinstance(case.config, str):
        text = case.config
    else:
        text = json.dumps({k: v for k, v in {**BASE, **case.config}.items() if v is not None})
    (workdir / "cfg.json").write_text(text)
    before = tree_state(workdir)
    args = ["render", "lanedet", "-e", case.entry_point, "-c", "cfg.json"]
    for param in case.params:
        args += ["-P", param]
    result = _runner().invoke(main, args)
    errors = result.stderr if result.stderr_bytes is not None else result.output
    assert result.exit_code == 2, (result.exit_code, result.output, errors)
    assert case.names in errors, errors
    assert result.stdout == ""  # no manifest half-printed
    assert CANARY not in result.stdout + errors
    after = tree_state(workdir)
    assert after == before, state_diff(before, after)


KUBECONFIGS: dict[str, tuple[str | None, str]] = {
    # id: (content written to the kubeconfig path, or None for no file at all; what the error says)
    "kubeconfig-missing": (None, "no file at"),
    "kubeconfig-directory": ("<dir>", "no file at"),
    "kubeconfig-bad-yaml": (f"users:\n- name: lane\n  user: {{token: {CANARY}\n", "kubeconfig "),
    "kubeconfig-a-list": ("- a\n- b\n", "not a kubeconfig mapping"),
    "kubeconfig-unknown-context": ("apiVersion: v1\nclusters: []\ncontexts: []\ncurrent-context: lane\n",
                                   "Expected object with name lane"),
}


@pytest.mark.parametrize("case_id", list(KUBECONFIGS))
def test_bad_kubeconfig_is_refused_before_anything_is_created(case_id: str, workdir: Path, k8s_server,
                                                              mlflow_store, sim_project) -> None:
    content, fragment = KUBECONFIGS[case_id]
    path = workdir / "kube" / "config"
    if content == "<dir>":
        path.mkdir(parents=True)
    elif content is not None:
        path.parent.mkdir()
        path.write_text(content)
    cfg = {**BASE, "kubeconfig": str(path), "tracking_uri": "http://mlflow:5000"}
    before, mark = tree_state(workdir), k8s_server.mark()
    with pytest.raises(ExecutionException) as err:
        MPIJobBackend().run(str(sim_project), "train", {}, None, cfg, mlflow_store.uri, mlflow_store.experiment_id)
    message = str(err.value)
    assert "kubeconfig" in message and str(path) in message and fragment in message, message
    assert CANARY not in message
    assert k8s_server.requests(mark) == []
    assert mlflow_store.client().search_runs([mlflow_store.experiment_id]) == []
    after = tree_state(workdir)
    assert after == before, state_diff(before, after)


def test_bad_params_through_mlflow_run_create_no_run_and_no_object(k8s_server, k8s_objects,
                                                                    kubeconfig_path, mlflow_store,
                                                                    workdir: Path) -> None:
    k8s_objects.namespace("lane-detection")
    cfg = {**BASE, "kubeconfig": str(kubeconfig_path)}
    mark = k8s_server.mark()
    for params, name in (({"epochs": "-1"}, "-P epochs"), ({"input_size": "7x7"}, "-P input_size")):
        with pytest.raises(ExecutionException) as err:
            MPIJobBackend().run(str(workdir / "lanedet"), "train", {"data_dir": "/mnt/x", **params}, None, cfg,
                                mlflow_store.uri, mlflow_store.experiment_id)
        assert f"{name}: " in str(err.value)
    assert k8s_server.requests(mark) == []
    assert mlflow_store.client().search_runs([mlflow_store.experiment_id]) == []


HOOKS: dict[str, tuple[str, str]] = {
    # id: (the MLproject's mlflow_anf section, what the error names)
    "hook-not-a-target": ("mlflow_anf:\n  params_model:\n    train: not a target\n",
                          "MLproject: mlflow_anf.params_model: train: 'not a target' is not 'package.module:attribute'"),
    "hook-path-outside": ("mlflow_anf:\n  python_path: [../elsewhere]\n",
                          "MLproject: mlflow_anf.python_path: '../elsewhere' must be a directory inside the project"),
    "hook-unknown-key": ("mlflow_anf:\n  params_models: {}\n", "MLproject: mlflow_anf.params_models: Extra inputs"),
    "hook-not-a-mapping": ("mlflow_anf: [train]\n", "MLproject: mlflow_anf: expected a mapping"),
    "hook-missing-module": ("mlflow_anf:\n  params_model:\n    train: no_such_module_here:Model\n",
                            "MLproject: mlflow_anf.params_model.train: cannot load 'no_such_module_here:Model'"),
    "hook-missing-attribute": ("mlflow_anf:\n  params_model:\n    train: json:NoSuchModel\n",
                               "MLproject: mlflow_anf.params_model.train: cannot load 'json:NoSuchModel'"),
}


@pytest.mark.parametrize("case_id", list(HOOKS))
def test_bad_params_model_hook_names_the_mlproject_key(case_id: str, workdir: Path) -> None:
    section, fragment = HOOKS[case_id]
    proj = workdir / "hooked"
    proj.mkdir()
    (proj / "MLproject").write_text("name: hooked\n" + section + "entry_points:\n  train:\n    parameters:\n"
                                    "      epochs: {type: float, default: 1}\n    command: \"python t.py {epochs}\"\n")
    (workdir / "cfg.json").write_text(json.dumps(BASE))
    before = tree_state(workdir)
    result = _runner().invoke(main, ["render", "hooked", "-e", "train", "-c", "cfg.json"])
    errors = result.stderr if result.stderr_bytes is not None else result.output
    assert result.exit_code == 2, (result.output, errors)
    assert fragment in errors.replace(str(proj / "MLproject"), "MLproject"), errors
    assert result.stdout == ""
    after = tree_state(workdir)
    assert after == before, state_diff(before, after)
