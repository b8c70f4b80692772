"""The operator's launch path against the same training on one host: 2-rank ``lanedet train`` (strategy=horovod)
started by the rendered launcher over ssh on two worker hosts, against ``horovodrun --gloo -np 2 -H localhost:2``.

* **ssh**: ``tests/test_ssh_launch.py::test_two_ranks_train_across_two_worker_hosts[horovodrun]`` (pods as network
  namespaces, sshd in the workers, Open MPI under horovodrun; see docs/distributed.md); the figure is the launcher's
  own command, from its ``command:`` line to its ``exit code`` line (pod log timestamps), so the MLflow run's
  creation, the data snapshot and the pods' start-up are not in it.
* **localhost**: the very command MLflow computes for the same parameters (``EntryPoint.compute_command``), under
  ``horovodrun --gloo`` on this host, on the same data; timed from start to exit.

Both on the same machine in the same invocation (needs root for the namespaces). The ratio is what the ssh
bootstrap, interface discovery and the MPI controller add to a tiny job: on a real job it is a fixed start-up cost.

    .venv/bin/python benchmarks/bench_ssh_launch.py [--quick] [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST = "tests/test_ssh_launch.py::test_two_ranks_train_across_two_worker_hosts[horovodrun]"
# the test's parameters (tests/test_ssh_launch.py Cluster.submit)
PARAMS = {"epochs": "1", "batch_size": "4", "val_batch_size": "4", "backbone": "resnet18", "input_size": "64x128",
          "num_workers": "0", "strategy": "horovod"}


def over_ssh() -> float:
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", TEST], cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    found = re.search(r"launch command ([\d.]+) s", out.stdout)
    if out.returncode != 0 or not found:
        raise SystemExit(f"the ssh launch test failed:\n{out.stdout[-4000:]}\n{out.stderr[-2000:]}")
    return float(found.group(1))


def on_localhost(tmp: Path) -> float:
    sys.path[:0] = [str(ROOT), str(ROOT / "project")]
    from mlflow.projects.utils import load_project

    from mlflow_anf_lanedet.assets import labels_0313_path, write_label_lines
    from tests.support.tiny_data import make_tiny_tusimple  # the test's data

    if not (tmp / "tusimple").exists():
        write_label_lines(labels_0313_path(), tmp / "label_data_0313.json")  # as tests/conftest.py fixtures_dir
        make_tiny_tusimple(tmp, tmp / "label_data_0313.json")
    params = {**PARAMS, "data_dir": str(tmp / "tusimple"), "output_dir": str(tmp / f"out-{time.time_ns()}")}
    command = load_project(str(ROOT)).get_entry_point("train").compute_command(params, str(tmp / "storage"))
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"}
    start = time.perf_counter()
    out = subprocess.run([str(bin_dir / "horovodrun"), "--gloo", "-np", "2", "-H", "localhost:2", "/bin/sh", "-c",
                          command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"horovodrun --gloo failed:\n{out.stdout[-4000:]}\n{out.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one run of each")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    repeat = 1 if args.quick else args.repeat
    with tempfile.TemporaryDirectory(prefix="bench-ssh-") as tmp:
        local = [on_localhost(Path(tmp)) for _ in range(repeat)]
    ssh = [over_ssh() for _ in range(repeat)]
    base = statistics.median(local)
    print(f"{'launch path':<52} {'median s':>9} {'runs':>5} {'vs localhost':>13}")
    print(f"{'horovodrun --gloo -np 2 -H localhost:2 (one host)':<52} {base:>9.1f} {repeat:>5} {1.0:>12.2f}x")
    med = statistics.median(ssh)
    print(f"{'launcher -> horovodrun (MPI) -> ssh -> 2 worker hosts':<52} {med:>9.1f} {repeat:>5} {med / base:>12.2f}x")


if __name__ == "__main__":
    main()
