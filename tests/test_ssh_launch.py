"""The production launch path, run for real (issue #14): ``mlflow run --backend mpijob`` → the MPIJob in the API
emulator → the simulated operator's pods as hosts of their own on this machine (network namespaces, sshd in the
workers, the operator's ssh keys, hostfile and environment in the launcher) → the rendered launcher command,
unchanged → ``horovodrun``/Open MPI's ``mpirun`` → ssh → two ranks of ``lanedet train`` on two worker hosts.

What each pod is and how it maps onto the operator's objects: tests/support/pod_network.py, netns_kubelet.py and
docs/distributed.md. These tests need root and network namespaces; where the kernel refuses them they fail with
the reason (PodNetworkRefused), they never skip.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlflow_anf.backend.plugin import MPIJobBackend
from mlflow_anf.vocabulary import parse_snapshot_tags
from tests.conftest import REPO_ROOT
from tests.doubles.mpi_operator_sim import MPIOperatorSim
from tests.support.netns_kubelet import Image, NetnsKubelet, start_api_relay
from tests.support.pod_network import PodNetwork
from tests.support.waiting import wait_for
from tests.support.tiny_data import make_tiny_tusimple

pytestmark = pytest.mark.slow

NS = "lane"
DATA_PVC = "tusimple-data"
RUN_BOUND_S = 300  # a failing launch must end the run well within this (its own timeouts are far shorter)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, tusimple_fixtures: Path) -> Path:
    """The data volume's content: a few synthetic TuSimple frames, prepared."""
    return make_tiny_tusimple(tmp_path_factory.mktemp("ssh-data"), tusimple_fixtures / "label_data_0313.json")


class Cluster:
    """The emulator, the operator simulator with the netns kubelet, the data volume and the MLflow store."""

    def __init__(self, k8s_server: Any, k8s_objects: Any, kubeconfig: Path, store: Any, tmp: Path,
                 dataset: Path, image: Image) -> None:
        self.k8s_objects, self.kubeconfig, self.store, self.tmp = k8s_objects, kubeconfig, store, tmp
        self.network = PodNetwork(tmp / "pods").start()
        self.volume = tmp / "anf-volume"  # the ReadWriteMany volume every pod mounts
        self.volume.mkdir()
        (self.volume / "tusimple").symlink_to(dataset, target_is_directory=True)
        self.mount = tmp / "mnt"  # data_mount_path: where the pods see it (an empty directory outside them)
        self.mount.mkdir()
        port = int(k8s_server.url.rsplit(":", 1)[1])
        self.relay = start_api_relay(port, tmp / "api.sock")
        self.kubelet = NetnsKubelet(self.network, image, {DATA_PVC: self.volume}, port,
                                    tmp / "api.sock")
        self.operator = MPIOperatorSim(kubeconfig=kubeconfig, kubelet=self.kubelet).install(k8s_server)
        k8s_objects.namespace(NS)
        k8s_objects.snapshot_class("anf-snapclass", default=True)
        k8s_objects.pvc(DATA_PVC, NS, size="100Gi")

    def config(self, **over: Any) -> dict[str, Any]:
        return {"namespace": NS, "kubeconfig": str(self.kubeconfig), "image": "registry.example.com/lanedet:0.1.0",
                "processes": 2, "gpus_per_process": 0, "mpi_implementation": "OpenMPI",
                "tracking_uri": self.store.uri, "project_dir": str(REPO_ROOT), "data_pvc": DATA_PVC,
                "data_mount_path": str(self.mount), "snapshot": {"data": True, "model": True},
                "env": {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"},
                "poll_interval_seconds": 0.2, "submit_timeout_seconds": 60, **over}

    def submit(self, name: str, cfg: dict[str, Any], **params: str) -> Any:
        mnt = self.mount
        values = {"data_dir": f"{mnt}/tusimple", "output_dir": f"{mnt}/models/{name}", "epochs": "1",
                  "batch_size": "4", "val_batch_size": "4", "backbone": "resnet18", "input_size": "64x128",
                  "num_workers": "0", "strategy": "horovod", **params}
        return MPIJobBackend().run(str(REPO_ROOT), "train", values, None, cfg, self.store.uri,
                                   self.store.experiment_id)

    def worker_names(self) -> list[str]:
        return sorted(n for n in self.network.pods if "-worker-" in n)

    def leftovers(self, wait_s: float = 30.0) -> dict[str, dict[int, str]]:
        """Job processes still in any pod (polled until none or *wait_s*: orted and ranks exit asynchronously)."""
        deadline = time.monotonic() + wait_s
        while True:
            left = {n: p for n in self.network.pods if (p := self.kubelet.job_processes(n))}
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.2)

    def close(self) -> None:
        self.operator.wait_idle(60)
        self.network.close()
        self.relay.terminate()
        self.relay.wait(10)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    """The image every pod runs (its /etc/ssh with host keys made once, as an image build bakes them in)."""
    return Image(tmp_path_factory.mktemp("image"))


