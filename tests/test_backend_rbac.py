"""The mpijob backend and its launcher under the RBAC that ``k8s/`` grants (built with ``kubectl kustomize``).

The API emulator authorises every request of these identities against the Roles and bindings of
``k8s/cluster`` + ``k8s/overlays/aks-anf`` (``tests/doubles/rbac.py``): the submitter is a user in the
``lane-detection-researchers`` group (the placeholder group the RoleBinding names), the launcher pod runs as
``system:serviceaccount:lane-detection:mlflow-anf-launcher``. A verb the code uses and the manifests do not grant is
a 403 here, as it would be on AKS.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.doubles import rbac
from tests.doubles.mpi_operator_sim import MPIOperatorSim
from tests.test_backend_lifecycle import make_config, submit
from tests.support.snapshot_tags import snapshot_fields

NS = "lane-detection"
LAUNCHER_SA = "mlflow-anf-launcher"
RESEARCHERS = "lane-detection-researchers"


@pytest.fixture(scope="module")
def granted() -> list[dict[str, Any]]:
    return rbac.rbac_objects(rbac.build_kustomization("cluster") + rbac.build_kustomization("overlays/aks-anf"))


@pytest.fixture
def cluster(k8s_server: Any, k8s_objects: Any, granted: list[dict[str, Any]]) -> Any:
    k8s_server.apply(granted)
    k8s_objects.snapshot_class("anf-snapclass", default=True)
    k8s_objects.pvc("tusimple-data", NS, size="100Gi")
    return k8s_server


@pytest.fixture
def submitter_kubeconfig(cluster: Any, tmp_path: Path) -> Path:
    token = cluster.add_identity(rbac.user("alice@example.com", RESEARCHERS))
    return cluster.write_kubeconfig(tmp_path / "submitter-kubeconfig", token=token, namespace=NS)


@pytest.fixture
def launcher_operator(cluster: Any, tmp_path: Path) -> Any:
    """The MPI operator simulator whose launcher reaches the API server as the launcher's service account."""
    token = cluster.service_account_token(NS, LAUNCHER_SA)
    kubeconfig = cluster.write_kubeconfig(tmp_path / "launcher-kubeconfig", token=token, namespace=NS)
    sim = MPIOperatorSim(kubeconfig=kubeconfig).install(cluster)
    yield sim
    sim.wait_idle()
    if sim.runner_errors:
        raise AssertionError(f"launcher runner crashed: {sim.runner_errors!r}")


def _denied(server: Any) -> list[str]:
    return [f"{r.verb} {r.plural} {r.path}" for r in server.requests() if r.status == 403]


