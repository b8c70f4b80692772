"""The wrapper that runs in the MPIJob's launcher pod: ``python -m mlflow_anf.backend.launcher [opts] -- COMMAND``.

``mlflow run --backend mpijob`` returns as soon as the job is submitted, so the launcher itself closes the MLflow run:

1. starts COMMAND (the entry-point command MLflow computed) on every MPI process with ``horovodrun`` or ``mpirun``,
   using the hostfile the MPI operator mounted (``/etc/mpi/hostfile``; its path is in the implementation's env var);
2. tees the merged stdout/stderr to the pod log and to ``launcher.log``, with the values of the secret environment
   variables (named in ``MLFLOW_ANF_SECRET_ENV``) replaced by ``***``;
3. logs ``launcher.log`` as a run artifact, takes the model snapshot when asked (only after a successful run);
4. sets the run's final status from the exit code (FINISHED / FAILED / KILLED on SIGTERM) and exits with it, so the
   launcher Job, and with it the MPIJob, succeed or fail like the training did.

:func:`run_launcher` takes the environment and the MLflow client as arguments (no global state), so tests drive it
in-process against a local store.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TextIO

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlflow_anf.vocabulary import (  # noqa: F401  (the names stay importable from this module)
    TAG_LAUNCHER_ERROR,
    TAG_LAUNCHER_EXIT_CODE,
    TAG_LAUNCHER_PREFIX,
    clip,
)
from mlflow_anf.backend.render import LAUNCHER_LOG_ARTIFACT, SECRET_ENV_LIST
from mlflow_anf.secrets import redact_text

__all__ = ["LaunchedProcess", "LauncherError", "LauncherOptions", "build_command", "main", "parse_args",
           "read_hostfile", "run_launcher"]

HOSTFILE_ENV = {
    "OpenMPI": "OMPI_MCA_orte_default_hostfile",
    "Intel": "I_MPI_HYDRA_HOST_FILE",
    "MPICH": "HYDRA_HOST_FILE",
}
DEFAULT_HOSTFILE = "/etc/mpi/hostfile"
# Variables OpenMPI's mpirun must forward explicitly (-x); hydra (MPICH/Intel) and horovodrun forward everything.
_FORWARD_PREFIXES = ("MLFLOW_", "NCCL_", "HOROVOD_", "CUDA_", "PYTORCH_", "TORCH_", "OMP_", "AZURE_", "KUBERNETES_")
_FORWARD_NAMES = ("PATH", "LD_LIBRARY_PATH", "PYTHONPATH", "HOME", "LANG", "LC_ALL", "TZ")
TAG_PREFIX = TAG_LAUNCHER_PREFIX
EXIT_NO_LAUNCHER = 127
EXIT_BAD_HOSTFILE = 2
EXIT_SNAPSHOT_FAILED = 3


class LauncherError(Exception):
    """The launcher cannot start the command (missing hostfile, missing horovodrun/mpirun, ...)."""


class LauncherOptions(BaseModel):
    """Command-line options of the wrapper (rendered by :func:`mlflow_anf.backend.render.launcher_args`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    launcher: Literal["horovodrun", "mpirun"] = "horovodrun"
    mpi_implementation: Literal["OpenMPI", "Intel", "MPICH"] = "OpenMPI"
    processes: int = Field(default=1, ge=1)
    slots_per_worker: int = Field(default=1, ge=1)
    log_artifact: str = LAUNCHER_LOG_ARTIFACT
    mpi_args: list[str] = Field(default_factory=list)
    model_snapshot: str | None = Field(default=None, description="namespace/pvc to snapshot after success")
    model_path: str | None = Field(default=None, description="where the model is inside that volume (its root: '')")
    model_mount: str | None = Field(default=None, description="where that volume is mounted in this pod")
    snapshot_class: str | None = None
    snapshot_timeout: float = 600.0
    prune: list[str] = Field(default_factory=list, description="namespace/pvc volumes keep_last prunes")
    keep_last: int | None = Field(default=None, ge=1)
    command: str

    @model_validator(mode="after")
    def _model_path_with_snapshot(self) -> LauncherOptions:
        # a model snapshot is recorded only where the backend found the model on the volume (issue #13)
        if self.model_snapshot is not None and self.model_path is None:
            raise ValueError("--model-snapshot needs --model-path (where the entry point writes the model inside "
                             "that volume); without it the snapshot would not be known to hold the model")
        return self


def parse_args(argv: Sequence[str]) -> LauncherOptions:
    parser = argparse.ArgumentParser(prog="python -m mlflow_anf.backend.launcher",
                                     description="Run an MLflow entry point on all MPI processes and close the run.")
    parser.add_argument("--launcher", choices=["horovodrun", "mpirun"], default="horovodrun")
    parser.add_argument("--mpi-implementation", choices=["OpenMPI", "Intel", "MPICH"], default="OpenMPI")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--slots-per-worker", type=int, default=1)
    parser.add_argument("--log-artifact", default=LAUNCHER_LOG_ARTIFACT)
    parser.add_argument("--mpi-arg", action="append", default=[], dest="mpi_args")
    parser.add_argument("--model-snapshot", default=None, metavar="NAMESPACE/PVC")
    parser.add_argument("--model-path", default=None, metavar="PATH")
    parser.add_argument("--model-mount", default=None, metavar="DIR")
    parser.add_argument("--snapshot-class", default=None)
    parser.add_argument("--snapshot-timeout", type=float, default=600.0)
    parser.add_argument("--prune", action="append", default=[], metavar="NAMESPACE/PVC")
    parser.add_argument("--keep-last", type=int, default=None)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND (the entry-point shell command)")
    ns = parser.parse_args(list(argv))
    command = ns.command[1:] if ns.command[:1] == ["--"] else ns.command
    if not command:
        parser.error("missing the command after --")
    opts = vars(ns)
    opts["command"] = command[0] if len(command) == 1 else shlex.join(command)
    return LauncherOptions(**opts)


def read_hostfile(path: str | Path) -> list[tuple[str, int]]:
    """Hosts and slots from an OpenMPI (``host slots=N``) or hydra (``host:N``) hostfile."""
    hosts: list[tuple[str, int]] = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise LauncherError(f"hostfile {path}: cannot read: {exc}") from None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        slots = 1
        try:
            if " " in line:
                host, *rest = line.split()
                for item in rest:
                    if item.startswith("slots="):
                        slots = int(item.split("=", 1)[1])
            elif ":" in line:
                host, count = line.rsplit(":", 1)
                slots = int(count)
            else:
                host = line
        except ValueError:
            raise LauncherError(f"hostfile {path}:{lineno}: cannot parse {raw!r}") from None
        if slots < 1:
            raise LauncherError(f"hostfile {path}:{lineno}: slots must be >= 1")
        hosts.append((host, slots))
    if not hosts:
        raise LauncherError(f"hostfile {path}: no hosts")
    return hosts


def hostfile_path(opts: LauncherOptions, env: Mapping[str, str]) -> str:
    return env.get(HOSTFILE_ENV[opts.mpi_implementation]) or DEFAULT_HOSTFILE


def command_argv(command: str) -> list[str]:
    """The entry-point command as argv; through ``/bin/sh -c`` when it uses shell syntax (operators, ``$``)."""
    if "$" in command or "`" in command:
        return ["/bin/sh", "-c", command]
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:
        return ["/bin/sh", "-c", command]
    if any(tok and set(tok) <= set("();<>|&") for tok in tokens):
        return ["/bin/sh", "-c", command]
    return tokens


def forwarded_env(env: Mapping[str, str], secret_names: Sequence[str] = ()) -> list[str]:
    """Names OpenMPI's mpirun must pass on to every rank with ``-x``."""
    names = {n for n in env if n.startswith(_FORWARD_PREFIXES) or n in _FORWARD_NAMES}
    names |= {n for n in secret_names if n in env}
    names |= {n for n in (env.get("MLFLOW_ANF_FORWARD_ENV", "").split(",")) if n and n in env}
    return sorted(names)


def build_command(opts: LauncherOptions, hosts: list[tuple[str, int]], hostfile: str,
                  env: Mapping[str, str], secret_names: Sequence[str] = ()) -> list[str]:
    """The ``horovodrun``/``mpirun`` argv that runs the entry point on ``opts.processes`` ranks."""
    argv = command_argv(opts.command)
    slots = sum(s for _, s in hosts)
    if slots < opts.processes:
        raise LauncherError(f"hostfile {hostfile}: {slots} slots for {opts.processes} processes")
    if opts.launcher == "horovodrun":
        host_list = ",".join(f"{h}:{s}" for h, s in hosts)
        return ["horovodrun", "-np", str(opts.processes), "-H", host_list, *opts.mpi_args, *argv]
    if opts.mpi_implementation == "OpenMPI":
        cmd = ["mpirun", "--allow-run-as-root", "-np", str(opts.processes), "--hostfile", hostfile,
               "-bind-to", "none", "-map-by", "slot"]
        for name in forwarded_env(env, secret_names):
            cmd += ["-x", name]
        return [*cmd, *opts.mpi_args, *argv]
    # MPICH and Intel MPI (hydra): the environment is forwarded to every rank by default.
    return ["mpirun", "-n", str(opts.processes), "-f", hostfile, *opts.mpi_args, *argv]


class Redactor:
    """Replaces the values of secret environment variables (values shorter than 4 chars are left) and anything else
    that looks like a credential (:func:`mlflow_anf.secrets.redact_text`) in text."""

    def __init__(self, env: Mapping[str, str], names: Sequence[str]) -> None:
        self._values = [env[n] for n in names if n in env]

    def __call__(self, text: str) -> str:
        return redact_text(text, self._values)


def secret_env_names(env: Mapping[str, str]) -> list[str]:
    return [n for n in env.get(SECRET_ENV_LIST, "").split(",") if n]


class LaunchedProcess:
    """The running horovodrun/mpirun process group; SIGTERM to the launcher is passed on to it."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.killed = False

    def terminate(self) -> None:
        self.killed = True
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


# What says why a launch failed, most telling first: Open MPI's and Horovod's own summaries, ssh's refusal, then a
# rank's own "[rank R/N] training failed" line (mlflow_anf_lanedet.distributed.fail_fast) or a Python exception.
_REASONS = (
    re.compile(r"mpirun noticed that process rank \d+ .*"),  # Open MPI: a rank died (orte/mca/errmgr help text)
    re.compile(r"ORTE was unable to reliably start one or more daemons.*"),  # Open MPI: orted not started on a host
    re.compile(r"ssh: connect to host .*|ssh: Could not resolve hostname .*|Permission denied \(publickey.*"),
    re.compile(r"(?:horovod\S*|Horovod).*(?:failed|error|not reachable|Could not).*", re.IGNORECASE),
    re.compile(r"\[rank \d+/\d+\] training failed: .*"),
    re.compile(r"^(?:\w+\.)*\w*(?:Error|Exception): .*"),
)
_TAIL_LINES = 200


def failure_reason(lines: Sequence[str], rc: int) -> str:
    """One line for the run: why the launch command exited *rc*, from the last lines of its output."""
    text = [line.strip() for line in lines if line.strip()]
    for pattern in _REASONS:
        for line in reversed(text):
            found = pattern.search(line)
            if found:
                return f"exit code {rc}: {found.group(0)}"
    return f"exit code {rc}" + (f": {text[-1]}" if text else " (no output)")


def _tee(proc: subprocess.Popen[str], sinks: Sequence[TextIO], redact: Redactor) -> list[str]:
    """Copy the output to *sinks* line by line (redacted); returns its last lines."""
    assert proc.stdout is not None
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
    for line in proc.stdout:
        line = redact(line)
        tail.append(line)
        for sink in sinks:
            sink.write(line)
            sink.flush()
    return list(tail)


def run_launcher(
    opts: LauncherOptions,
    env: Mapping[str, str],
    *,
    client: Any = None,
    stdout: TextIO | None = None,
    cwd: str | None = None,
    snapshot_model: Callable[[LauncherOptions, Mapping[str, str], str, Any], Any] | None = None,
    child: LaunchedProcess | None = None,
) -> int:
    """Run the entry point on all ranks, log, snapshot, close the MLflow run; return the exit code.

    *env* is the pod's environment (``MLFLOW_RUN_ID``, ``MLFLOW_TRACKING_URI``, the hostfile variable, ...).
    *client* defaults to an ``MlflowClient`` for ``MLFLOW_TRACKING_URI``; *snapshot_model* to the csi provider.
    """
    out = stdout or sys.stdout
    run_id = env.get("MLFLOW_RUN_ID")
    if not run_id:
        out.write("[mlflow-anf launcher] MLFLOW_RUN_ID is not set; refusing to run without a run to close\n")
        return EXIT_BAD_HOSTFILE
    if client is None:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=env.get("MLFLOW_TRACKING_URI"))
    secrets = secret_env_names(env)
    redact = Redactor(env, secrets)
    child = child or LaunchedProcess()
    workdir = tempfile.mkdtemp(prefix="mlflow-anf-launcher-")
    log_path = Path(workdir) / opts.log_artifact
    with open(log_path, "w", encoding="utf-8") as log:
        def say(msg: str) -> None:
            line = redact(f"[mlflow-anf launcher] {msg}\n")
            out.write(line)
            out.flush()
            log.write(line)
            log.flush()

        rc, error = _run_command(opts, env, run_id, child, say, (out, log), redact, secrets, cwd)
    status = "KILLED" if child.killed else ("FINISHED" if rc == 0 else "FAILED")
    rc = _close_run(opts, env, run_id, client, child, rc, status, error, log_path, out, redact, snapshot_model)
    out.flush()
    shutil.rmtree(workdir, ignore_errors=True)
    return rc


def _run_command(opts: LauncherOptions, env: Mapping[str, str], run_id: str, child: LaunchedProcess,
                 say: Callable[[str], None], sinks: tuple[TextIO, TextIO], redact: Redactor, secrets: Any,
                 cwd: str | None) -> tuple[int, str | None]:
    """Start the launch command on all ranks and tee its output; returns (exit code, error or None)."""
    try:
        hostfile = hostfile_path(opts, env)
        hosts = read_hostfile(hostfile)
        cmd = build_command(opts, hosts, hostfile, env, secrets)
        exe = shutil.which(cmd[0], path=env.get("PATH"))
        if exe is None:
            raise LauncherError(f"{cmd[0]} not found on PATH; is it installed in the image?")
        say(f"run {run_id}: {opts.processes} processes on {len(hosts)} hosts with {opts.launcher}")
        say("command: " + shlex.join(cmd))
        if child.killed:
            raise LauncherError("terminated before the command started")
        child.proc = subprocess.Popen(
            [exe, *cmd[1:]], env=dict(env), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, errors="replace", start_new_session=True,
        )
        if child.killed:  # a SIGTERM between the check above and Popen
            child.terminate()
        tail = _tee(child.proc, sinks, redact)
        raw_rc = child.proc.wait()
        rc = 128 + (-raw_rc) if raw_rc < 0 else raw_rc
        say(f"exit code {rc}" + (" (terminated)" if child.killed else ""))
        if rc != 0 and not child.killed:
            reason = failure_reason(tail, rc)
            say(f"failed: {reason}")
            return rc, reason
        return rc, None
    except LauncherError as exc:
        error = str(exc)
        say(f"error: {error}")
        return (EXIT_NO_LAUNCHER if "not found on PATH" in error else EXIT_BAD_HOSTFILE), error


def _close_run(opts: LauncherOptions, env: Mapping[str, str], run_id: str, client: Any, child: LaunchedProcess,
               rc: int, status: str, error: str | None, log_path: Path, out: TextIO, redact: Redactor,
               snapshot_model: Callable[[LauncherOptions, Mapping[str, str], str, Any], Any] | None) -> int:
    """Upload the log, snapshot the model after a success, tag and end the run; returns the final exit code."""
    try:
        client.log_artifact(run_id, str(log_path))
    except Exception as exc:  # the log is precious but must not change the run's outcome
        out.write(redact(f"[mlflow-anf launcher] could not upload {opts.log_artifact}: {exc}\n"))
    if rc == 0 and opts.model_snapshot and not child.killed:
        try:
            snap = (snapshot_model or take_model_snapshot)(opts, env, run_id, client)
            out.write(f"[mlflow-anf launcher] model snapshot {getattr(snap, 'ref', snap)}\n")
        except Exception as exc:
            error = redact(f"model snapshot of {opts.model_snapshot} failed: {exc}")
            out.write(f"[mlflow-anf launcher] {error}\n")
            rc, status = EXIT_SNAPSHOT_FAILED, "FAILED"
    if rc == 0 and opts.keep_last and opts.prune and not child.killed:
        try:  # the run succeeded: a failed clean-up is reported, never turned into a failure
            deleted = prune_snapshots(opts, env, run_id)
            out.write(f"[mlflow-anf launcher] keep_last={opts.keep_last}: deleted {', '.join(deleted) or 'nothing'}\n")
        except Exception as exc:
            out.write(redact(f"[mlflow-anf launcher] keep_last={opts.keep_last}: could not prune: {exc}\n"))
    tags = {TAG_LAUNCHER_EXIT_CODE: str(rc)}
    if error:
        tags[TAG_LAUNCHER_ERROR] = clip(error)
    try:
        for key, value in tags.items():
            client.set_tag(run_id, key, value)
        client.set_terminated(run_id, status)
    except Exception as exc:
        out.write(redact(f"[mlflow-anf launcher] could not set the run status to {status}: {exc}\n"))
        rc = rc or 1
    return rc


def check_model_on_volume(opts: LauncherOptions, env: Mapping[str, str]) -> None:
    """Refuse the model snapshot when the model is not on the model volume mounted in this pod: a snapshot of a
    volume that does not hold the model is never recorded as the run's model.

    Only in a pod: the kubelet sets ``KUBERNETES_SERVICE_HOST`` in every container, even with
    ``enableServiceLinks: false`` (kubernetes/kubernetes ``pkg/kubelet/kubelet_pods.go``, ``getServiceEnvVarMap``:
    the master service's variables are always added). A launcher run elsewhere (the tests' simulated operator runs it
    in-process) has no pod mounts to look at; the backend's check before submitting stands alone there."""
    if not opts.model_mount or not env.get("KUBERNETES_SERVICE_HOST"):
        return
    model = Path(opts.model_mount, opts.model_path or "")
    if not model.exists():
        raise LauncherError(f"the entry point exited 0 but wrote no model at {model} on the model volume "
                            f"{opts.model_snapshot}; no model snapshot taken")


def take_model_snapshot(opts: LauncherOptions, env: Mapping[str, str], run_id: str, client: Any) -> Any:
    """Snapshot ``opts.model_snapshot`` (namespace/pvc) with the csi provider and record it on the run.

    In a pod the provider uses the pod's service account; ``KUBECONFIG`` in *env* (tests, out-of-cluster
    launchers) points it elsewhere.
    """
    from mlflow_anf.backend.snapshots import job_snapshot_provider
    from mlflow_anf.tracking import snapshot_and_log

    assert opts.model_snapshot is not None
    check_model_on_volume(opts, env)
    namespace = opts.model_snapshot.split("/", 1)[0]
    kubeconfig = env.get("KUBECONFIG") or None
    provider = job_snapshot_provider(namespace, timeout_s=opts.snapshot_timeout, snapshot_class=opts.snapshot_class,
                                     kubeconfig=kubeconfig, in_cluster="false" if kubeconfig else None)
    # artifact_path: the recorded artifact_uri points at the model inside the snapshot, not at the volume's root
    return snapshot_and_log(provider, opts.model_snapshot, "model", run_id=run_id, client=client,
                            artifact_path=opts.model_path)


def prune_snapshots(opts: LauncherOptions, env: Mapping[str, str], run_id: str) -> list[str]:
    """``snapshot.keep_last`` after a success (:func:`mlflow_anf.backend.budget.prune_after_success`), reaching the
    cluster as :func:`take_model_snapshot` does."""
    from mlflow_anf.backend.budget import prune_after_success
    from mlflow_anf.backend.snapshots import job_snapshot_provider

    assert opts.keep_last is not None
    kubeconfig = env.get("KUBECONFIG") or None
    provider = job_snapshot_provider(opts.prune[0].split("/", 1)[0], timeout_s=opts.snapshot_timeout,
                                     kubeconfig=kubeconfig, in_cluster="false" if kubeconfig else None)
    return prune_after_success(provider, opts.prune, opts.keep_last, run_id)


def main(argv: Sequence[str] | None = None) -> None:
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    child = LaunchedProcess()
    signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    signal.signal(signal.SIGINT, lambda *_: child.terminate())
    sys.exit(run_launcher(opts, dict(os.environ), child=child, cwd=os.getcwd()))


if __name__ == "__main__":
    main()
