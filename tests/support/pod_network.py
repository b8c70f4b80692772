"""Pods as real hosts on this machine: one network namespace per pod, a cluster network between them, and each pod's
files (its volumes, ``/etc/hosts``, the image's ``/etc/ssh``) bind-mounted where the container would see them.

What a pod is here, and what it models (docs/distributed.md has the whole picture):

* **Its own network stack** (``ip netns``): ``lo`` and ``eth0``, one end of a veth pair whose other end is on a
  bridge in a separate namespace (the node's CNI bridge), with an address of the pod network. Pods reach each other
  by IP as pods on a cluster network do; nothing else on the machine is reachable from them.
* **Its own hostname** (a UTS namespace): ``spec.hostname`` (the operator sets ``<job>-worker-<i>`` and
  ``<job>-launcher``: kubeflow/mpi-operator pkg/controller/mpi_job_controller.go newWorker :1512 and
  newLauncherPodTemplate :1603).
* **Names as cluster DNS answers them**: ``/etc/hosts`` lists every pod of the job as
  ``<hostname>.<subdomain>.<namespace>.svc.cluster.local``, ``<hostname>.<subdomain>.<namespace>.svc`` and
  ``<hostname>``: the headless Service ``<job>`` publishes the first form (kubernetes/dns docs/specification.md
  2.4.1, "Hostname" with "subdomain"); the launcher's hostfile uses the ``.svc`` form, which the pod's search list
  completes (``<namespace>.svc.cluster.local ...``, ndots:5), and the workers' search list holds
  ``<job>.<namespace>.svc.cluster.local`` so that bare hostnames resolve (mpi_job_controller.go :1521-1526).
* **Its volumes** (a mount namespace of its own): Secret and ConfigMap volumes written as the kubelet writes them
  (kubernetes/kubernetes pkg/volume/util/atomic_writer.go: a timestamped directory, ``..data`` pointing at it, and
  one symlink per item; the file modes from ``items[].mode``, else ``defaultMode``, else 0644 - pkg/volume/secret/
  secret.go and configmap.go ``MakePayload``) and bind-mounted at ``mountPath``; a PVC is the shared directory the
  test gives for its claim, bind-mounted at ``mountPath`` in every pod (ReadWriteMany, as ANF volumes are).
* **Its image**: this machine's file system, with the image's ``/etc/ssh`` (docker/ssh: the same files the Dockerfile
  installs, host keys made once per image) bind-mounted over ``/etc/ssh``. The image's ``PATH`` is given by the test.

Processes in a pod are started with ``ip netns exec`` + ``unshare --uts`` and the bind mounts; :meth:`Pod.pids` lists
every process in the pod's network namespace (``ip netns pids``), which is how tests check that nothing is left.
Creating the namespaces needs root and a kernel that allows them: where it is refused, :class:`PodNetwork` raises
:class:`PodNetworkRefused` with the command's error, and the tests fail with it (they never skip).
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
import random
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

IP = shutil.which("ip") or "/usr/sbin/ip"
UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"
PREFIX = "mlfa"  # every namespace and link this module makes starts with it (stale ones are removed by name)


class PodNetworkRefused(RuntimeError):
    """This machine refuses what a pod needs (network namespaces, veth, mount namespaces): the tests fail with it."""


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise PodNetworkRefused(f"{shlex.join(argv)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout}")
    return proc


def _ns(netns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run(IP, "netns", "exec", netns, *argv, check=check)


@dataclass
class Pod:
    """One pod: its network namespace, address, hostname, and what is mounted where inside it."""

    name: str
    namespace: str
    subdomain: str
    netns: str
    ip: str
    root: Path  # the pod's own files (volumes, /etc/hosts)
    network_cidr: str = ""
    mounts: dict[str, Path] = field(default_factory=dict)  # mount path in the pod -> directory/file on this machine
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{self.subdomain}.{self.namespace}.svc.cluster.local"

    def names(self) -> list[str]:
        svc = f"{self.name}.{self.subdomain}.{self.namespace}.svc"
        return [self.fqdn, svc, self.name]

    def popen(self, argv: Sequence[str], env: Mapping[str, str], *, cwd: str | None = None,
              stdout: Any = subprocess.PIPE, stderr: Any = subprocess.STDOUT) -> subprocess.Popen[str]:
        """Start *argv* in this pod (its network, hostname and mounts) with exactly *env*, in *cwd*."""
        for dst, src in self.mounts.items():
            _mount_point(Path(dst), directory=Path(src).is_dir())
        binds = "".join(f'mount --bind {shlex.quote(str(src))} {shlex.quote(dst)} && '
                        for dst, src in sorted(self.mounts.items()))
        script = f'hostname "$0" && {binds}cd {shlex.quote(cwd or "/")} && exec "$@"'
        full = [IP, "netns", "exec", self.netns, UNSHARE, "--uts", "--", "/bin/sh", "-c", script, self.name, *argv]
        proc = subprocess.Popen(full, env=dict(env), stdout=stdout, stderr=stderr, text=True, errors="replace",
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def pids(self) -> set[int]:
        """Every process in this pod's network namespace (whatever started it: sshd's children, orted, ranks)."""
        out = _run(IP, "netns", "pids", self.netns, check=False).stdout
        return {int(p) for p in out.split()}

    def drop_replies(self) -> None:
        """The pod's address stops answering without refusing anything: what it would send to the pod network
        goes to a blackhole route, so a connection attempt sees neither SYN-ACK nor RST (a partition, a dead node
        whose address is still routed) and only a timeout ends it."""
        _ns(self.netns, IP, "route", "replace", "blackhole", self.network_cidr)

    def kill_all(self) -> None:
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


def _mount_point(path: Path, *, directory: bool) -> None:
    """A bind mount needs its target to exist. Missing ones (``/etc/mpi``, ``/root/.ssh`` on a machine without) are
    made empty, once; they stay empty outside the pods."""
    if path.exists():
        return
    if directory:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


class PodNetwork:
    """The cluster network: a bridge in its own namespace and one namespace per pod, all removed by :meth:`close`."""

    def __init__(self, workdir: Path, tag: str | None = None) -> None:
        self.workdir = workdir
        self.tag = tag or f"{os.getpid() % 10000:04d}{random.randrange(100):02d}"
        self.bridge_ns = f"{PREFIX}{self.tag}-br"
        self.pods: dict[str, Pod] = {}
        self._netns: list[str] = []
        self._subnet = self._free_subnet()
        self._hosts = iter(self._subnet.hosts())
        next(self._hosts)  # .1 is the bridge's

    @staticmethod
    def _free_subnet() -> ipaddress.IPv4Network:
        """A /24 of 10.200-239.x.0 that no route on this machine uses (parallel sessions each take their own)."""
        used = _run(IP, "-4", "route", "show", "table", "all", check=False).stdout
        for _ in range(200):
            net = ipaddress.ip_network(f"10.{random.randrange(200, 240)}.{random.randrange(256)}.0/24")
            if str(net.network_address)[:-1] not in used:
                return net
        raise PodNetworkRefused("no free 10.200-239.x.0/24 for the pod network")

    # ---- lifecycle -------------------------------------------------------------------------------------------------
    def start(self) -> PodNetwork:
        if os.geteuid() != 0:
            raise PodNetworkRefused("pods as network namespaces need root (CI runs as root; run the tests with sudo)")
        self._remove_stale()
        self._add_netns(self.bridge_ns)
        _ns(self.bridge_ns, IP, "link", "add", "br0", "type", "bridge")
        _ns(self.bridge_ns, IP, "link", "set", "br0", "up")
        _ns(self.bridge_ns, IP, "link", "set", "lo", "up")
        return self

    def _add_netns(self, name: str) -> None:
        _run(IP, "netns", "add", name)
        self._netns.append(name)

    @staticmethod
    def _remove_stale() -> None:
        """Namespaces a killed test run left behind (their processes are gone with it: `ip netns pids` is empty)."""
        listed = _run(IP, "netns", "list", check=False).stdout.split("\n")
        for line in listed:
            name = line.split(" ", 1)[0]
            if name.startswith(PREFIX) and not _run(IP, "netns", "pids", name, check=False).stdout.strip():
                age = time.time() - os.stat(f"/run/netns/{name}").st_mtime if os.path.exists(f"/run/netns/{name}") \
                    else 0
                if age > 3600:
                    _run(IP, "netns", "delete", name, check=False)

    def add_pod(self, name: str, *, namespace: str, subdomain: str) -> Pod:
        index = len(self.pods)
        netns = f"{PREFIX}{self.tag}-p{index}"
        ip = str(next(self._hosts))
        self._add_netns(netns)
        host_end, pod_end = f"{PREFIX}{self.tag}h{index}", f"{PREFIX}{self.tag}c{index}"
        _run(IP, "link", "add", host_end, "type", "veth", "peer", "name", pod_end)
        _run(IP, "link", "set", host_end, "netns", self.bridge_ns)
        _run(IP, "link", "set", pod_end, "netns", netns)
        _ns(self.bridge_ns, IP, "link", "set", host_end, "master", "br0")
        _ns(self.bridge_ns, IP, "link", "set", host_end, "up")
        _ns(netns, IP, "link", "set", pod_end, "name", "eth0")
        _ns(netns, IP, "addr", "add", f"{ip}/{self._subnet.prefixlen}", "dev", "eth0")
        _ns(netns, IP, "link", "set", "eth0", "up")
        _ns(netns, IP, "link", "set", "lo", "up")
        root = self.workdir / name
        root.mkdir(parents=True, exist_ok=True)
        pod = Pod(name=name, namespace=namespace, subdomain=subdomain, netns=netns, ip=ip, root=root,
                  network_cidr=str(self._subnet))
        self.pods[name] = pod
        return pod

    def write_hosts(self) -> None:
        """Every pod's ``/etc/hosts``: itself as the kubelet writes it, the other pods as cluster DNS answers."""
        for pod in self.pods.values():
            lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
            lines += [f"{other.ip}\t{' '.join(other.names())}" for other in self.pods.values()]
            path = pod.root / "etc-hosts"
            path.write_text("\n".join(lines) + "\n")
            pod.mounts["/etc/hosts"] = path

    def close(self) -> None:
        for pod in self.pods.values():
            pod.kill_all()
        for name in reversed(self._netns):
            _run(IP, "netns", "delete", name, check=False)
        self._netns.clear()


