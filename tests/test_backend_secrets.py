"""Canary: a secret put anywhere into the ``mpijob`` backend's input is refused with a clear error when it is a plain
value, and never written anywhere (manifests, run tags and params, artifacts, logs, the API server) when it is passed
properly, through ``secret_env`` (a reference to a Kubernetes Secret)."""

from __future__ import annotations

import base64
import copy
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from mlflow.exceptions import ExecutionException

from mlflow_anf.backend.config import BackendConfigError, load_backend_config
from mlflow_anf.backend.plugin import MPIJobBackend
from tests.test_backend_lifecycle import NS, make_config, read_artifact

CANARY = "cAnArY-5e1f0d2c9b8a7364"
CANARY_B64 = base64.b64encode(CANARY.encode()).decode()

# Every place of the backend config (and -P) where a plain secret can go: (id, config overrides, params, the key
# the error must name).
PLAIN: list[tuple[str, dict[str, Any], dict[str, str], str]] = [
    ("env-storage-key", {"env": {"AZURE_STORAGE_KEY": CANARY}}, {}, "env.AZURE_STORAGE_KEY"),
    ("env-db-pass", {"env": {"DB_PASS": CANARY}}, {}, "env.DB_PASS"),
    ("env-hf-token", {"env": {"HF_TOKEN": CANARY}}, {}, "env.HF_TOKEN"),
    ("env-url-password", {"env": {"DATABASE_URL": f"postgresql://lane:{CANARY}@db.example.com/lanes"}}, {},
     "env.DATABASE_URL"),
    ("env-connection-string", {"env": {"STORAGE": f"AccountName=lane;AccountKey={CANARY};"}}, {}, "env.STORAGE"),
    ("tracking-uri-password", {"tracking_uri": f"https://lane:{CANARY}@mlflow.example.com"}, {}, "tracking_uri"),
    ("tracking-uri-token-user", {"tracking_uri": f"https://{CANARY}@mlflow.example.com"}, {}, "tracking_uri"),
    ("tracking-uri-token-query", {"tracking_uri": f"https://mlflow.example.com/?token={CANARY}"}, {},
     "tracking_uri"),
    ("annotation-secret-key", {"annotations": {"example.com/db-password": CANARY}}, {},
     "annotations.example.com/db-password"),
    ("annotation-secret-value", {"annotations": {"example.com/note": f"Authorization: Bearer {CANARY}"}}, {},
     "annotations.example.com/note"),
    ("label-secret-key", {"labels": {"example.com/token": CANARY}}, {}, "labels.example.com/token"),
    ("node-selector-secret-key", {"node_selector": {"example.com/api-key": CANARY}}, {},
     "node_selector.example.com/api-key"),
    ("mpi-arg", {"mpi_args": ["-x", f"DB_PASSWORD={CANARY}"]}, {}, "mpi_args[1]"),
    ("kube-context", {"kube_context": f"https://lane:{CANARY}@k8s.example.com"}, {}, "kube_context"),
    ("param-secret-name", {}, {"db_password": CANARY}, "-P db_password"),
    ("param-secret-value", {}, {"data_dir": f"s3://lane:{CANARY}@bucket/tusimple"}, "-P data_dir"),
]


def _all_api_objects(server: Any) -> list[dict[str, Any]]:
    """Every version of every object the emulated API server ever stored (deleted ones included)."""
    def run() -> list[dict[str, Any]]:
        out = []
        for _key, obj in server._api().store.items():
            out += [copy.deepcopy(v.raw) for v in obj.history if v is not None]
        return out

    return server.call(run)


