"""ARM calls per ANF snapshot: the anf provider vs the bare SDK call, side by side against the local ARM emulator.

The figure that matters is **ARM write calls per snapshot** (writes are what ARM throttles hardest and what can
conflict with other operations on a volume); the goal is <= 3 and independent of how much data the volume holds.
*baseline* is the straightforward call every tool makes (``az netappfiles snapshot create`` does the same):
``client.snapshots.begin_create(...).result()``. *provider* is :meth:`AnfSnapshotProvider.create`, which adds a
list (limit + idempotency check) before the PUT. Both use the real ``azure-mgmt-netapp`` SDK over HTTPS; the emulator
records every request. Rows:

* data sizes 1 GiB .. 50 TiB (the emulator's volume fill; an ANF snapshot is a metadata operation);
* ``429 first``: the first PUT is throttled (``Retry-After: 0``), the SDK retries;
* ``lost answer``: the first PUT lands but its response is lost; the SDK re-sends it and gets 409. The provider
  adopts the snapshot; the bare call fails.

Then the write calls of the other operations (restore, revert, pool change, delete). Wall times are against a
local emulator (TLS, no network latency) and only show the relative overhead of the extra read.

    .venv/bin/python benchmarks/bench_anf_api_calls.py [--quick] [--snapshots N] [--lro-polls K]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _setup_path() -> None:
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)


class _StaticToken:
    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken(self.token, int(time.time()) + 3600)


def _measure(emu: Any, fn: Callable[[], Any]) -> dict[str, Any]:
    emu.clear_requests()
    start = time.perf_counter()
    try:
        fn()
        ok = "ok"
    except Exception as exc:  # the bare SDK call fails on a lost answer; that is a result, not a crash
        ok = type(exc).__name__
    ms = (time.perf_counter() - start) * 1e3
    arm = [r for r in emu.requests if r.is_arm]
    return {"writes": sum(r.is_write for r in arm), "reads": sum(not r.is_write for r in arm), "total": len(arm),
            "ms": ms, "ok": ok}


def run(snapshots: int, lro_polls: int) -> None:
    _setup_path()
    from mlflow_anf.snapshots.anf import AnfConfig, AnfSnapshotProvider
    from tests.doubles.arm_emulator import ACCOUNT, RG, ArmEmulator, seed_ml_estate

    token = "bench-token"
    with ArmEmulator(lro_polls=lro_polls) as emu:
        emu.allow_token(token)
        seed_ml_estate(emu)
        emu.add_pool(RG, ACCOUNT, "large", service_level="Premium", size_tib=128)
        emu.add_volume(RG, ACCOUNT, "large", "big", usage_threshold_gib=100 * 1024)
        config = AnfConfig(
            subscription_id=emu.subscription_id, resource_group=RG, account=ACCOUNT, pool="premium",
            base_url=emu.base_url, ca_bundle=emu.ca_file, polling_interval_s=0.005, retry_backoff_factor=0.01,
        )
        provider = AnfSnapshotProvider(config, credential=_StaticToken(token))
        client = provider.client  # the same configured SDK client, for the baseline
        counter = iter(range(10**9))

        def baseline(volume: str) -> None:
            pool, name = volume.split("/")
            client.snapshots.begin_create(RG, ACCOUNT, pool, name, f"b{next(counter)}",
                                          {"location": "westeurope"}).result()

        def ours(volume: str) -> None:
            provider.create(volume, f"p{next(counter)}")

        def sample(fn: Callable[[], Any], before: Callable[[], None] | None = None) -> dict[str, Any]:
            runs = []
            for _ in range(snapshots):
                if before:
                    before()
                runs.append(_measure(emu, fn))
            out: dict[str, Any] = {k: statistics.mean(r[k] for r in runs) for k in ("writes", "reads", "total")}
            out["ms"] = statistics.median(r["ms"] for r in runs)
            out["ok"] = ",".join(sorted({r["ok"] for r in runs}))
            return out

        ours("premium/data")
        baseline("premium/data")  # warm-up: TLS session, imports
        scenarios: list[tuple[str, str, Callable[[], None] | None]] = []
        for label, gib in (("1 GiB", 1), ("100 GiB", 100), ("10 TiB", 10 * 1024), ("50 TiB", 50 * 1024)):
            pool, vol = ("premium", "data") if gib <= 100 else ("large", "big")
            scenarios.append((f"data {label}", f"{pool}/{vol}",
                              lambda p=pool, v=vol, g=gib: emu.set_used(RG, ACCOUNT, p, v, g)))
        scenarios.append(("429 first", "premium/data",
                          lambda: emu.inject("PUT", "/snapshots/", status=429, retry_after="0")))
        scenarios.append(("lost answer", "premium/data",
                          lambda: emu.inject("PUT", "/snapshots/", kind="drop_response")))

        print(f"ARM calls per snapshot ({snapshots} snapshots per row, LRO done after {lro_polls} poll(s)); "
              "writes = PUT/POST/PATCH/DELETE sent, incl. retries")
        header = (f"{'scenario':<14} | {'provider W':>10} {'R':>5} {'all':>5} {'ms':>7} {'result':>8} | "
                  f"{'baseline W':>10} {'R':>5} {'all':>5} {'ms':>7} {'result':>19} | {'W ratio':>7} {'all ratio':>9}")
        print(header)
        print("-" * len(header))
        worst_writes = 0.0
        for name, volume, before in scenarios:
            p = sample(lambda v=volume: ours(v), before)
            b = sample(lambda v=volume: baseline(v), before)
            worst_writes = max(worst_writes, p["writes"])
            print(f"{name:<14} | {p['writes']:>10.1f} {p['reads']:>5.1f} {p['total']:>5.1f} {p['ms']:>7.1f} "
                  f"{p['ok']:>8} | {b['writes']:>10.1f} {b['reads']:>5.1f} {b['total']:>5.1f} {b['ms']:>7.1f} "
                  f"{b['ok']:>19} | {p['writes'] / b['writes']:>7.2f} {p['total'] / b['total']:>9.2f}")
        print(f"\nworst case: {worst_writes:g} ARM write(s) per snapshot (goal <= 3), the same for every data size")

        snap = provider.create("data", "bench-golden")
        provider.create("data", "bench-newer")
        other_ops: list[tuple[str, Callable[[], Any]]] = [
            ("restore to new volume", lambda: provider.restore(snap, "bench-restored")),
            ("revert (confirmed)", lambda: provider.revert("data", "bench-golden", confirm="data")),
            ("revert (no confirm)", lambda: provider.revert("data", "bench-golden", confirm=None)),
            ("pool change", lambda: provider.change_service_level("data", "standard")),
            ("delete snapshot", lambda: provider.delete("standard/data", "bench-golden")),
        ]
        print(f"\n{'operation':<22} {'writes':>6} {'reads':>6} {'result':>18}")
        for name, fn in other_ops:
            m = _measure(emu, fn)
            print(f"{name:<22} {m['writes']:>6} {m['reads']:>6} {m['ok']:>18}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 snapshots per row")
    ap.add_argument("--snapshots", type=int, default=20, help="snapshots per row")
    ap.add_argument("--lro-polls", type=int, default=2, help="polls before an emulated LRO finishes")
    args = ap.parse_args(argv)
    run(3 if args.quick else args.snapshots, args.lro_polls)


if __name__ == "__main__":
    main()