def test_a_run_with_data_and_model_snapshots_needs_only_what_k8s_grants(
        cluster: Any, k8s_objects: Any, submitter_kubeconfig: Path, launcher_operator: Any, mlflow_store: Any,
        sim_project: Path, snapshot_controller: Any) -> None:
    cfg = make_config(submitter_kubeconfig, mlflow_store, sim_project, namespace=NS, service_account=LAUNCHER_SA,
                      snapshot={"data": True, "model": True})
    run = submit(cfg, mlflow_store, sim_project)
    assert run.wait() is True, mlflow_store.client().get_run(run.run_id).data.tags
    launcher = k8s_objects.list("MPIJob", NS)[0]["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]
    assert launcher["serviceAccountName"] == LAUNCHER_SA
    info = mlflow_store.client().get_run(run.run_id)
    assert info.info.status == "FINISHED"
    assert {"mlflow_anf.snapshot.data.name", "mlflow_anf.snapshot.model.name"} <= set(snapshot_fields(info.data.tags))
    assert _denied(cluster) == []


def test_cancel_with_the_submitters_rights(cluster: Any, k8s_objects: Any, submitter_kubeconfig: Path,
                                           launcher_operator: Any, mlflow_store: Any, sim_project: Path) -> None:
    cfg = make_config(submitter_kubeconfig, mlflow_store, sim_project, namespace=NS, service_account=LAUNCHER_SA)
    run = submit(cfg, mlflow_store, sim_project, sleep=30)
    run.cancel()
    assert mlflow_store.client().get_run(run.run_id).info.status == "KILLED"
    for kind in ("Pod", "Job", "ConfigMap", "Service", "MPIJob"):
        assert k8s_objects.list(kind, NS) == [], kind
    # k8s/base/rbac.yaml: the submitter may not read Secrets; the cancel check skips them (trusting the GC)
    assert set(_denied(cluster)) == {f"list secrets /api/v1/namespaces/{NS}/secrets"}  # once per check round


def test_the_launcher_account_cannot_submit_or_delete_jobs(cluster: Any, tmp_path: Path) -> None:
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    path = cluster.write_kubeconfig(tmp_path / "kc", token=cluster.service_account_token(NS, LAUNCHER_SA))
    conf = client.Configuration()
    config.load_kube_config(str(path), client_configuration=conf, persist_config=False)
    custom = client.CustomObjectsApi(client.ApiClient(conf))
    with pytest.raises(ApiException) as exc:
        custom.list_namespaced_custom_object("kubeflow.org", "v2beta1", NS, "mpijobs")
    assert exc.value.status == 403
    assert json.loads(exc.value.body)["message"] == (
        'mpijobs.kubeflow.org is forbidden: User "system:serviceaccount:lane-detection:mlflow-anf-launcher" cannot '
        'list resource "mpijobs" in API group "kubeflow.org" in the namespace "lane-detection"')


# ---- the snapshot budget and snapshot.keep_last -----------------------------------------------------------------


def _managed(run: str, stamp: str) -> dict[str, Any]:
    from mlflow_anf.vocabulary import ANNOTATION_CREATED_AT, LABEL_MANAGED_BY, LABEL_RUN_ID, LABEL_SOURCE_PVC

    return {"labels": {LABEL_MANAGED_BY: "mlflow-anf", LABEL_RUN_ID: run, LABEL_SOURCE_PVC: "tusimple-data"},
            "annotations": {ANNOTATION_CREATED_AT: stamp}}


def test_a_run_whose_two_snapshots_do_not_fit_is_refused_before_training(
        cluster: Any, k8s_objects: Any, submitter_kubeconfig: Path, launcher_operator: Any, mlflow_store: Any,
        sim_project: Path, snapshot_controller: Any) -> None:
    from mlflow.exceptions import ExecutionException

    for i in range(254):  # ANF: 255 per volume; the data snapshot would fit, the model snapshot would not
        k8s_objects.volume_snapshot(f"old-{i:03d}", "tusimple-data", NS, snapshot_class="anf-snapclass")
    k8s_objects.volume_snapshot("other-pvc", "elsewhere", NS, snapshot_class="anf-snapclass")  # not counted
    cfg = make_config(submitter_kubeconfig, mlflow_store, sim_project, namespace=NS, service_account=LAUNCHER_SA,
                      snapshot={"data": True, "model": True})
    with pytest.raises(ExecutionException) as exc:
        submit(cfg, mlflow_store, sim_project)
    message = str(exc.value)
    assert "snapshot budget" in message and f"PVC {NS}/tusimple-data: 254 VolumeSnapshots exist" in message
    assert "takes 2 more" in message and "limit of 255" in message and "snapshot.keep_last" in message
    assert k8s_objects.list("MPIJob", NS) == []  # nothing submitted, no hours of training lost
    assert len(k8s_objects.list("VolumeSnapshot", NS)) == 255  # and no snapshot taken
    (run,) = mlflow_store.client().search_runs([mlflow_store.experiment_id])
    assert run.info.status == "FAILED" and "snapshot budget" in run.data.tags["mlflow_anf.backend.error"]
    assert _denied(cluster) == []


def test_keep_last_deletes_the_oldest_managed_snapshots_after_a_success_as_the_launcher(
        cluster: Any, k8s_objects: Any, submitter_kubeconfig: Path, launcher_operator: Any, mlflow_store: Any,
        sim_project: Path, snapshot_controller: Any) -> None:
    for i, name in enumerate(("old-1", "old-2", "old-3")):
        k8s_objects.volume_snapshot(name, "tusimple-data", NS, snapshot_class="anf-snapclass",
                                    **_managed(f"run{i}", f"2026-01-0{i + 1}T00:00:00.000000Z"))
    k8s_objects.volume_snapshot("in-flight", "tusimple-data", NS, snapshot_class="anf-snapclass", ready=False,
                                **_managed("run9", "2026-01-04T00:00:00.000000Z"))
    k8s_objects.volume_snapshot("by-hand", "tusimple-data", NS, snapshot_class="anf-snapclass")  # not ours
    cfg = make_config(submitter_kubeconfig, mlflow_store, sim_project, namespace=NS, service_account=LAUNCHER_SA,
                      snapshot={"data": True, "model": True, "keep_last": 2})
    run = submit(cfg, mlflow_store, sim_project)
    assert run.wait() is True
    launcher_operator.wait_idle()
    tags = snapshot_fields(mlflow_store.client().get_run(run.run_id).data.tags)
    mine = {tags["mlflow_anf.snapshot.data.name"], tags["mlflow_anf.snapshot.model.name"]}
    left = {s["metadata"]["name"] for s in k8s_objects.list("VolumeSnapshot", NS)}
    assert left == mine | {"in-flight", "by-hand"}, launcher_operator.pod_log(NS, _launcher_pod(k8s_objects))
    assert _denied(cluster) == []


def test_keep_last_never_runs_after_a_failure(cluster: Any, k8s_objects: Any, submitter_kubeconfig: Path,
                                              launcher_operator: Any, mlflow_store: Any, sim_project: Path,
                                              snapshot_controller: Any) -> None:
    k8s_objects.volume_snapshot("old-1", "tusimple-data", NS, snapshot_class="anf-snapclass",
                                **_managed("run0", "2026-01-01T00:00:00.000000Z"))
    cfg = make_config(submitter_kubeconfig, mlflow_store, sim_project, namespace=NS, service_account=LAUNCHER_SA,
                      snapshot={"data": True, "keep_last": 1})
    run = submit(cfg, mlflow_store, sim_project, fail=3)
    assert run.wait() is False
    launcher_operator.wait_idle()
    assert "old-1" in {s["metadata"]["name"] for s in k8s_objects.list("VolumeSnapshot", NS)}


def _launcher_pod(k8s_objects: Any) -> str:
    return next((p["metadata"]["name"] for p in k8s_objects.list("Pod", NS) if "launcher" in p["metadata"]["name"]),
                "")


def test_a_rejected_job_is_explained_by_its_events_selected_on_the_server(
        cluster: Any, submitter_kubeconfig: Path, launcher_operator: Any, mlflow_store: Any,
        sim_project: Path) -> None:
    from mlflow_anf.backend.submitted_run import MPIJobSubmitTimeout

    launcher_operator.behave("*", validation_error="spec.mpiReplicaSpecs[Worker].template: quota 'gpu' exceeded")
    cfg = make_config(submitter_kubeconfig, mlflow_store, sim_project, namespace=NS, service_account=LAUNCHER_SA,
                      submit_timeout_seconds=0.6)
    run = submit(cfg, mlflow_store, sim_project)
    with pytest.raises(MPIJobSubmitTimeout) as err:
        run.wait()
    assert "quota 'gpu' exceeded" in str(err.value)
    lists = [r for r in cluster.requests() if r.plural == "events" and r.verb == "list"]
    # involvedObject.name/kind are field labels a real server accepts: no unfiltered fallback list is needed
    assert [(r.status, r.query.get("fieldSelector")) for r in lists] == [
        (200, f"involvedObject.name={run.name},involvedObject.kind=MPIJob")]
    assert _denied(cluster) == []


def test_doctor_as_the_submitter_sees_what_the_manifests_grant(cluster: Any, k8s_objects: Any,
                                                               submitter_kubeconfig: Path) -> None:
    from click.testing import CliRunner

    from mlflow_anf.cli import main

    k8s_objects.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "mlflow", "namespace": NS},
                        "spec": {"ports": [{"port": 5000}]}})
    cfg = {"namespace": NS, "image": "registry.example.com/lanedet@sha256:" + "b" * 64,
           "kubeconfig": str(submitter_kubeconfig), "data_pvc": "tusimple-data",
           "tracking_uri": f"http://mlflow.{NS}.svc.cluster.local:5000", "snapshot": {"data": True, "model": True}}
    result = CliRunner().invoke(main, ["doctor", "-c", json.dumps(cfg), "--tracking-uri", "sqlite:///local.db"])
    assert "RBAC" in result.output and "every verb the backend needs is allowed" in result.output, result.output
    assert _denied(cluster) == [], result.output
    # the same doctor as someone the manifests do not bind sees the denials
    stranger = cluster.write_kubeconfig(submitter_kubeconfig.parent / "stranger",
                                        token=cluster.add_identity(rbac.user("mallory")), namespace=NS)
    result = CliRunner().invoke(main, ["doctor", "-c", json.dumps({**cfg, "kubeconfig": str(stranger)}),
                                       "--tracking-uri", "sqlite:///local.db"])
    assert result.exit_code != 0 and "denied create mpijobs" in result.output, result.output