# ---------------------------------------------------------------------------------------------- kubelet volumes
def write_volume(target: Path, files: Mapping[str, bytes], modes: Mapping[str, int]) -> Path:
    """A Secret/ConfigMap volume as the kubelet's atomic writer lays it out: ``..<timestamp>/<file>``, ``..data``
    pointing at that directory, and ``<file> -> ..data/<file>`` for each item (pkg/volume/util/atomic_writer.go
    Write: "..data" is the symlink swapped on update; the user-visible paths are symlinks through it)."""
    target.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("..%Y_%m_%d_%H_%M_%S.%f")
    data_dir = target / stamp
    data_dir.mkdir()
    for rel, content in files.items():
        path = data_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(modes[rel])
    (target / "..data").symlink_to(stamp)
    for rel in files:
        top = rel.split("/", 1)[0]
        link = target / top
        if not link.exists() and not link.is_symlink():
            link.symlink_to(f"..data/{top}")
    return target


def volume_files(volume: Mapping[str, Any], data: Mapping[str, str], *, base64_data: bool) -> tuple[
        dict[str, bytes], dict[str, int]]:
    """The files and modes of a Secret (``base64_data``) or ConfigMap volume source for *data* (its object's data):
    with ``items`` only those keys, at their paths, with ``items[].mode`` or ``defaultMode`` (0644 when unset:
    k8s.io/api core/v1 types.go SecretVolumeSourceDefaultMode / ConfigMapVolumeSourceDefaultMode)."""
    default_mode = volume.get("defaultMode", 0o644)
    items = volume.get("items") or [{"key": k, "path": k} for k in data]
    files: dict[str, bytes] = {}
    modes: dict[str, int] = {}
    for item in items:
        if item["key"] not in data:
            raise KeyError(f"volume item {item['key']!r} is not in the object (the kubelet would not start the pod)")
        raw = data[item["key"]]
        files[item["path"]] = base64.b64decode(raw) if base64_data else raw.encode()
        modes[item["path"]] = item.get("mode", default_mode)
    return files, modes


def tee(proc: subprocess.Popen[str], sink: TextIO) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        sink.write(line)
        sink.flush()