@pytest.fixture
def cluster(k8s_server, k8s_objects, kubeconfig_path, mlflow_store, tmp_path, dataset, image,
            snapshot_controller) -> Iterator[Cluster]:
    c = Cluster(k8s_server, k8s_objects, kubeconfig_path, mlflow_store, tmp_path, dataset, image)
    try:
        yield c
    finally:
        c.close()


def _launcher_log(store: Any, run_id: str, tmp: Path) -> str:
    local = store.client().download_artifacts(run_id, "launcher.log", str(tmp / f"dl-{run_id}"))
    return Path(local).read_text()


@pytest.mark.parametrize("launcher", ["horovodrun", "mpirun"])
def test_two_ranks_train_across_two_worker_hosts(cluster: Cluster, launcher: str, tmp_path: Path) -> None:
    cfg = cluster.config(launcher=launcher)
    started = time.monotonic()
    run = cluster.submit(launcher, cfg)
    assert run.wait() is True, cluster.operator.pod_log(NS, next(iter(cluster.operator.logs))[1])
    wall = time.monotonic() - started
    info = cluster.store.client().get_run(run.run_id)
    assert info.info.status == "FINISHED"
    log = _launcher_log(cluster.store, run.run_id, tmp_path)
    # the command is the one the operator's environment gives: the hostfile's names, ssh, Open MPI
    workers = cluster.worker_names()
    assert len(workers) == 2
    if launcher == "horovodrun":
        assert "command: horovodrun -np 2 -H " + ",".join(f"{w}.{w.rsplit('-worker-', 1)[0]}.{NS}.svc:1"
                                                         for w in workers) in log
    else:
        assert "command: mpirun --allow-run-as-root -np 2 --hostfile /etc/mpi/hostfile" in log
    # each rank ran on its own worker host
    for rank, host in enumerate(workers):
        assert f"rank {rank}/2 on host {host} " in log, log[-3000:]
    assert socket.gethostname() not in {w for w in workers}
    # the model is on the shared volume, and the model snapshot is of that volume
    model_dir = cluster.volume / "models" / launcher / "model"
    assert (model_dir / "MLmodel").is_file()
    tags = info.data.tags
    refs = parse_snapshot_tags(tags)
    assert refs["model"].volume == refs["data"].volume == f"{NS}/{DATA_PVC}"
    assert tags["mlflow_anf.launcher.exit_code"] == "0"
    snaps = {s["metadata"]["name"] for s in cluster.k8s_objects.list("VolumeSnapshot", NS)}
    assert refs["model"].name in snaps
    assert float(info.data.metrics["test_accuracy"]) >= 0.0
    assert cluster.leftovers() == {}
    print(f"\n2-rank lanedet over ssh with {launcher}: launch command {launch_seconds(cluster):.1f} s, "
          f"{wall:.1f} s from submit to FINISHED")


def launch_seconds(cluster: Cluster) -> float:
    """From the launcher's ``command:`` line to its ``exit code`` line, by the pod log's timestamps."""
    import datetime as dt

    ((_, pod),) = [key for key in cluster.operator.logs if "-launcher-" in key[1]]
    lines = cluster.operator.logs[(NS, pod)].snapshot()

    def stamp(marker: str) -> float:
        text = next(t for t, line in lines if marker in line)
        return dt.datetime.strptime(text[:26], "%Y-%m-%dT%H:%M:%S.%f").timestamp()

    return stamp("[mlflow-anf launcher] exit code") - stamp("[mlflow-anf launcher] command: ")