def _bind_without_snapshot_list(cluster: Any, granted: list[dict[str, Any]], user: str) -> None:
    """The submitter Role of k8s/base/rbac.yaml less ``list`` on volumesnapshots, bound to *user* alone."""
    import copy

    role = copy.deepcopy(next(o for o in granted if o["kind"] == "Role"
                              and o["metadata"]["name"].endswith("mlflow-anf-submitter")))
    for rule in role["rules"]:
        if "volumesnapshots" in rule.get("resources", []):
            rule["verbs"] = [v for v in rule["verbs"] if v != "list"]
    role["metadata"] = {"name": "no-snapshot-list", "namespace": NS}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "no-snapshot-list", "namespace": NS},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "no-snapshot-list"},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}
    cluster.apply([role, binding])


@pytest.mark.parametrize("snapshot", [{"data": True}, {"data": False, "model": True}])
def test_doctor_requires_listing_snapshots_for_the_budget_check(cluster: Any, k8s_objects: Any,
                                                                submitter_kubeconfig: Path,
                                                                granted: list[dict[str, Any]],
                                                                snapshot: dict[str, bool]) -> None:
    """The backend lists VolumeSnapshots as the submitter before submitting (mlflow_anf/backend/budget.py), for a
    model snapshot alone too: doctor names a missing ``list``; with the shipped Role it is ok."""
    from click.testing import CliRunner

    from mlflow_anf.cli import main

    cfg = {"namespace": NS, "image": "registry.example.com/lanedet@sha256:" + "b" * 64,
           "kubeconfig": str(submitter_kubeconfig), "data_pvc": "tusimple-data", "service_account": LAUNCHER_SA,
           "snapshot": snapshot}
    result = CliRunner().invoke(main, ["doctor", "-c", json.dumps(cfg), "--tracking-uri", "sqlite:///local.db"])
    assert "[ ok ] RBAC" in result.output, result.output
    _bind_without_snapshot_list(cluster, granted, "bob@example.com")
    bob = cluster.write_kubeconfig(submitter_kubeconfig.parent / "bob", namespace=NS,
                                   token=cluster.add_identity(rbac.user("bob@example.com")))
    result = CliRunner().invoke(main, ["doctor", "-c", json.dumps({**cfg, "kubeconfig": str(bob)}),
                                       "--tracking-uri", "sqlite:///local.db"])
    assert result.exit_code != 0, result.output
    assert "[FAIL] RBAC: in lane-detection: denied list volumesnapshots (check the snapshot budget" in result.output


