"""Why a launch failed, as one line on the MLflow run (``mlflow_anf.launcher.error``): picked from the launch
command's last output lines. The samples are what Open MPI 4.1, horovodrun 0.28.1 and OpenSSH printed in
tests/test_ssh_launch.py's failures (a rank killed, sshd down, a silent worker)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mlflow_anf.backend.launcher import failure_reason

RANK_KILLED = """\
[1,0]<stderr>:INFO mlflow_anf_lanedet.train: rank 0/2 on host job-worker-0 (local rank 0/1)
--------------------------------------------------------------------------
Primary job  terminated normally, but 1 process returned
a non-zero exit code. Per user-direction, the job has been aborted.
--------------------------------------------------------------------------
--------------------------------------------------------------------------
mpirun noticed that process rank 1 with PID 20695 on node job-worker-1.job.lane.svc exited on signal 9 (Killed).
--------------------------------------------------------------------------
"""
DAEMONS = """\
ssh: connect to host job-worker-1.job.lane.svc port 22: Connection timed out
--------------------------------------------------------------------------
ORTE was unable to reliably start one or more daemons.
This usually is caused by:

* not finding the required libraries and/or binaries on
  one or more nodes.
--------------------------------------------------------------------------
"""
SSH_CHECK = """\
Checking whether all hosts are reachable via ssh ...
ssh: connect to host job-worker-1.job.lane.svc port 22: Connection refused
Traceback (most recent call last):
  File "/opt/venv/bin/horovodrun", line 8, in <module>
"""
RANK_ERROR = """\
[rank 1/2] training failed: FileNotFoundError: /mnt/tusimple/train_set.json
Traceback (most recent call last):
FileNotFoundError: /mnt/tusimple/train_set.json
"""


@pytest.mark.parametrize(("output", "rc", "reason"), [
    (RANK_KILLED, 137, "exit code 137: mpirun noticed that process rank 1 with PID 20695 on node "
                       "job-worker-1.job.lane.svc exited on signal 9 (Killed)."),
    (DAEMONS, 255, "exit code 255: ORTE was unable to reliably start one or more daemons."),
    (SSH_CHECK, 1, "exit code 1: ssh: connect to host job-worker-1.job.lane.svc port 22: Connection refused"),
    (RANK_ERROR, 1, "exit code 1: [rank 1/2] training failed: FileNotFoundError: /mnt/tusimple/train_set.json"),
    ("step 1\nstep 2\nsomething odd happened\n\n", 3, "exit code 3: something odd happened"),
    ("", 2, "exit code 2 (no output)"),
])
def test_the_reason_is_the_most_telling_line(output: str, rc: int, reason: str) -> None:
    assert failure_reason(output.splitlines(keepends=True), rc) == reason


def test_horovod_is_built_with_mpi_and_gloo() -> None:
    """scripts/install_horovod.sh builds both controllers where Open MPI is installed (make setup-system does that):
    the operator's launcher starts Horovod with `horovodrun` (MPI) or Open MPI's `mpirun`, tests also with --gloo."""
    bin_dir = sys.executable.rsplit("/", 1)[0]
    out = subprocess.run([f"{bin_dir}/horovodrun", "--check-build"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = {line.strip() for line in out.stdout.splitlines()}
    assert {"[X] MPI", "[X] Gloo", "[X] PyTorch"} <= lines, out.stdout
