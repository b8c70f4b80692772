"""Backend config: every bad key gives one clear error naming it, and nothing is submitted or recorded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mlflow.exceptions import ExecutionException

from mlflow_anf.backend.config import BackendConfigError, MPIJobBackendConfig, load_backend_config
from mlflow_anf.backend.plugin import MPIJobBackend, pod_tracking_uri

CANARY = "canary-7f3a9c2e51d84b06"
BASE = {"namespace": "lane-detection", "image": "registry.example.com/lanedet:0.1.0"}

# (overrides of BASE, the key the one error must name, a fragment of its message)
BAD: list[tuple[dict[str, Any], str, str]] = [
    ({"procesess": 2}, "procesess", "unknown key (did you mean 'processes'?)"),
    ({"namespace": None}, "namespace", "required"),
    ({"namespace": "Lane_Detection"}, "namespace", "not a valid namespace"),
    ({"namespace": "n" * 64}, "namespace", "not a valid namespace"),
    ({"image": "Registry/UPPER:tag"}, "image", "not a valid image reference"),
    ({"image": "repo@sha256:abc"}, "image", "not a valid image reference"),
    ({"require_image_digest": True}, "image", "has no @sha256: digest"),
    ({"image_pull_policy": "Sometimes"}, "image_pull_policy", "'Always', 'IfNotPresent' or 'Never'"),
    ({"image_pull_secrets": ["Bad_Secret"]}, "image_pull_secrets", "not a valid Kubernetes object name"),
    ({"processes": 0}, "processes", "greater than or equal to 1"),
    ({"processes": "three"}, "processes", "valid integer"),
    ({"processes": 3, "slots_per_worker": 2}, "processes", "not a multiple of slots_per_worker=2"),
    ({"gpus_per_process": -1}, "gpus_per_process", "greater than or equal to 0"),
    ({"gpu_resource": "gpu"}, "gpu_resource", "extended resource name"),
    ({"cpu": "lots"}, "cpu", "not a positive Kubernetes quantity"),
    ({"memory": "-4Gi"}, "memory", "not a positive Kubernetes quantity"),
    ({"shm_size": "0"}, "shm_size", "not a positive Kubernetes quantity"),
    ({"data_pvc": "Bad_PVC"}, "data_pvc", "not a valid Kubernetes object name"),
    ({"data_pvc": "data", "data_mount_path": "mnt"}, "data_mount_path", "absolute path"),
    ({"data_mount_path": "/data"}, "data_mount_path", "set but data_pvc is not"),
    ({"project_dir": "/"}, "project_dir", "absolute path other than '/'"),
    ({"env": {"HF_TOKEN": CANARY}}, "env.HF_TOKEN", "looks like a credential"),
    ({"env": {"MLFLOW_RUN_ID": "x"}}, "env.MLFLOW_RUN_ID", "set by the backend itself"),
    ({"env": {"1BAD": "x"}}, "env.1BAD", "not a valid environment variable name"),
    ({"env": {"NUM_WORKERS": 4}}, "env.NUM_WORKERS", "valid string"),
    ({"secret_env": {"HF_TOKEN": {"secret": "hf"}}}, "secret_env.HF_TOKEN.key", "required"),
    ({"secret_env": {"HF_TOKEN": {"secret": "hf", "key": "t", "value": CANARY}}}, "secret_env.HF_TOKEN.value",
     "unknown key"),
    ({"secret_env": {"HF_TOKEN": {"secret": "Bad Name", "key": "t"}}}, "secret_env.HF_TOKEN.secret",
     "not a valid Kubernetes object name"),
    ({"env": {"NCCL_DEBUG": "INFO"}, "secret_env": {"NCCL_DEBUG": {"secret": "s", "key": "k"}}},
     "secret_env.NCCL_DEBUG", "also set in env"),
    ({"tracking_uri": f"https://mlflow:{CANARY}@mlflow.example.com"}, "tracking_uri", "must not embed a password"),
    ({"tracking_uri": "mlflow.lane-detection.svc:5000/x"}, "tracking_uri", "needs a scheme"),
    ({"node_selector": {"agentpool": "gpu pool"}}, "node_selector", "not a valid label value"),
    ({"tolerations": [{"key": "sku", "operator": "Exists", "value": "gpu"}]}, "tolerations[0]",
     "value must be empty when operator is 'Exists'"),
    ({"tolerations": [{"key": "sku", "effect": "Sometimes"}]}, "tolerations[0].effect", "'NoSchedule'"),
    ({"tolerations": [{"kee": "sku"}]}, "tolerations[0].kee", "unknown key (did you mean 'key'?)"),
    ({"scheduler": "volcano"}, "scheduler", "'default' or 'runai'"),
    ({"scheduler": "runai"}, "runai_project", "required when scheduler is 'runai'"),
    # (a Run:AI project in a namespace other than runai-<project> is accepted with a warning:
    # tests/test_backend_model_volume.py::test_runai_project_in_a_custom_namespace_is_a_warning)
    ({"snapshot": {"model": True, "model_pvc": "models", "model_mount_path": "models"}},
     "snapshot.model_mount_path", "must be an absolute path"),
    ({"data_pvc": "data", "snapshot": {"model": True, "model_pvc": "models", "model_mount_path": "/mnt/m"}},
     "snapshot.model_mount_path", "is inside data_mount_path '/mnt'"),
    ({"runai_project": "lane-detection"}, "runai_project", "only used with scheduler 'runai'"),
    ({"mpi_implementation": "OpenMPI5"}, "mpi_implementation", "'OpenMPI', 'Intel' or 'MPICH'"),
    ({"launcher": "srun"}, "launcher", "'horovodrun' or 'mpirun'"),
    ({"launcher_creation_policy": "Eventually"}, "launcher_creation_policy", "'WaitForWorkersReady'"),
    ({"clean_pod_policy": "Some"}, "clean_pod_policy", "'Running'"),
    ({"ttl_seconds_after_finished": -1}, "ttl_seconds_after_finished", "greater than or equal to 0"),
    ({"active_deadline_seconds": 0}, "active_deadline_seconds", "greater than 0"),
    ({"backoff_limit": 1000}, "backoff_limit", "less than or equal to 100"),
    ({"snapshot": {"data": True}}, "snapshot.data", "needs data_pvc"),
    ({"snapshot": {"modle": True}}, "snapshot.modle", "unknown key (did you mean 'model'?)"),
    ({"snapshot": {"model_pvc": "models"}}, "snapshot.model_pvc", "set but snapshot.model is false"),
    ({"snapshot": {"timeout_seconds": 0}}, "snapshot.timeout_seconds", "greater than 0"),
    ({"snapshot": {"snapshot_class": "Bad Class"}}, "snapshot.snapshot_class", "not a valid Kubernetes object"),
    ({"job_name": "9lives"}, "job_name", "DNS-1035"),
    ({"job_name": "j" * 60}, "job_name", "would exceed 63 characters"),
    ({"labels": {"bad key!": "v"}}, "labels", "not a valid label key"),
    ({"annotations": {"bad key!": "v"}}, "annotations", "not a valid annotation key"),
    ({"poll_interval_seconds": 0}, "poll_interval_seconds", "greater than 0"),
    ({"mpi_args": ["--bind-to\nnone"]}, "mpi_args", "NUL or newline"),
    ({"service_account": "Launcher SA"}, "service_account", "not a valid Kubernetes object name"),
    ({"wait": "sometimes"}, "wait", "valid boolean"),
    ({"build_image": True}, "--build-image", "runs the prebuilt `image`"),
    ({"ENV_MANAGER": "conda"}, "--env-manager=conda", "the image provides the environment"),
]


def _ids() -> list[str]:
    return [f"{i:02d}-{key}" for i, (_, key, _) in enumerate(BAD)]


def _config(over: dict[str, Any]) -> dict[str, Any]:
    cfg = {**BASE, **over}
    return {k: v for k, v in cfg.items() if v is not None}


def test_there_are_plenty_of_bad_configs() -> None:
    assert len(BAD) >= 30
    assert len({key for _, key, _ in BAD}) >= 30  # and they name different keys


@pytest.mark.parametrize(("over", "key", "fragment"), BAD, ids=_ids())
def test_bad_config_one_clear_error_naming_the_key(over: dict[str, Any], key: str, fragment: str) -> None:
    with pytest.raises(BackendConfigError) as err:
        load_backend_config(_config(over))
    assert len(err.value.problems) == 1, err.value.problems
    problem = err.value.problems[0]
    assert problem.startswith(f"{key}: ") or problem.startswith(f"{key}="), problem
    assert fragment in problem
    assert CANARY not in str(err.value)  # a rejected value is never echoed when it may be a secret


def test_bad_configs_submit_nothing(k8s_server, k8s_objects, kubeconfig_path, mlflow_store,
                                    sim_project) -> None:
    k8s_objects.namespace("lane-detection")
    mark = k8s_server.mark()
    backend = MPIJobBackend()
    for over, key, fragment in BAD:
        cfg = {**_config(over), "kubeconfig": str(kubeconfig_path), "tracking_uri": "http://mlflow:5000"}
        if "tracking_uri" in over:
            cfg["tracking_uri"] = over["tracking_uri"]
        with pytest.raises(ExecutionException) as err:
            backend.run(str(sim_project), "train", {}, None, cfg, mlflow_store.uri, mlflow_store.experiment_id)
        assert key in str(err.value) and fragment in str(err.value), (key, str(err.value))
    assert k8s_server.requests(mark) == []  # not even a read: validation comes first
    assert mlflow_store.client().search_runs([mlflow_store.experiment_id]) == []


def test_config_from_file_string_and_mapping(tmp_path: Path) -> None:
    cfg = {**BASE, "processes": 3, "gpus_per_process": 1, "data_pvc": "tusimple-data"}
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    from_file = load_backend_config(str(path))
    assert from_file == load_backend_config(json.dumps(cfg)) == load_backend_config(cfg)
    assert from_file.workers == 3 and from_file.launcher_creation_policy == "WaitForWorkersReady"
    assert from_file.clean_pod_policy == "Running" and from_file.shm_size == "8Gi"
    # MLflow's own keys (what `mlflow run` adds to every backend config) are accepted and dropped
    with_mlflow = {**cfg, "ENV_MANAGER": "local", "SYNCHRONOUS": False, "DOCKER_ARGS": {}, "STORAGE_DIR": None,
                   "build_image": False, "docker_auth": None}
    assert load_backend_config(with_mlflow) == from_file


@pytest.mark.parametrize(("text", "message"), [
    ('{"namespace": "lane",\n "image": }', "cfg.json:2:11: invalid JSON"),
    ('["namespace"]', "(top level): expected a JSON object, got list"),
])
def test_bad_config_files_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "cfg.json"
    path.write_text(text)
    with pytest.raises(BackendConfigError) as err:
        load_backend_config(str(path))
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_missing_config_file_and_bad_json_string(tmp_path: Path) -> None:
    with pytest.raises(BackendConfigError, match=r"nope\.json: file not found"):
        load_backend_config(str(tmp_path / "nope.json"))
    with pytest.raises(BackendConfigError, match=r"line 1 column 15: invalid JSON"):
        load_backend_config('{"namespace": ,}')


def test_public_dict_holds_what_was_set_and_no_secret_values() -> None:
    cfg = load_backend_config({**BASE, "processes": 2, "secret_env": {"HF_TOKEN": {"secret": "hf", "key": "t"}}})
    public = cfg.public_dict()
    assert public["processes"] == 2 and public["secret_env"] == {"HF_TOKEN": {"secret": "hf", "key": "t"}}
    assert "shm_size" not in public  # defaults are left out


@pytest.mark.parametrize(("client_uri", "message"), [
    ("sqlite:///mlflow.db", "the pods cannot reach this machine's tracking store 'sqlite:///mlflow.db'"),
    ("file:///tmp/mlruns", "the pods cannot reach"),
    ("http://localhost:5000", "the pods cannot reach"),
    (f"https://me:{CANARY}@mlflow.example.com", "embeds a password"),
])
def test_pod_tracking_uri_must_be_reachable(client_uri: str, message: str) -> None:
    cfg = MPIJobBackendConfig(**BASE)
    with pytest.raises(BackendConfigError) as err:
        pod_tracking_uri(cfg, client_uri)
    assert message in str(err.value) and CANARY not in str(err.value)
    assert pod_tracking_uri(cfg, "https://mlflow.example.com") == "https://mlflow.example.com"
    explicit = MPIJobBackendConfig(**BASE, tracking_uri="http://mlflow.lane-detection.svc:5000")
    assert pod_tracking_uri(explicit, client_uri) == "http://mlflow.lane-detection.svc:5000"
