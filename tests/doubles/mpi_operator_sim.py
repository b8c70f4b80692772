"""A test-side Kubeflow MPI operator (v2beta1) for the Kubernetes API emulator (``tests.doubles.k8s_emulator``).

It does what kubeflow/mpi-operator's controller does, in the emulator's store, with the same names, labels, owner
references, conditions, reasons and events:

* validates the job (or rejects it on request): a rejected job gets a ``Warning ValidationError`` event and never a
  condition - exactly the case the backend must time out on;
* ``Created`` condition + event; Service ``<job>``, ConfigMap ``<job>-config`` (hostfile, discover_hosts.sh), Secret
  ``<job>-ssh``, worker pods ``<job>-worker-<i>`` (validated as Pods by the emulator);
* worker pods become Running/Ready; the launcher Job ``<job>-launcher`` is created at start-up or once all workers
  are ready (``launcherCreationPolicy``), its pod ``<job>-launcher-xxxxx`` runs; ``Running`` condition + event;
* the launcher *container* is run by a **runner** in a thread (the emulator cannot run containers): by default
  :func:`wrapper_runner`, which runs the real ``mlflow_anf.backend.launcher`` code in-process with the container's
  env (Secrets resolved from the store) and a local hostfile of ``localhost`` slots, so ``mpirun`` really starts
  the entry point on every process; its output becomes the pod's log, served at ``pods/<pod>/log`` (follow too);
* launcher exit → pod Succeeded/Failed, Job Complete/Failed, MPIJob ``Succeeded``/``Failed`` (+ events),
  ``cleanPodPolicy`` applied to workers;
* worker eviction as v2 does it: the worker stays ``Failed``/``Evicted`` (never replaced), the job gets
  ``Failed``/``MPIJobEvicted`` without ``completionTime``, and nothing stops the launcher (it runs on);
* a worker that never becomes ready (crash at start, missing Secret/ConfigMap/key, image not found, unschedulable)
  is never replaced either, and with ``WaitForWorkersReady`` no launcher is created: the job stays ``Created``;
* deleting the MPIJob garbage-collects its objects (owner references), a little later, and stops the launcher.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime as dt
import fnmatch
import json
import os
import re
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kmock

from tests.doubles.k8s_emulator import Controller, WatchEvent, api_error

GROUP_VERSION = "kubeflow.org/v2beta1"
JOB_NAME_LABEL = "training.kubeflow.org/job-name"
JOB_ROLE_LABEL = "training.kubeflow.org/job-role"
OPERATOR_LABEL = "training.kubeflow.org/operator-name"
REPLICA_INDEX_LABEL = "training.kubeflow.org/replica-index"
HOSTFILE_ENV = {"OpenMPI": "OMPI_MCA_orte_default_hostfile", "Intel": "I_MPI_HYDRA_HOST_FILE",
                "MPICH": "HYDRA_HOST_FILE"}
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def launcher_env(spec: Mapping[str, Any]) -> list[dict[str, str]]:
    """The env the operator appends to the launcher container (kubeflow/mpi-operator
    pkg/controller/mpi_job_controller.go newLauncherPodTemplate :1585-1640, with ompiEnvVars/intelEnvVars/
    mpichEnvVars/nvidiaDisableEnvVars :178-219; the slots variables :117-118)."""
    impl = spec.get("mpiImplementation", "OpenMPI")
    slots = str(spec.get("slotsPerWorker", 1))
    hostfile = "/etc/mpi/hostfile"
    env = {
        "OpenMPI": [("OMPI_MCA_orte_keep_fqdn_hostnames", "true"), ("OMPI_MCA_orte_default_hostfile", hostfile),
                    ("OMPI_MCA_plm_rsh_args", "-o ConnectionAttempts=10"), ("OMPI_MCA_orte_set_default_slots", slots)],
        "Intel": [("I_MPI_HYDRA_HOST_FILE", hostfile), ("I_MPI_HYDRA_BOOTSTRAP_EXEC_EXTRA_ARGS",
                                                        "-o ConnectionAttempts=10"), ("I_MPI_PERHOST", slots)],
        "MPICH": [("HYDRA_HOST_FILE", hostfile), ("HYDRA_LAUNCH_EXTRA_ARGS", "-o ConnectionAttempts=10")],
    }[impl]
    out = [{"name": k, "value": v} for k, v in env]
    if not spec.get("runLauncherAsWorker"):  # the launcher must not grab GPUs: both set to "" (:1630-1636)
        out += [{"name": "NVIDIA_VISIBLE_DEVICES"}, {"name": "NVIDIA_DRIVER_CAPABILITIES"}]
    return out


def ssh_auth_keys() -> dict[str, bytes]:
    """The job's SSH key pair as the operator makes it (mpi_job_controller.go newSSHAuthSecret :1440-1476): an ECDSA
    P-521 key, the private half PEM-encoded as "EC PRIVATE KEY" (x509.MarshalECPrivateKey), the public half in
    authorized_keys format (ssh.MarshalAuthorizedKey: "ecdsa-sha2-nistp521 AAAA...\\n")."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP521R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return {"ssh-privatekey": private, "ssh-publickey": public + b"\n"}


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class JobBehaviour:
    """How the simulated operator treats a job (chosen by name pattern, see :meth:`MPIOperatorSim.behave`)."""

    validation_error: str | None = None  # reject the job: Warning ValidationError event, no condition ever
    ignore: bool = False  # act as if no operator watched this namespace
    workers_ready_after: float = 0.02
    launcher_start_after: float = 0.02
    evict_worker: int | None = None  # evict this worker once the job runs
    evict_after: float = 0.05
    gc_delay: float = 0.05  # garbage collection of a deleted job's objects starts this much later
    # a worker that never becomes ready: "crash" (exits 1 at start), "image-not-found", "unschedulable" (no node
    # has the GPUs); a missing Secret/ConfigMap needs no knob (the worker's env is resolved against the store)
    worker_fault: str | None = None
    fault_worker: int = -1  # which worker (index; -1: the last)


@dataclass
class LauncherRun:
    """What a runner gets: the launcher container as the kubelet would start it."""

    namespace: str
    job: str
    pod: str
    command: list[str]
    env: dict[str, str]
    cwd: str | None
    stdout: Any  # file-like: write()/flush(); becomes the pod log
    killed: threading.Event
    spec: dict[str, Any] = field(default_factory=dict)  # the pod's spec (volumes, hostname, subdomain)
    get: Callable[[str, str | None, str], Any] | None = None  # reads Secrets/ConfigMaps/PVCs from the store