def _kill_when(cluster: Cluster, pod: str, marker: str, what: str) -> threading.Thread:
    """SIGKILL the process in *pod* whose command line contains *what*, once the launcher log shows *marker*."""
    import os
    import signal

    def body() -> None:
        deadline = time.monotonic() + RUN_BOUND_S
        while time.monotonic() < deadline:
            logs = [cluster.operator.pod_log(ns, name) for ns, name in list(cluster.operator.logs)]
            if pod in cluster.network.pods and any(marker in text for text in logs):
                for pid, line in cluster.kubelet.job_processes(pod).items():
                    if what in line:
                        os.kill(pid, signal.SIGKILL)
                        return
            time.sleep(0.1)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("launcher", ["horovodrun", "mpirun"])
def test_a_rank_that_dies_fails_the_run_and_leaves_nothing(cluster: Cluster, launcher: str, tmp_path: Path) -> None:
    cfg = cluster.config(launcher=launcher)
    run = cluster.submit(f"dies-{launcher}", cfg, epochs="3")
    worker1 = wait_for(lambda: next((n for n in cluster.network.pods if n.endswith("-worker-1")), None),
                       "worker-1's pod", timeout=RUN_BOUND_S, interval=0.1)
    # rank 1 is killed (as the OOM killer would) once it has started training
    killer = _kill_when(cluster, worker1, f"rank 1/2 on host {worker1}", "project/run.py train")
    started = time.monotonic()
    assert run.wait() is False
    assert time.monotonic() - started < RUN_BOUND_S
    killer.join(5)
    info = cluster.store.client().get_run(run.run_id)
    assert info.info.status == "FAILED"
    log = _launcher_log(cluster.store, run.run_id, tmp_path)
    reason = info.data.tags["mlflow_anf.launcher.error"]
    assert "mpirun noticed that process rank 1" in reason and "signal 9" in reason, reason
    assert reason.split(": ", 1)[1] in log
    assert "model" not in parse_snapshot_tags(info.data.tags)  # no model snapshot of a failed run
    assert cluster.leftovers() == {}
    print(f"\n{launcher}, rank 1 killed: FAILED after {time.monotonic() - started:.1f} s: {reason}")


@pytest.mark.parametrize(("launcher", "fault"), [("mpirun", "sshd-down"), ("horovodrun", "sshd-down"),
                                               ("mpirun", "silent")])
def test_a_worker_that_ssh_cannot_reach_fails_the_run_and_leaves_nothing(cluster: Cluster, launcher: str, fault: str,
                                                                        tmp_path: Path) -> None:
    """worker-1 looks Running to the operator, but its sshd is gone (the container exited: connections refused) or
    its address is silent (nothing answers, nothing refuses: only ssh's ConnectTimeout from docker/ssh ends each of
    the operator's ConnectionAttempts=10; without it each attempt would wait for the kernel's SYN retries)."""
    cfg = cluster.config(launcher=launcher)
    original = cluster.kubelet.start_pod

    def start_pod(namespace: str, pod: Any, env: Any, get: Any) -> None:
        original(namespace, pod, env, get)
        name = pod["metadata"]["name"]
        if not name.endswith("-worker-1"):
            return
        if fault == "sshd-down":
            proc = cluster.kubelet.containers[name]
            proc.kill()
            proc.wait(10)
        else:
            cluster.network.pods[name].drop_replies()

    cluster.kubelet.start_pod = start_pod  # type: ignore[method-assign]
    started = time.monotonic()
    run = cluster.submit(f"{fault}-{launcher}", cfg)
    assert run.wait() is False
    assert time.monotonic() - started < RUN_BOUND_S
    info = cluster.store.client().get_run(run.run_id)
    assert info.info.status == "FAILED"
    log = _launcher_log(cluster.store, run.run_id, tmp_path)
    reason = info.data.tags["mlflow_anf.launcher.error"]
    refusal = "Connection refused" if fault == "sshd-down" else "Connection timed out"
    assert refusal in log, log[-3000:]
    assert reason.split(": ", 1)[1] in log
    if launcher == "mpirun":
        assert "ORTE was unable to reliably start one or more daemons" in reason, reason
    assert cluster.leftovers() == {}
    print(f"\n{launcher}, {fault} on worker-1: FAILED after {time.monotonic() - started:.1f} s: {reason}")
