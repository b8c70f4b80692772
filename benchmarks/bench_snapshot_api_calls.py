"""Kubernetes API calls per CSI snapshot: small vs large volumes, watch vs a straightforward polling baseline.

    .venv/bin/python benchmarks/bench_snapshot_api_calls.py            # 5 snapshots per row, 1.0 s to ready
    .venv/bin/python benchmarks/bench_snapshot_api_calls.py --quick    # 2 snapshots per row, 0.3 s to ready

The csi provider runs against the test API emulator (``tests/doubles/k8s_emulator.py``, HTTPS, official client) whose
simulated external-snapshotter takes ``ready_after`` seconds to make each snapshot ready. The emulator's request
log counts every API call. Rows, side by side in one process:

* ``watch``           - the provider as shipped: pre-checks, one create, one watch until ready, one content read;
* ``watch+keep_last`` - the same with retention (``keep_last=2``): one delete per snapshot in steady state;
* ``polling``         - baseline: the same provider with ``watch=False``, reading the snapshot every
  ``poll_interval_s`` (0.1 s) until ready, as a straightforward client would.

Goal: at most 3 writes per snapshot, independent of the data size (1 GiB vs 100 TiB restoreSize). The ratio column
is the baseline's calls over ours.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
SIZES = {"1Gi": "small", "100Ti": "large"}


def _fixtures_dir() -> Path:
    return REPO_ROOT / "fixtures"


def csi_calls(*, snapshots: int = 5, ready_after: float = 1.0, poll_interval_s: float = 0.1) -> list[dict[str, Any]]:
    """Run the csi provider against the emulator; one row per (mode, size) with mean API calls per snapshot."""
    sys.path.insert(0, str(REPO_ROOT))
    from mlflow_anf.snapshots.csi import CsiSnapshotProvider
    from tests.doubles.k8s_emulator import K8sServer, PvcBinder, SnapshotBehaviour, SnapshotController, make_tls_material

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-csi-") as tmp:
        tls = make_tls_material(Path(tmp) / "tls")
        with K8sServer(crds_dir=_fixtures_dir() / "crds", tls=tls) as server:
            server.add_controller(SnapshotController(SnapshotBehaviour(ready_after=ready_after)))
            server.add_controller(PvcBinder())
            server.objects.storage_class()
            server.objects.snapshot_class(default=True)
            kubeconfig = server.write_kubeconfig(Path(tmp) / "kubeconfig")
            modes = {
                "watch": {},
                "watch+keep_last": {"keep_last": 2},
                "polling": {"watch": False, "poll_interval_s": poll_interval_s},
            }
            for mode, options in modes.items():
                provider = CsiSnapshotProvider(kubeconfig=kubeconfig, ready_timeout_s=ready_after * 20 + 10,
                                               **options)
                for size, label in SIZES.items():
                    pvc = f"{mode.replace('+', '-').replace('_', '-')}-{label}"
                    server.objects.pvc(pvc, size=size)
                    if "keep_last" in options:  # reach steady state: every further snapshot prunes one
                        for i in range(options["keep_last"]):
                            provider.create(pvc, f"{pvc}-warm-{i}")
                    mark = server.mark()
                    started = time.perf_counter()
                    for i in range(snapshots):
                        snap = provider.create(pvc, f"{pvc}-{i}")
                        assert snap.ready and snap.size_bytes is not None
                    wall = time.perf_counter() - started
                    calls = server.api_calls(mark)
                    rows.append({
                        "mode": mode, "size": size, "restore_bytes": snap.size_bytes,
                        "reads": calls["reads"] / snapshots, "watches": calls["watches"] / snapshots,
                        "writes": calls["writes"] / snapshots,
                        "total": (calls["reads"] + calls["watches"] + calls["writes"]) / snapshots,
                        "seconds": wall / snapshots,
                    })
            server.assert_healthy()
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    baseline = {r["size"]: r["total"] for r in rows if r["mode"] == "polling"}
    print(f"{'mode':<17}{'restoreSize':>12}{'reads':>8}{'watches':>9}{'writes':>8}{'total':>8}{'s/snap':>8}"
          f"{'polling/ours':>14}")
    for r in rows:
        ratio = baseline[r["size"]] / r["total"] if r["total"] else float("nan")
        print(f"{r['mode']:<17}{r['size']:>12}{r['reads']:>8.1f}{r['watches']:>9.1f}{r['writes']:>8.1f}"
              f"{r['total']:>8.1f}{r['seconds']:>8.2f}{ratio:>13.1f}x")
    ours = [r for r in rows if r["mode"] != "polling"]
    worst = max(r["writes"] for r in ours)
    by_size = {size: {r["mode"]: (r["reads"], r["watches"], r["writes"]) for r in ours if r["size"] == size}
               for size in SIZES}
    same = len({tuple(sorted(v.items())) for v in by_size.values()}) == 1
    print(f"\nwrites per snapshot: at most {worst:g} (goal <= 3); provider calls identical for "
          f"{' and '.join(SIZES)}: {same} (the polling baseline's reads follow the time to ready, not the size)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 snapshots per row, 0.3 s to ready")
    parser.add_argument("--snapshots", type=int, default=None, help="snapshots per row (default 5, quick 2)")
    parser.add_argument("--ready-after", type=float, default=None, help="seconds until a snapshot is ready")
    args = parser.parse_args(argv)
    snapshots = args.snapshots or (2 if args.quick else 5)
    ready_after = args.ready_after if args.ready_after is not None else (0.3 if args.quick else 1.0)
    print(f"csi provider vs API emulator: {snapshots} snapshot(s) per row, {ready_after:g}s until readyToUse\n")
    print_table(csi_calls(snapshots=snapshots, ready_after=ready_after))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