Runner = Callable[[LauncherRun], int]


def wrapper_runner(run: LauncherRun) -> int:
    """Run the real launcher wrapper (``python -m mlflow_anf.backend.launcher ARGS``) in-process."""
    from mlflow_anf.backend.launcher import LaunchedProcess, parse_args, run_launcher

    if run.command[:3] != ["python", "-m", "mlflow_anf.backend.launcher"]:
        run.stdout.write(f"exec: {run.command[0]!r}: unexpected launcher command\n")
        return 127
    opts = parse_args(run.command[3:])
    child = LaunchedProcess()
    done = threading.Event()

    def watch_kill() -> None:
        while not done.is_set():
            if run.killed.wait(0.05):
                child.terminate()
                return

    watcher = threading.Thread(target=watch_kill, daemon=True)
    watcher.start()
    try:
        return run_launcher(opts, run.env, stdout=run.stdout, cwd=run.cwd, child=child)
    finally:
        done.set()


class _PodLog:
    """A pod's log as timestamped lines; written from runner threads, read on the loop."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        self.done = False
        self._lock = threading.Lock()
        self._partial = ""
        self._last = 0

    def _stamp(self) -> str:
        now = time.time_ns()
        self._last = max(now, self._last + 1)
        secs, nanos = divmod(self._last, 1_000_000_000)
        return dt.datetime.fromtimestamp(secs, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"

    def write(self, text: str) -> int:
        with self._lock:
            self._partial += text
            while "\n" in self._partial:
                line, self._partial = self._partial.split("\n", 1)
                self.lines.append((self._stamp(), line))
        return len(text)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        with self._lock:
            if self._partial:
                self.lines.append((self._stamp(), self._partial))
                self._partial = ""
            self.done = True

    def snapshot(self, start: int = 0) -> list[tuple[str, str]]:
        with self._lock:
            return list(self.lines[start:])

    def text(self) -> str:
        return "".join(line + "\n" for _, line in self.snapshot())


@dataclass
class _JobState:
    namespace: str
    name: str
    uid: str
    behaviour: JobBehaviour
    killed: threading.Event = field(default_factory=threading.Event)
    evicted: bool = False
    launcher_failures: int = 0  # failed launcher pods so far (the launcher Job's status.failed)
    deadline_exceeded: bool = False  # the launcher Job ran past activeDeadlineSeconds
    launcher_pod: str | None = None
    launcher_started: bool = False
    finished: bool = False
    deleted: bool = False
    thread: threading.Thread | None = None
    hostfile_dir: str | None = None


class MPIOperatorSim(Controller):
    """The simulated MPI operator; attach with ``k8s_server.add_controller(MPIOperatorSim(...))`` and then call
    :meth:`install` (serves ``pods/<name>/log``)."""

    watches = ("mpijobs",)

    def __init__(self, runner: Runner | None = None, *, cwd_map: Mapping[str, str] | None = None,
                 kubeconfig: str | Path | None = None, kubelet: Any = None) -> None:
        super().__init__()
        # a kubelet that really runs the pods (tests/support/netns_kubelet.py: each pod a host of its own, reached
        # over ssh): it starts the workers' containers and runs the launcher; the hostfile stays the operator's
        self.kubelet = kubelet
        self.runner = runner or (kubelet.run_launcher if kubelet is not None else wrapper_runner)
        self.cwd_map = dict(cwd_map or {})
        # what an in-cluster client in the launcher uses to reach this API server (a kubelet would mount a
        # service account token; the emulator's clients read a kubeconfig instead)
        self.kubeconfig = str(kubeconfig) if kubeconfig else None
        self.default = JobBehaviour()
        self.behaviours: list[tuple[str, JobBehaviour]] = []
        self.jobs: dict[tuple[str, str], _JobState] = {}
        self.logs: dict[tuple[str, str], _PodLog] = {}
        self.runner_errors: list[BaseException] = []
        self.drop_log_streams = 0  # abort this many followed log streams after their first chunk
        self.followed_logs = 0  # followed log streams served so far

    # ---- configuration ----------------------------------------------------------------------------------------
    def behave(self, pattern: str, **kwargs: Any) -> JobBehaviour:
        behaviour = JobBehaviour(**kwargs)
        self.behaviours.insert(0, (pattern, behaviour))
        return behaviour

    def behaviour_for(self, namespace: str, name: str) -> JobBehaviour:
        for pattern, behaviour in self.behaviours:
            if fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(f"{namespace}/{name}", pattern):
                return behaviour
        return self.default

    def install(self, server: Any) -> MPIOperatorSim:
        """Attach to *server* (a ``K8sServer``) and serve pod logs."""
        server.add_controller(self)
        log_path = re.compile(r"^/api/v1/namespaces/[^/]+/pods/[^/]+/log$")
        server.call(lambda: server._api()[log_path] << self._serve_log)
        return self

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until every launcher thread has ended (tests call this before tearing down MLflow stores)."""
        deadline = time.monotonic() + timeout
        for state in list(self.jobs.values()):
            if state.thread is not None:
                state.thread.join(max(0.0, deadline - time.monotonic()))

    def pod_log(self, namespace: str, pod: str) -> str:
        log = self.logs.get((namespace, pod))
        return log.text() if log else ""

    # ---- events from the emulator (synchronous, on the loop: only schedule work) -------------------------------
    def on_event(self, event: WatchEvent) -> None:
        key = (event.namespace or "", event.name)
        uid = event.object["metadata"]["uid"]
        if event.type == "ADDED":
            state = _JobState(event.namespace or "", event.name, uid, self.behaviour_for(*key))
            self.jobs[key] = state
            if not state.behaviour.ignore:
                self.later(0.0, self._reconcile_new, state)
        elif event.type == "DELETED":
            state = self.jobs.get(key)
            if state is not None and state.uid == uid:
                state.deleted = True
                state.killed.set()
                self.later(state.behaviour.gc_delay, self._collect_garbage, state)

    # ---- reconcile steps (on the loop) --------------------------------------------------------------------------
    def _job(self, state: _JobState) -> dict[str, Any] | None:
        job = self.get("MPIJob", state.namespace, state.name)
        if job is None or job["metadata"]["uid"] != state.uid or state.deleted:
            return None
        return job

    def _event(self, state: _JobState, etype: str, reason: str, message: str) -> None:
        assert self.api is not None
        self.api.create_object({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{state.name}.{secrets.token_hex(6)}", "namespace": state.namespace},
            "involvedObject": {"apiVersion": GROUP_VERSION, "kind": "MPIJob", "name": state.name,
                               "namespace": state.namespace, "uid": state.uid},
            "reason": reason, "message": message, "type": etype, "count": 1,
            "firstTimestamp": _now(), "lastTimestamp": _now(), "source": {"component": "mpi-job-controller"},
        })

    def _set_condition(self, state: _JobState, ctype: str, status: str, reason: str, message: str,
                       extra: Mapping[str, Any] | None = None) -> None:
        job = self._job(state)
        if job is None:
            return
        conditions = list((job.get("status") or {}).get("conditions") or [])
        out = []
        for cond in conditions:  # mpi-operator's filterOutCondition
            if (ctype == "Restarting" and cond["type"] == "Running") or (
                    ctype == "Running" and cond["type"] == "Restarting") or cond["type"] == ctype:
                continue
            if ctype in ("Failed", "Succeeded") and cond["type"] in ("Running", "Failed"):
                cond = {**cond, "status": "False"}
            out.append(cond)
        now = _now()
        out.append({"type": ctype, "status": status, "reason": reason, "message": message,
                    "lastTransitionTime": now, "lastUpdateTime": now})
        self.patch("MPIJob", state.namespace, state.name, {"status": {"conditions": out, **(extra or {})}})

    def _validate(self, job: Mapping[str, Any]) -> list[str]:
        """The checks of mpi-operator's validation.ValidateMPIJob."""
        errs = []
        spec = job.get("spec") or {}
        replicas = spec.get("mpiReplicaSpecs") or {}
        workers = (replicas.get("Worker") or {}).get("replicas") or 1
        host = f"{job['metadata']['name']}-worker-{workers - 1}"
        if len(host) > 63 or not _DNS1035.match(host):
            errs.append(f"metadata.name: Invalid value: will not able to create pod and service with invalid DNS "
                        f"label {host!r}")
        if "Launcher" not in replicas:
            errs.append("spec.mpiReplicaSpecs[Launcher]: Required value: must have Launcher replica spec")
        elif (replicas["Launcher"].get("replicas") or 1) != 1:
            errs.append("spec.mpiReplicaSpecs[Launcher].replicas: Invalid value: must be 1")
        for rtype, rspec in replicas.items():
            if rspec.get("restartPolicy") not in (None, "Never", "OnFailure"):
                errs.append(f"spec.mpiReplicaSpecs[{rtype}].restartPolicy: Unsupported value")
            if not ((rspec.get("template") or {}).get("spec") or {}).get("containers"):
                errs.append(f"spec.mpiReplicaSpecs[{rtype}].template.spec.containers: Required value")
        policy = (spec.get("runPolicy") or {}).get("cleanPodPolicy", "Running")
        if policy not in ("None", "Running", "All"):
            errs.append("spec.runPolicy.cleanPodPolicy: Unsupported value")
        return errs

    def _owner(self, state: _JobState) -> dict[str, Any]:
        return {"apiVersion": GROUP_VERSION, "kind": "MPIJob", "name": state.name, "uid": state.uid,
                "controller": True, "blockOwnerDeletion": True}

    def _reconcile_new(self, state: _JobState) -> None:
        job = self._job(state)
        if job is None:
            return
        problems = self._validate(job)
        if state.behaviour.validation_error:
            problems.append(state.behaviour.validation_error)
        if problems:
            self._event(state, "Warning", "ValidationError", f"Found validation errors: {'; '.join(problems)}")
            return
        msg = f"MPIJob {state.namespace}/{state.name} is created."
        self._set_condition(state, "Created", "True", "MPIJobCreated", msg, {"startTime": _now()})
        self._event(state, "Normal", "MPIJobCreated", msg)
        spec = job["spec"]
        impl = spec.get("mpiImplementation", "OpenMPI")
        slots = spec.get("slotsPerWorker", 1)
        workers = spec["mpiReplicaSpecs"]["Worker"].get("replicas", 1)
        assert self.api is not None
        labels = {"app": state.name}
        domain = f"{state.name}.{state.namespace}.svc"
        hosts = [f"{state.name}-worker-{i}.{domain}" for i in range(workers)]
        hostfile = "".join(f"{h} slots={slots}\n" if impl == "OpenMPI" else f"{h}:{slots}\n" for h in hosts)
        for obj in (
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": state.name, "labels": labels},
             "spec": {"clusterIP": "None", "selector": {OPERATOR_LABEL: "mpi-operator", JOB_NAME_LABEL: state.name},
                      # only with runLauncherAsWorker (mpi_job_controller.go:1410-1435 newJobService/newService)
                      "publishNotReadyAddresses": bool(spec.get("runLauncherAsWorker", False))}},
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{state.name}-config", "labels": labels},
             "data": {"hostfile": hostfile, "discover_hosts.sh": "#!/bin/sh\n"}},
            {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/ssh-auth",
             "metadata": {"name": f"{state.name}-ssh", "labels": labels},
             "data": {k: base64.b64encode(v).decode() for k, v in ssh_auth_keys().items()}},
        ):
            obj["metadata"].update(namespace=state.namespace, ownerReferences=[self._owner(state)])
            self.api.create_object(obj, validate=True)
        for i in range(workers):
            self._create_worker(state, job, i)
        self.later(state.behaviour.workers_ready_after, self._workers_ready, state)
        if spec.get("launcherCreationPolicy", "AtStartup") == "AtStartup":
            self.later(0.0, self._create_launcher, state)

    def _pod_template(self, state: _JobState, job: Mapping[str, Any], role: str) -> dict[str, Any]:
        rtype = "Launcher" if role == "launcher" else "Worker"
        rspec = job["spec"]["mpiReplicaSpecs"][rtype]
        template = copy.deepcopy(rspec["template"])
        meta = template.setdefault("metadata", {})
        meta.setdefault("labels", {}).update({OPERATOR_LABEL: "mpi-operator", JOB_NAME_LABEL: state.name,
                                              JOB_ROLE_LABEL: role})
        pod = template.setdefault("spec", {})
        pod["subdomain"] = state.name
        pod["restartPolicy"] = rspec.get("restartPolicy", "Never")
        container = pod["containers"][0]
        env = container.setdefault("env", [])
        env.append({"name": "K_MPI_JOB_ROLE", "value": role})  # launcherEnvVars/workerEnvVars (:168-177)
        if role == "worker":
            # newWorker (:1499-1552): sshd when no command, the Service's domain in the DNS search list
            if not container.get("command") and not container.get("args"):
                container["command"] = ["/usr/sbin/sshd", "-De"]
            dns = pod.setdefault("dnsConfig", {})
            dns.setdefault("searches", []).append(f"{state.name}.{state.namespace}.svc.cluster.local")
        else:
            env.extend(launcher_env(job["spec"]))
        # setupSSHOnPod (:1793-1816): the Secret's keys as id_rsa, id_rsa.pub and authorized_keys (sshVolumeItems
        # :142-155), mode 0600 only where the mount path is /root/.ssh (else the kubelet's 0644), at sshAuthMountPath
        ssh_path = job["spec"].get("sshAuthMountPath", "/root/.ssh")
        ssh_volume: dict[str, Any] = {"secretName": f"{state.name}-ssh", "items": [
            {"key": "ssh-privatekey", "path": "id_rsa"}, {"key": "ssh-publickey", "path": "id_rsa.pub"},
            {"key": "ssh-publickey", "path": "authorized_keys"}]}
        if ssh_path == "/root/.ssh":
            ssh_volume["defaultMode"] = 0o600
        pod.setdefault("volumes", []).append({"name": "ssh-auth", "secret": ssh_volume})
        container.setdefault("volumeMounts", []).append({"name": "ssh-auth", "mountPath": ssh_path})
        if role == "launcher":
            # newLauncherPodTemplate (:1648-1662) with configVolumeItems (:156-167): hostfile 0444,
            # discover_hosts.sh 0555, mounted at /etc/mpi
            pod["volumes"].append({"name": "mpi-job-config", "configMap": {"name": f"{state.name}-config", "items": [
                {"key": "hostfile", "path": "hostfile", "mode": 0o444},
                {"key": "discover_hosts.sh", "path": "discover_hosts.sh", "mode": 0o555}]}})
            container["volumeMounts"].append({"name": "mpi-job-config", "mountPath": "/etc/mpi"})
        return template

    def _create_worker(self, state: _JobState, job: Mapping[str, Any], index: int) -> None:
        assert self.api is not None
        template = self._pod_template(state, job, "worker")
        template["metadata"]["labels"][REPLICA_INDEX_LABEL] = str(index)
        name = f"{state.name}-worker-{index}"
        template["spec"]["hostname"] = name
        self.api.create_object({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {**template["metadata"], "name": name, "namespace": state.namespace,
                         "ownerReferences": [self._owner(state)]},
            "spec": template["spec"], "status": {"phase": "Pending"},
        }, validate=True)

    def _workers(self, state: _JobState) -> list[dict[str, Any]]:
        assert self.api is not None
        return self.api.list_objects(self.api.type_for("Pod"), state.namespace,
                                     f"{JOB_NAME_LABEL}={state.name},{JOB_ROLE_LABEL}=worker")

    def _set_pod_phase(self, namespace: str, name: str, phase: str, *, reason: str | None = None,
                       exit_code: int | None = None) -> None:
        status: dict[str, Any] = {"phase": phase}
        ready = "True" if phase == "Running" else "False"
        status["conditions"] = [{"type": "Ready", "status": ready, "lastTransitionTime": _now()}]
        if reason:
            status["reason"] = reason
            status["message"] = f"The node was low on resource: memory. ({reason})"
        if exit_code is not None:
            status["containerStatuses"] = [{"name": "launcher", "ready": False, "restartCount": 0,
                                            "image": "simulated", "imageID": "", "state": {
                                                "terminated": {"exitCode": exit_code, "reason": (
                                                    "Completed" if exit_code == 0 else "Error")}}}]
        self.patch("Pod", namespace, name, {"status": status})

    def _workers_ready(self, state: _JobState) -> None:
        job = self._job(state)
        if job is None or state.finished:
            return
        workers = self._workers(state)
        faulty = state.behaviour.fault_worker % max(len(workers), 1)
        for pod in workers:
            if (pod.get("status") or {}).get("phase") != "Pending":
                continue
            name = pod["metadata"]["name"]
            _, error = self._resolve_env(state.namespace, pod["spec"]["containers"][0])
            if error is not None:
                self._waiting(state.namespace, name, "CreateContainerConfigError", error)
            elif state.behaviour.worker_fault and pod["metadata"]["labels"].get(REPLICA_INDEX_LABEL) == str(faulty):
                self._worker_fault(state, pod, state.behaviour.worker_fault)
            else:
                if self.kubelet is not None:
                    env, _ = self._resolve_env(state.namespace, pod["spec"]["containers"][0])
                    self.kubelet.start_pod(state.namespace, pod, env, self.get)
                self._set_pod_phase(state.namespace, name, "Running")
        # the launcher only once every worker is Ready (mpi_job_controller.go:676-684, countReadyWorkerPods
        # :860-872); a worker that failed or waits is never recreated - getOrCreateWorker creates only a missing
        # pod (:1016-1023) - and does not change the MPIJob's conditions: updateMPIJobStatus counts it in
        # replicaStatuses only (:1144-1158), so the job stays Created
        if job["spec"].get("launcherCreationPolicy", "AtStartup") == "WaitForWorkersReady":
            if all(self._ready(p) for p in self._workers(state)):
                self._create_launcher(state)
        self._maybe_running(state)

    @staticmethod
    def _ready(pod: Mapping[str, Any]) -> bool:
        return any(c.get("type") == "Ready" and c.get("status") == "True"
                   for c in (pod.get("status") or {}).get("conditions") or [])

    def _worker_fault(self, state: _JobState, pod: Mapping[str, Any], fault: str) -> None:
        name, image = pod["metadata"]["name"], pod["spec"]["containers"][0].get("image", "")
        if fault == "crash":
            # restartPolicy Never: the pod is Failed, the container terminated (kubernetes/kubernetes
            # pkg/kubelet/kubelet_pods.go getPhase); the pod itself has no reason
            self.patch("Pod", state.namespace, name, {"status": {
                "phase": "Failed",
                "conditions": [{"type": "Ready", "status": "False", "reason": "PodFailed",
                                "lastTransitionTime": _now()}],
                "containerStatuses": [{"name": pod["spec"]["containers"][0]["name"], "ready": False, "restartCount": 0, "image": image,
                                       "imageID": "", "started": False, "state": {"terminated": {
                                           "exitCode": 1, "reason": "Error",
                                           "message": "sshd: no hostkeys available -- exiting."}}}]}})
        elif fault == "image-not-found":
            # the first pull fails with ErrImagePull and the registry's error; the kubelet then backs off and the
            # waiting reason becomes ImagePullBackOff, message only 'Back-off pulling image "..."'
            # (kubernetes/kubernetes pkg/kubelet/images/image_manager.go EnsureImageExists)
            self._waiting(state.namespace, name, "ErrImagePull",
                          f'rpc error: code = NotFound desc = failed to pull and unpack image "{image}": failed to '
                          f'resolve reference "{image}": {image}: not found')
            self.later(0.1, lambda: self.get("Pod", state.namespace, name) is not None and self._waiting(
                state.namespace, name, "ImagePullBackOff", f'Back-off pulling image "{image}"'))
        elif fault == "unschedulable":
            # the scheduler's failure: PodScheduled False/Unschedulable, no node, no container statuses
            # (kubernetes/kubernetes pkg/scheduler/schedule_one.go handleSchedulingFailure)
            self.patch("Pod", state.namespace, name, {"status": {"phase": "Pending", "conditions": [{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "lastTransitionTime": _now(),
                "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are "
                           "available: 3 No preemption victims found for incoming pod."}]}})
        else:
            raise ValueError(f"worker_fault: unknown fault {fault!r}")

    def _create_launcher(self, state: _JobState) -> None:
        job = self._job(state)
        if job is None or state.launcher_pod is not None:
            return
        assert self.api is not None
        template = self._pod_template(state, job, "launcher")
        template["spec"]["hostname"] = f"{state.name}-launcher"
        run_policy = job["spec"].get("runPolicy") or {}
        job_spec: dict[str, Any] = {"template": template, "backoffLimit": run_policy.get("backoffLimit", 6)}
        for key in ("ttlSecondsAfterFinished", "activeDeadlineSeconds"):
            if key in run_policy:
                job_spec[key] = run_policy[key]
        launcher_job = self.api.create_object({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": f"{state.name}-launcher", "namespace": state.namespace,
                         "labels": {"app": state.name}, "ownerReferences": [self._owner(state)]},
            "spec": job_spec,
        }, validate=True)
        self._launcher_pod(state, template, launcher_job)
        if "activeDeadlineSeconds" in job_spec:
            self.later(float(job_spec["activeDeadlineSeconds"]), self._launcher_deadline, state)

    def _launcher_deadline(self, state: _JobState) -> None:
        """The Job controller's activeDeadlineSeconds (kubernetes/kubernetes pkg/controller/job/job_controller.go,
        ``pastActiveDeadline``): the Job fails with reason DeadlineExceeded and its active pods are deleted (the
        container gets SIGTERM); no retry. It acts on the launcher Job only: the workers run on until the
        operator's cleanPodPolicy."""
        if state.finished or state.deleted or self._job(state) is None:
            return
        state.deadline_exceeded = True
        state.killed.set()
    def _launcher_pod(self, state: _JobState, template: dict[str, Any], launcher_job: Mapping[str, Any]) -> None:
        """One pod of the launcher Job (a new one for each retry, as the Job controller makes them)."""
        assert self.api is not None
        pod_name = f"{state.name}-launcher-{secrets.token_hex(3)[:5]}"
        state.launcher_pod = pod_name
        labels = {**template["metadata"]["labels"], "job-name": f"{state.name}-launcher",
                  "batch.kubernetes.io/job-name": f"{state.name}-launcher"}
        self.api.create_object({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod_name, "namespace": state.namespace, "labels": labels,
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job",
                                              "name": launcher_job["metadata"]["name"],
                                              "uid": launcher_job["metadata"]["uid"],
                                              "controller": True, "blockOwnerDeletion": True}]},
            "spec": template["spec"], "status": {"phase": "Pending"},
        }, validate=True)
        self.later(state.behaviour.launcher_start_after, self._start_launcher, state, template)

    def _start_launcher(self, state: _JobState, template: dict[str, Any]) -> None:
        if self._job(state) is None or state.launcher_pod is None:
            return
        container = template["spec"]["containers"][0]
        env = self._container_env(state, container)
        if env is None:
            return
        self._set_pod_phase(state.namespace, state.launcher_pod, "Running")
        state.launcher_started = True
        self._maybe_running(state)
        log = self.logs.setdefault((state.namespace, state.launcher_pod), _PodLog())
        command = [*container.get("command", []), *container.get("args", [])]
        cwd = container.get("workingDir")
        run = LauncherRun(state.namespace, state.name, state.launcher_pod, command, env,
                          self.cwd_map.get(cwd or "", cwd), log, state.killed, template["spec"], self.get)
        loop = self.loop
        assert loop is not None

        def body() -> None:
            rc = 1
            try:
                rc = self.runner(run)
            except BaseException as exc:  # noqa: BLE001 - a broken runner fails the test via runner_errors
                self.runner_errors.append(exc)
                log.write(f"runner crashed: {exc!r}\n")
            finally:
                log.close()
                if not loop.is_closed():
                    loop.call_soon_threadsafe(self.later, 0.0, self._launcher_done, state, rc)

        state.thread = threading.Thread(target=body, name=f"launcher-{state.name}", daemon=True)
        state.thread.start()
        if state.behaviour.evict_worker is not None:
            self.later(state.behaviour.evict_after, self._evict, state, state.behaviour.evict_worker)

    def _resolve_env(self, namespace: str, container: Mapping[str, Any]) -> tuple[dict[str, str], str | None]:
        """The container's env as the kubelet resolves it (kubernetes/kubernetes pkg/kubelet/kubelet_pods.go
        makeEnvironmentVariables): a missing Secret/ConfigMap is the API's 404 text (``secret "x" not found``), a
        missing key ``couldn't find key K in Secret ns/name``; optional refs are skipped. Returns (env, error)."""
        env: dict[str, str] = {}
        for item in container.get("env") or []:
            source = item.get("valueFrom") or {}
            if not source:
                env[item["name"]] = item.get("value", "")  # an env var without value is "" (NVIDIA_* above)
                continue
            for ref_key, kind, word in (("secretKeyRef", "Secret", "secret"), ("configMapKeyRef", "ConfigMap",
                                                                                 "configmap")):
                ref = source.get(ref_key)
                if ref is None:
                    continue
                obj = self.get(kind, namespace, ref["name"])
                if obj is None:
                    if ref.get("optional"):
                        continue
                    return env, f'{word} "{ref["name"]}" not found'
                data = obj.get("data") or {}
                if ref["key"] not in data:
                    if ref.get("optional"):
                        continue
                    return env, f"couldn't find key {ref['key']} in {kind} {namespace}/{ref['name']}"
                value = data[ref["key"]]
                env[item["name"]] = base64.b64decode(value).decode() if kind == "Secret" else value
        return env, None

    def _waiting(self, namespace: str, pod: str, reason: str, message: str) -> None:
        """A container the kubelet cannot start: the pod stays Pending, not Ready, and the reason is the
        container's ``state.waiting`` (kubernetes/kubernetes pkg/kubelet/kuberuntime/kuberuntime_container.go
        startContainer returns (msg, err); kubelet_pods.go convertToAPIContainerStatuses puts them there)."""
        current = self.get("Pod", namespace, pod) or {}
        container = ((current.get("spec") or {}).get("containers") or [{}])[0]
        self.patch("Pod", namespace, pod, {"status": {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": _now()},
                           {"type": "Ready", "status": "False", "reason": "ContainersNotReady",
                            "lastTransitionTime": _now()}],
            "containerStatuses": [{"name": container.get("name", ""), "ready": False, "restartCount": 0,
                                   "image": container.get("image", ""), "imageID": "",
                                   "started": False, "state": {"waiting": {"reason": reason, "message": message}}}]}})

    def _container_env(self, state: _JobState, container: Mapping[str, Any]) -> dict[str, str] | None:
        """The env the kubelet would give the container; ``None`` (the pod stays Pending with
        CreateContainerConfigError) for a missing Secret, ConfigMap or key."""
        # the image's environment: this process's venv for the in-process runner; the kubelet brings its own
        env = {} if self.kubelet is not None else {
            "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}
        if self.kubeconfig:
            env["KUBECONFIG"] = self.kubeconfig
        resolved, error = self._resolve_env(state.namespace, container)
        if error is not None:
            assert state.launcher_pod is not None
            self._waiting(state.namespace, state.launcher_pod, "CreateContainerConfigError", error)
            return None
        env.update(resolved)
        if self.kubelet is not None:  # it mounts the ConfigMap at /etc/mpi: the operator's hostfile, as it is
            return env
        # the hostfile the container sees at /etc/mpi/hostfile, with hosts this machine can reach
        job = self._job(state)
        assert job is not None
        impl = job["spec"].get("mpiImplementation", "OpenMPI")
        slots = job["spec"].get("slotsPerWorker", 1)
        workers = job["spec"]["mpiReplicaSpecs"]["Worker"].get("replicas", 1)
        state.hostfile_dir = tempfile.mkdtemp(prefix=f"mpisim-{state.name}-")
        path = Path(state.hostfile_dir) / "hostfile"
        line = f"localhost slots={slots}\n" if impl == "OpenMPI" else f"localhost:{slots}\n"
        path.write_text(line * workers)
        env[HOSTFILE_ENV[impl]] = str(path)
        return env

    def _maybe_running(self, state: _JobState) -> None:
        job = self._job(state)
        if job is None or state.finished or not state.launcher_started:
            return
        workers = self._workers(state)
        want = job["spec"]["mpiReplicaSpecs"]["Worker"].get("replicas", 1)
        running = [p for p in workers if (p.get("status") or {}).get("phase") == "Running"]
        if len(running) == want:
            conds = {c["type"]: c for c in (job.get("status") or {}).get("conditions") or []}
            if (conds.get("Running") or {}).get("status") != "True":
                msg = f"MPIJob {state.namespace}/{state.name} is running."
                self._set_condition(state, "Running", "True", "MPIJobRunning", msg)
                self._event(state, "Normal", "MPIJobRunning", msg)

    def _evict(self, state: _JobState, index: int) -> None:
        """kubeflow/mpi-operator pkg/controller/mpi_job_controller.go updateMPIJobStatus :1144-1163: an evicted
        worker (phase Failed, reason Evicted) makes the job Failed/MPIJobEvicted - and that is all: no
        completionTime (only the launcher Job's end sets one, :1125-1127 and :1227-1230), so syncHandler neither
        cleans pods nor stops anything (:622-633), the launcher runs on, and getOrCreateWorker never replaces the
        evicted pod (:1016-1023). v2 has no Restarting condition."""
        job = self._job(state)
        if job is None or state.finished:
            return
        name = f"{state.name}-worker-{index}"
        self._set_pod_phase(state.namespace, name, "Failed", reason="Evicted")
        workers = job["spec"]["mpiReplicaSpecs"]["Worker"].get("replicas", 1)
        state.evicted = True
        self._evicted_condition(state, workers)

    def _evicted_condition(self, state: _JobState, workers: int) -> None:
        msg = f"1/{workers} workers are evicted"
        self._set_condition(state, "Failed", "True", "MPIJobEvicted", msg)
        self._event(state, "Warning", "MPIJobEvicted", msg)

    def _launcher_done(self, state: _JobState, rc: int) -> None:
        if state.hostfile_dir:
            import shutil

            shutil.rmtree(state.hostfile_dir, ignore_errors=True)
        if state.launcher_pod is None or self.get("Pod", state.namespace, state.launcher_pod) is None:
            return
        self._set_pod_phase(state.namespace, state.launcher_pod, "Succeeded" if rc == 0 else "Failed",
                            exit_code=rc)
        now = _now()
        job_status = ({"succeeded": 1, "completionTime": now, "conditions": [
            {"type": "Complete", "status": "True", "lastTransitionTime": now}]} if rc == 0 else
            {"failed": state.launcher_failures, "conditions": [{
                "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                          "message": "Job has reached the specified backoff limit",
                                          "lastTransitionTime": now}]})
        launcher_job = self.get("Job", state.namespace, f"{state.name}-launcher")
        if state.deadline_exceeded and not state.deleted:
            self._launcher_past_deadline(state, launcher_job)
            return
        if rc != 0 and launcher_job is not None and self._retry_launcher(state, launcher_job):
            return
        if launcher_job is not None:
            self.patch("Job", state.namespace, f"{state.name}-launcher", {"status": job_status})
            ttl = (launcher_job.get("spec") or {}).get("ttlSecondsAfterFinished")
            if ttl is not None:
                self.later(float(ttl), self._launcher_ttl, state, launcher_job["metadata"]["uid"])
        job = self._job(state)
        if job is None or state.finished:
            return
        state.finished = True
        if state.evicted:  # the launcher's end is recorded below, and every sync sets the eviction again (:1159)
            self.later(0.0, self._evicted_condition, state, job["spec"]["mpiReplicaSpecs"]["Worker"].get("replicas", 1))
        if rc == 0:
            msg = f"MPIJob {state.namespace}/{state.name} successfully completed."
            self._set_condition(state, "Succeeded", "True", "MPIJobSucceeded", msg, {"completionTime": now})
            self._event(state, "Normal", "MPIJobSucceeded", msg)
        else:
            # updateMPIJobFailedStatus (:1202-1231): the Job's reason and message, plus the last failed launcher
            # pod's status.reason/message - both empty for a container that just exited non-zero (the kubelet sets
            # a pod-level reason only for evictions, deadlines and the like)
            pod = self.get("Pod", state.namespace, state.launcher_pod) or {}
            reason = "BackoffLimitExceeded/" + str((pod.get("status") or {}).get("reason") or "")
            msg = "Job has reached the specified backoff limit: " + str((pod.get("status") or {}).get("message") or "")
            self._set_condition(state, "Failed", "True", reason, msg, {"completionTime": now})
            self._event(state, "Warning", reason, msg)
        self._clean_pods(state, job)

    def _launcher_ttl(self, state: _JobState, uid: str) -> None:
        """The TTL-after-finished controller deletes the finished launcher Job (foreground), and with it its pods
        (kubernetes/kubernetes pkg/controller/ttlafterfinished/ttlafterfinished_controller.go); the MPIJob and
        the workers are not its business."""
        assert self.api is not None
        launcher_job = self.get("Job", state.namespace, f"{state.name}-launcher")
        if launcher_job is None or launcher_job["metadata"]["uid"] != uid:
            return
        for pod in self.api.list_objects(self.api.type_for("Pod"), state.namespace, f"job-name={state.name}-launcher"):
            self.api.delete_object(self.api.type_for("Pod"), state.namespace, pod["metadata"]["name"])
        self.api.delete_object(self.api.type_for("Job"), state.namespace, launcher_job["metadata"]["name"])

    def _launcher_past_deadline(self, state: _JobState, launcher_job: Mapping[str, Any] | None) -> None:
        assert self.api is not None and state.launcher_pod is not None
        now = _now()
        if launcher_job is not None:
            self.patch("Job", state.namespace, launcher_job["metadata"]["name"], {"status": {
                "failed": state.launcher_failures + 1, "conditions": [{
                    "type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                    "message": "Job was active longer than specified deadline", "lastTransitionTime": now}]}})
        if self.get("Pod", state.namespace, state.launcher_pod) is not None:
            self.api.delete_object(self.api.type_for("Pod"), state.namespace, state.launcher_pod)
        job = self._job(state)
        if job is None or state.finished:
            return
        state.finished = True
        # updateMPIJobFailedStatus (:1202-1231): the Job's reason and message as they are (no pod appended: only
        # for BackoffLimitExceeded), completionTime now
        reason, msg = "DeadlineExceeded", "Job was active longer than specified deadline"
        self._set_condition(state, "Failed", "True", reason, msg, {"completionTime": now})
        self._event(state, "Warning", reason, msg)
        self._clean_pods(state, job)

    def _retry_launcher(self, state: _JobState, launcher_job: Mapping[str, Any]) -> bool:
        """The Job controller, not the operator, retries the launcher: a new pod while the failed ones do not
        exceed ``backoffLimit`` (kubernetes/kubernetes pkg/controller/job/job_controller.go, ``exceedsBackoffLimit``;
        default 6 in pkg/apis/batch/v1/defaults.go). The operator only copies ``backoffLimit``,
        ``activeDeadlineSeconds`` and ``ttlSecondsAfterFinished`` onto the launcher Job (mpi_job_controller.go
        newLauncherJob :1554-1577); the workers keep running meanwhile."""
        state.launcher_failures += 1
        limit = (launcher_job.get("spec") or {}).get("backoffLimit", 6)
        if state.deleted or state.killed.is_set() or state.launcher_failures > limit:
            return False
        self.patch("Job", state.namespace, launcher_job["metadata"]["name"],
                   {"status": {"failed": state.launcher_failures}})
        template = copy.deepcopy(launcher_job["spec"]["template"])
        self._launcher_pod(state, template, launcher_job)
        return True

    def _clean_pods(self, state: _JobState, job: Mapping[str, Any]) -> None:
        # the operator defaults cleanPodPolicy to None (kubeflow/mpi-operator pkg/apis/kubeflow/v2beta1/default.go
        # setDefaultsRunPolicy :52-56)
        policy = (job["spec"].get("runPolicy") or {}).get("cleanPodPolicy", "None")
        if policy == "None":
            return
        assert self.api is not None
        for pod in self._workers(state):
            phase = (pod.get("status") or {}).get("phase")
            if policy == "All" or phase in ("Running", "Pending"):
                self.api.delete_object(self.api.type_for("Pod"), state.namespace, pod["metadata"]["name"])
                if self.kubelet is not None:
                    self.kubelet.stop_pod(state.namespace, pod["metadata"]["name"])

    def _collect_garbage(self, state: _JobState) -> None:
        """Delete what the job owned (directly or through the launcher Job), like the garbage collector."""
        assert self.api is not None
        if state.thread is not None and state.thread.is_alive():
            # a deleted pod stays (with a deletionTimestamp) until the kubelet has stopped its containers
            # (kubernetes/kubernetes pkg/kubelet/status/status_manager.go canBeDeleted); with foreground deletion
            # the MPIJob stays until then too: the launcher's exit is over before its objects are gone
            self.later(0.02, self._collect_garbage, state)
            return
        owners = {state.uid}
        launcher = self.get("Job", state.namespace, f"{state.name}-launcher")
        if launcher is not None:
            owners.add(launcher["metadata"]["uid"])
        for kind in ("Pod", "Job", "ConfigMap", "Secret", "Service"):
            rtype = self.api.type_for(kind)
            for obj in self.api.list_objects(rtype, state.namespace):
                refs = obj["metadata"].get("ownerReferences") or []
                if any(r.get("uid") in owners for r in refs):
                    self.api.delete_object(rtype, state.namespace, obj["metadata"]["name"])
                    if kind == "Pod" and self.kubelet is not None:
                        self.kubelet.stop_pod(state.namespace, obj["metadata"]["name"])

    # ---- pods/<name>/log ------------------------------------------------------------------------------------------
    def _serve_log(self, request: kmock.Request) -> Any:
        parts = request.url.path.split("/")
        namespace, pod = parts[4], parts[6]
        assert self.api is not None
        if self.api.get_object(self.api.type_for("Pod"), namespace, pod) is None:
            raise api_error(404, "NotFound", f'pods "{pod}" not found', {"name": pod, "kind": "pods"})
        log = self.logs.get((namespace, pod)) or _PodLog()
        stamps = request.params.get("timestamps") in ("true", "1")

        def render(lines: list[tuple[str, str]]) -> bytes:
            return "".join(f"{ts} {line}\n" if stamps else f"{line}\n" for ts, line in lines).encode()

        if request.params.get("follow") not in ("true", "1"):
            return kmock.Response(status=200, payload=render(log.snapshot()) or b"")

        self.followed_logs += 1
        drop = self.drop_log_streams > 0
        if drop:
            self.drop_log_streams -= 1

        async def stream() -> Any:
            sent = 0
            yield b""
            while True:
                lines = log.snapshot(sent)
                if lines:
                    sent += len(lines)
                    yield render(lines)
                    if drop:  # a dropped connection mid-body, like a kubelet or proxy restart
                        await asyncio.sleep(0.01)
                        transport = request._raw_request.transport if request._raw_request else None
                        if transport is not None:
                            transport.abort()
                        return
                elif log.done or self.api is None or self.api.get_object(
                        self.api.type_for("Pod"), namespace, pod) is None:
                    return
                else:
                    await asyncio.sleep(0.02)

        return kmock.Response(status=200, payload=stream())


def as_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True)


# --------------------------------------------------------------------------------------------------------------
# pytest fixtures for the backend tests: a tiny MLproject whose entry point runs on every rank, and the operator
# itself. The MLflow store they log to is tests/support/mlflow_store.py's.

import pytest  # noqa: E402 - fixtures section

STUB_TRAIN = '''\
"""Stand-in for `lanedet train` under mpirun: one line per rank, optional failure, optional wait."""
import argparse, os, sys, time

p = argparse.ArgumentParser()
p.add_argument("--epochs", type=float, default=1)
p.add_argument("--fail", type=float, default=0)
p.add_argument("--data-dir", default="")
p.add_argument("--sleep", type=float, default=0)
p.add_argument("--enable-snapshot", default="false")
a = p.parse_args()
rank = int(os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "0")))
size = int(os.environ.get("PMI_SIZE", os.environ.get("OMPI_COMM_WORLD_SIZE", "1")))
print(f"rank {rank}/{size} training {int(a.epochs)} epochs on {a.data_dir} run={os.environ.get('MLFLOW_RUN_ID')}",
      flush=True)
if os.environ.get("CANARY_TOKEN"):
    print(f"rank {rank} sees token {os.environ['CANARY_TOKEN']}", flush=True)
deadline = time.monotonic() + a.sleep
while time.monotonic() < deadline:
    time.sleep(0.05)
if a.fail and rank == size - 1:
    print(f"rank {rank} fails with {int(a.fail)}", file=sys.stderr, flush=True)
    sys.exit(int(a.fail))
print(f"rank {rank} done", flush=True)
'''

MLPROJECT = '''\
name: sim-lanedet
entry_points:
  train:
    parameters:
      data_dir: {type: string, default: /mnt/tusimple}
      epochs: {type: float, default: 2}
      fail: {type: float, default: 0}
      sleep: {type: float, default: 0}
      enable_snapshot: {type: string, default: "false"}
      output_dir: {type: string, default: /mnt/outputs}
    command: "python stub_train.py --epochs {epochs} --fail {fail} --data-dir {data_dir} --sleep {sleep}"
'''


def write_project(root: Path, mlproject: str, **scripts: str) -> Path:
    """A project directory: ``MLproject`` and the scripts its entry points run (file name -> text)."""
    root.mkdir()
    (root / "MLproject").write_text(mlproject)
    for name, text in scripts.items():
        (root / name).write_text(text)
    return root


@pytest.fixture
def sim_project(tmp_path: Path) -> Path:
    return write_project(tmp_path / "project", MLPROJECT, **{"stub_train.py": STUB_TRAIN})


@pytest.fixture
def mpi_operator(k8s_server: Any, kubeconfig_path: Path) -> Any:
    sim = MPIOperatorSim(kubeconfig=kubeconfig_path).install(k8s_server)
    yield sim
    sim.wait_idle()
    if sim.runner_errors:
        raise AssertionError(f"launcher runner crashed: {sim.runner_errors!r}")


def serve_access_reviews(server: Any, denied: set[tuple[str, str]] | None = None) -> list[dict[str, Any]]:
    """Answer ``SelfSubjectAccessReview`` creates (which the emulator does not serve): allowed unless
    ``(verb, resource[/subresource])`` is in *denied*. Returns the list the reviewed attributes are appended to."""
    reviews: list[dict[str, Any]] = []
    denied = denied or set()

    def answer(request: kmock.Request) -> Any:
        body = dict(request.data or {})
        attrs = (body.get("spec") or {}).get("resourceAttributes") or {}
        reviews.append(attrs)
        resource = attrs.get("resource", "") + (f"/{attrs['subresource']}" if attrs.get("subresource") else "")
        allowed = (attrs.get("verb"), resource) not in denied
        status = {"allowed": allowed} if allowed else {"allowed": False, "reason": "no RBAC policy matched"}
        return kmock.Response(status=201, payload={**body, "status": status})

    path = re.compile(r"^/apis/authorization\.k8s\.io/v1/selfsubjectaccessreviews$")
    server.call(lambda: server._api()[path] << answer)
    return reviews
