"""A kubelet for the simulated MPI operator that really runs the pods: each pod a host of its own on this machine
(:mod:`tests.support.pod_network`), the workers' containers started with their rendered command (the operator's
``/usr/sbin/sshd -De``), the launcher's with its rendered command and the environment the operator and the kubelet
give it, unchanged - so ``horovodrun``/``mpirun`` reach the workers over ssh at the names in the operator's hostfile.

What comes from where in a container's start (docs/distributed.md maps it onto the operator's objects):

* the command and args, ``workingDir``, env and volume mounts: the pod the simulator created from the rendered MPIJob;
* the image's environment: docker/Dockerfile's ``ENV`` instruction, read from the file, with its virtual environment
  mapped onto this machine's (``VIRTUAL_ENV``, and its ``bin`` in ``PATH``) and Open MPI's commands first on ``PATH``
  (the image has Open MPI in /usr/bin and no other MPI; this machine's venv also has MPICH's ``mpirun`` from PyPI,
  which the image must not see);
* ``KUBERNETES_SERVICE_HOST``/``_PORT``: the kubelet sets them in every container (kubernetes/kubernetes
  pkg/kubelet/kubelet_pods.go getServiceEnvVarMap, the master service always), here the address at which the
  launcher pod reaches the API emulator: a relay (socat) on the pod's loopback to the emulator's port, as a pod
  reaches the API through the ``kubernetes`` Service;
* the image's ``/etc/ssh``: docker/ssh's configuration files, installed as the Dockerfile installs them, over this
  machine's Debian defaults, with host keys made once per image (the Dockerfile's ``ssh-keygen -A``).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tests.conftest import REPO_ROOT
from tests.support.pod_network import Pod, PodNetwork, cmdline, tee, volume_files, write_volume

DOCKERFILE = REPO_ROOT / "docker" / "Dockerfile"
SSH_CONF = REPO_ROOT / "docker" / "ssh"
OPEN_MPI_COMMANDS = ("mpirun", "mpiexec", "orterun", "orted", "ompi_info")
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # Debian's default PATH
TERMINATION_GRACE_S = 30.0  # a pod's terminationGracePeriodSeconds default (k8s.io/api core/v1 types.go)


def dockerfile_env(path: Path = DOCKERFILE) -> dict[str, str]:
    """The ``ENV key=value ...`` instructions of a Dockerfile (``\\`` continuations, ``$VAR`` of earlier keys)."""
    text = re.sub(r"\\\n", " ", path.read_text())
    env: dict[str, str] = {}
    for line in text.splitlines():
        if not line.startswith("ENV "):
            continue
        for key, value in re.findall(r"(\w+)=(\S+)", line[4:]):
            env[key] = re.sub(r"\$(\w+)", lambda m: env.get(m.group(1), ""), value)
    return env


class Image:
    """What every pod's container runs from: this machine's file system as the image, its ENV and ``/etc/ssh``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.etc_ssh = self._etc_ssh(workdir / "etc-ssh")
        # sshd's privilege-separation directory: the Dockerfile's `mkdir -p /run/sshd` (Debian's package makes it
        # only when its service starts, which make setup-system does not let it do)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.mpi_bin = workdir / "open-mpi-bin"
        self.mpi_bin.mkdir(exist_ok=True)
        for name in OPEN_MPI_COMMANDS:
            target = shutil.which(name, path="/usr/bin")
            if target is None:
                raise RuntimeError(f"Open MPI's {name} is not in /usr/bin: run `make setup-system` (as root)")
            (self.mpi_bin / name).symlink_to(target)
        venv = Path(sys.prefix)
        declared = dockerfile_env()
        image_venv = declared.get("VIRTUAL_ENV", "/opt/venv")
        self.env = {k: v.replace(image_venv, str(venv)) for k, v in declared.items()}
        self.env["PATH"] = f"{self.mpi_bin}:{venv / 'bin'}:{SYSTEM_PATH}"
        self.env.setdefault("HOME", "/root")  # the container runtime's default for root
        self.env.pop("DEBIAN_FRONTEND", None)

    @staticmethod
    def _etc_ssh(target: Path) -> Path:
        """This machine's /etc/ssh (Debian's configuration, which includes ``*_config.d/*.conf``), docker/ssh's
        files dropped in, and host keys of this image."""
        shutil.copytree("/etc/ssh", target, symlinks=True, ignore=shutil.ignore_patterns("ssh_host_*"))
        for sub in ("ssh_config.d", "sshd_config.d"):
            (target / sub).mkdir(exist_ok=True)
            for conf in (SSH_CONF / sub).glob("*.conf"):
                shutil.copy(conf, target / sub / conf.name)
        keyroot = target.parent / "ssh-keygen-root"
        (keyroot / "etc" / "ssh").mkdir(parents=True, exist_ok=True)
        subprocess.run(["ssh-keygen", "-A", "-f", str(keyroot)], check=True, capture_output=True, timeout=60)
        for key in (keyroot / "etc" / "ssh").iterdir():
            shutil.copy2(key, target / key.name)
        return target