def _files_under(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize(("over", "params", "key"), [p[1:] for p in PLAIN], ids=[p[0] for p in PLAIN])
def test_plain_secret_is_refused_naming_the_key(over, params, key, k8s_server, k8s_objects,
                                                kubeconfig_path, mlflow_store, sim_project, capsys,
                                                caplog) -> None:
    caplog.set_level(logging.DEBUG)
    k8s_objects.namespace(NS)
    mark = k8s_server.mark()
    cfg = make_config(kubeconfig_path, mlflow_store, sim_project, **over)
    with pytest.raises(ExecutionException) as err:
        MPIJobBackend().run(str(sim_project), "train", params, None, cfg, mlflow_store.uri, mlflow_store.experiment_id)
    message = str(err.value)
    assert f"{key}: " in message, message
    assert "secret_env" in message, message  # says how to pass it properly
    captured = capsys.readouterr()
    assert CANARY not in message + captured.out + captured.err + caplog.text
    assert k8s_server.requests(mark) == []  # nothing submitted, not even read
    assert mlflow_store.client().search_runs([mlflow_store.experiment_id]) == []  # no run, no tag, no artifact
    assert CANARY.encode() not in (mlflow_store.root / "mlflow.db").read_bytes()


def test_a_client_tracking_uri_with_a_token_is_not_handed_to_the_pods(k8s_server, k8s_objects,
                                                                       kubeconfig_path, mlflow_store,
                                                                       sim_project) -> None:
    cfg = make_config(kubeconfig_path, mlflow_store, sim_project)
    del cfg["tracking_uri"]
    for client_uri in (f"https://lane:{CANARY}@mlflow.example.com", f"https://mlflow.example.com/?token={CANARY}"):
        with pytest.raises(ExecutionException) as err:
            MPIJobBackend().run(str(sim_project), "train", {}, None, cfg, client_uri, mlflow_store.experiment_id)
        assert "tracking_uri" in str(err.value) and CANARY not in str(err.value)


# Strings a secret could be typed into, each with a format validator or none: whichever refuses it, the error names
# the key and never repeats the secret.
_STRING_FIELDS = ["namespace", "kubeconfig", "kube_context", "job_name", "image", "project_dir", "gpu_resource",
                  "cpu", "memory", "launcher_cpu", "launcher_memory", "data_pvc", "data_mount_path", "shm_size",
                  "tracking_uri", "runai_project", "priority_class", "service_account"]
_SECRET_SHAPES = {"url": f"https://lane:{CANARY}@h.example.com/x", "pair": f"password={CANARY}",
                  "bearer": f"Bearer {CANARY}"}


@pytest.mark.parametrize("shape", sorted(_SECRET_SHAPES))
def test_a_secret_in_any_string_field_is_refused_and_never_echoed(shape: str) -> None:
    value = _SECRET_SHAPES[shape]
    base = {"namespace": "lane", "image": "registry.example.com/lanedet:0.1.0", "data_pvc": "data"}
    places: dict[str, dict[str, Any]] = {f: {f: value} for f in _STRING_FIELDS}
    places |= {"image_pull_secrets": {"image_pull_secrets": [value]}, "mpi_args": {"mpi_args": [value]},
               "env.NOTE": {"env": {"NOTE": value}}, "labels.team": {"labels": {"team": value}},
               "annotations.example.com/note": {"annotations": {"example.com/note": value}},
               "node_selector.pool": {"node_selector": {"pool": value}},
               "tolerations[0]": {"tolerations": [{"key": "sku", "value": value}]},
               "snapshot.snapshot_class": {"snapshot": {"snapshot_class": value}},
               "snapshot.model_pvc": {"snapshot": {"model": True, "model_pvc": value}}}
    for key, over in places.items():
        with pytest.raises(BackendConfigError) as err:
            load_backend_config({**base, **over})
        field = key.split(".")[0].split("[")[0]  # a format error names the field, a secret check the entry
        assert any(p.startswith((key, f"{field}: ")) for p in err.value.problems), (key, err.value.problems)
        assert CANARY not in str(err.value), (key, str(err.value))


def test_secrets_passed_by_reference_are_written_nowhere(k8s_server, k8s_objects, kubeconfig_path,
                                                         mlflow_store, sim_project, mpi_operator,
                                                         tmp_path, capsys, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    k8s_objects.namespace(NS)
    names = ["AZURE_STORAGE_KEY", "DB_PASS", "DATABASE_URL", "MLFLOW_TRACKING_TOKEN", "CANARY_TOKEN"]
    k8s_objects.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "lane-secrets", "namespace": NS},
                        "data": {n.lower(): CANARY_B64 for n in names}})
    cfg = make_config(kubeconfig_path, mlflow_store, sim_project, follow_logs=True,
                      secret_env={n: {"secret": "lane-secrets", "key": n.lower()} for n in names},
                      env={"NCCL_DEBUG": "INFO"}, annotations={"example.com/owner": "lane team"},
                      labels={"team": "perception"})
    out = io.StringIO()
    run = MPIJobBackend(out=out).run(str(sim_project), "train", {"epochs": "2"}, None, cfg, mlflow_store.uri,
                                     mlflow_store.experiment_id)
    assert run.get_status() == "FINISHED"
    assert "rank 0 sees token ***" in out.getvalue(), out.getvalue()  # the followed log, scrubbed
    mpi_operator.wait_idle()

    info = mlflow_store.client().get_run(run.run_id)
    assert CANARY not in json.dumps({**info.data.params, **info.data.tags})
    assert json.loads(info.data.tags["mlflow_anf.backend.config"])["secret_env"]["DB_PASS"] == {
        "secret": "lane-secrets", "key": "db_pass"}  # the reference is recorded, for a resubmission
    artifacts = _files_under(mlflow_store.root / "artifacts")
    assert {"mpijob.yaml", "backend-config.json", "launcher.log"} <= {Path(p).name for p in artifacts}
    leaked = [p for p, data in artifacts.items() if CANARY.encode() in data or CANARY_B64.encode() in data]
    assert leaked == []
    assert CANARY.encode() not in (mlflow_store.root / "mlflow.db").read_bytes()
    # the training saw the secret (the stub prints CANARY_TOKEN on every rank), the log shows *** instead
    launcher_log = read_artifact(mlflow_store, run.run_id, "launcher.log", tmp_path)
    assert "rank 0 sees token ***" in launcher_log and "rank 1 sees token ***" in launcher_log

    objects = [o for o in _all_api_objects(k8s_server)
               if not (o.get("kind") == "Secret" and o["metadata"]["name"] == "lane-secrets")]
    assert any(o.get("kind") == "MPIJob" for o in objects) and any(o.get("kind") == "Pod" for o in objects)
    text = json.dumps(objects)
    assert CANARY not in text and CANARY_B64 not in text
    pods = {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in objects if o.get("kind") == "Pod"}
    assert all(CANARY not in mpi_operator.pod_log(ns, name) for ns, name in pods)
    bodies = k8s_server.call(lambda: [r.text for r in k8s_server._api()._requests])
    assert not [b for b in bodies if b and (CANARY in b or CANARY_B64 in b)]

    captured = capsys.readouterr()
    assert CANARY not in out.getvalue() + captured.out + captured.err + caplog.text
    assert CANARY not in "".join(os.environ.values())  # nothing leaked into this process's environment either