def test_doctor_shows_what_the_launcher_needs_for_keep_last(cluster: Any, submitter_kubeconfig: Path) -> None:
    """snapshot.keep_last deletes VolumeSnapshots from the launcher, as its service account (k8s/base/rbac.yaml,
    Role mlflow-anf-launcher): doctor says so, and warns when no service_account is configured."""
    from click.testing import CliRunner

    from mlflow_anf.cli import main

    cfg = {"namespace": NS, "image": "registry.example.com/lanedet@sha256:" + "b" * 64,
           "kubeconfig": str(submitter_kubeconfig), "data_pvc": "tusimple-data", "service_account": LAUNCHER_SA,
           "snapshot": {"data": True, "model": True, "keep_last": 3}}
    result = CliRunner().invoke(main, ["doctor", "-c", json.dumps(cfg), "--tracking-uri", "sqlite:///local.db"])
    line = next(x for x in result.output.splitlines() if "RBAC" in x)
    assert line.startswith("[ ok ] RBAC"), result.output
    assert f"the launcher (service account {LAUNCHER_SA}) needs create, get, list, watch, delete volumesnapshots" \
        in line and "snapshot.keep_last" in line, line
    del cfg["service_account"]
    result = CliRunner().invoke(main, ["doctor", "-c", json.dumps(cfg), "--tracking-uri", "sqlite:///local.db"])
    assert "[warn] RBAC" in result.output and "service_account" in result.output, result.output


def test_what_doctor_says_the_launcher_needs_the_manifests_grant(granted: list[dict[str, Any]]) -> None:
    from mlflow_anf.backend.config import load_backend_config
    from mlflow_anf.backend.doctor import launcher_access

    cfg = load_backend_config({"namespace": NS, "image": "x.io/y:1", "data_pvc": "tusimple-data",
                               "service_account": LAUNCHER_SA, "snapshot": {"model": True, "keep_last": 2}})
    needs = launcher_access(cfg)
    assert ("delete", "snapshot.storage.k8s.io", "volumesnapshots", "", "snapshot.keep_last") in needs
    account = rbac.service_account(NS, LAUNCHER_SA)
    for verb, group, resource, sub, _why in needs:
        assert rbac.allowed(granted, account, rbac.Attributes(verb, group, resource, sub, NS)), (verb, resource)