class NetnsKubelet:
    """Runs the simulator's pods as hosts: :meth:`start_pod` for workers, :meth:`run_launcher` as its runner.

    *claims* maps a PVC name to the directory that is that volume (shared by every pod that mounts it). The
    emulator's API is reached from the launcher pod at *api_port* on its loopback (a relay to the emulator)."""

    def __init__(self, network: PodNetwork, image: Image, claims: Mapping[str, Path], api_port: int,
                 relay_socket: Path) -> None:
        self.network = network
        self.image = image
        self.claims = dict(claims)
        self.api_port = api_port
        self.relay_socket = relay_socket
        self.containers: dict[str, subprocess.Popen[str]] = {}
        self.logs: dict[str, list[str]] = {}
        self.infra: dict[str, set[int]] = {}  # pids that are not the job's (the API relay)
        self._lock = threading.Lock()

    # ---- pods ---------------------------------------------------------------------------------------------------
    def _pod(self, namespace: str, spec: Mapping[str, Any], name: str,
             get: Callable[[str, str | None, str], Any]) -> Pod:
        """The pod's host with its volumes mounted, /etc/hosts and the image's /etc/ssh."""
        with self._lock:
            pod = self.network.add_pod(spec.get("hostname") or name, namespace=namespace,
                                       subdomain=spec.get("subdomain") or "")
            self.network.write_hosts()
        pod.mounts["/etc/ssh"] = self.image.etc_ssh
        container = spec["containers"][0]
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        for mount in container.get("volumeMounts") or []:
            volume = volumes[mount["name"]]
            pod.mounts[mount["mountPath"]] = self._volume(pod, namespace, volume, get)
        return pod

    def _volume(self, pod: Pod, namespace: str, volume: Mapping[str, Any],
                get: Callable[[str, str | None, str], Any]) -> Path:
        target = pod.root / "volumes" / volume["name"]
        for key, kind, name_field, encoded in (("secret", "Secret", "secretName", True),
                                               ("configMap", "ConfigMap", "name", False)):
            if key not in volume:
                continue
            source = volume[key]
            obj = get(kind, namespace, source[name_field])
            if obj is None:  # the kubelet's text (kubelet_pods.go, as the simulator's _resolve_env gives it)
                raise RuntimeError(f'{kind.lower()} "{source[name_field]}" not found')
            files, modes = volume_files(source, obj.get("data") or {}, base64_data=encoded)
            return write_volume(target, files, modes)
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            if claim not in self.claims:
                raise RuntimeError(f"PVC {claim!r} has no volume on this machine (claims: {sorted(self.claims)})")
            return self.claims[claim]
        if "emptyDir" in volume:
            target.mkdir(parents=True, exist_ok=True)
            return target
        raise RuntimeError(f"volume {volume['name']!r}: this kubelet mounts secret, configMap, PVC and emptyDir only")

    def _env(self, container_env: Mapping[str, str]) -> dict[str, str]:
        env = dict(self.image.env)
        env.update(KUBERNETES_SERVICE_HOST="127.0.0.1", KUBERNETES_SERVICE_PORT=str(self.api_port))
        env.update(container_env)
        return env

    def start_pod(self, namespace: str, pod_obj: Mapping[str, Any], env: Mapping[str, str],
                  get: Callable[[str, str | None, str], Any]) -> None:
        """Start a worker pod's container (the simulator calls this before marking the pod Running)."""
        name = pod_obj["metadata"]["name"]
        spec = pod_obj["spec"]
        pod = self._pod(namespace, spec, name, get)
        container = spec["containers"][0]
        argv = [*container.get("command", []), *container.get("args", [])]
        proc = pod.popen(argv, self._env(env), cwd=container.get("workingDir"))
        self.containers[name] = proc
        lines = self.logs.setdefault(name, [])
        threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True).start()

    def stop_pod(self, namespace: str, name: str) -> None:
        """The kubelet's stop: SIGTERM to the container, SIGKILL after the grace period (kuberuntime_container.go
        killContainer). Processes the container left in the pod go with the pod's sandbox."""
        pod = self.network.pods.get(name)
        proc = self.containers.get(name)
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=TERMINATION_GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        if pod is not None:
            pod.kill_all()

    # ---- the launcher -------------------------------------------------------------------------------------------
    def run_launcher(self, run: Any) -> int:
        """The simulator's runner: the launcher container, run in its own pod; returns its exit code."""
        assert run.get is not None
        pod = self._pod(run.namespace, run.spec, run.pod, run.get)
        relay = pod.popen(["socat", f"TCP-LISTEN:{self.api_port},bind=127.0.0.1,fork,reuseaddr",
                           f"UNIX-CONNECT:{self.relay_socket}"], {"PATH": "/usr/bin:/bin"},
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.infra[pod.name] = {relay.pid}
        proc = pod.popen(run.command, self._env(run.env), cwd=run.cwd)
        self.containers[run.pod] = proc

        def on_kill() -> None:  # the pod is deleted: SIGTERM to the container, as the kubelet does
            run.killed.wait()
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)

        threading.Thread(target=on_kill, daemon=True).start()
        tee(proc, run.stdout)
        rc = proc.wait()
        return 128 - rc if rc < 0 else rc

    def job_processes(self, name: str) -> dict[int, str]:
        """Processes in pod *name* other than its container's own (sshd's listener) and the relay."""
        pod = self.network.pods[name]
        own = self.infra.get(name, set())
        container = self.containers.get(name)
        if container is not None:
            own = own | {container.pid}
        return {pid: cmdline(pid) for pid in pod.pids() - own if not _is_sshd_listener(pid)}


def _is_sshd_listener(pid: int) -> bool:
    line = cmdline(pid)
    return line.startswith("sshd: /usr/sbin/sshd -De [listener]") or line in ("/usr/sbin/sshd -De",)


def start_api_relay(api_port: int, socket_path: Path) -> subprocess.Popen[bytes]:
    """The API's side of the pod's route to it: a unix socket that the launcher pod's relay connects through to the
    emulator's port on this machine's loopback."""
    return subprocess.Popen(["socat", f"UNIX-LISTEN:{socket_path},fork,unlink-early",
                             f"TCP:127.0.0.1:{api_port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
