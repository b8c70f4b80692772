"""Local snapshot creation vs a full copy (``shutil.copytree``) of the same generated tree, in one process.

    .venv/bin/python benchmarks/bench_snapshot.py            # 10,000 files (9,900 small + 100 x 2 MiB)
    .venv/bin/python benchmarks/bench_snapshot.py --quick    # 1,000 files, for a smoke run

Reported (best and median of --repeat rounds, each round: copy, first snapshot, repeated snapshot): the copy, the
first snapshot (hashes every byte), a repeated snapshot of the unchanged tree (reuses the digests of the previous one),
then once a snapshot after replacing 1 % of the files and a verify (re-hashes everything). Dirty pages are flushed
(``os.sync``, not timed) before each phase so one phase's write-back does not land in the next one's time; the copy is
timed until its data is in the page cache (no fsync), the snapshots with their default syncfs/fsync.
The goal is a repeated snapshot at <= 5 % of the copy time.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlflow_anf.snapshots.local import LocalSnapshotProvider


def generate(root: Path, files: int, large: int, large_bytes: int, seed: int = 0) -> int:
    """Write *files* files (of which *large* are *large_bytes* each, the rest 1-16 KiB); returns total bytes."""
    rng = random.Random(seed)
    per_dir = 100
    total = 0
    for i in range(files):
        d = root / f"clips/{i // per_dir:04d}"
        if i % per_dir == 0:
            d.mkdir(parents=True, exist_ok=True)
        size = large_bytes if i % max(1, files // max(1, large)) == 0 and i // max(1, files // large) < large \
            else rng.randint(1024, 16 * 1024)  # fmt: skip
        (d / f"{i:06d}.bin").write_bytes(rng.randbytes(size))
        total += size
    return total


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    os.sync()  # not timed: earlier phases' dirty pages must not be flushed inside this one
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def make_writable(vol: Path) -> None:
    """Undo the hard-link provider's chmod so every 'first snapshot' round does the same work."""
    for path in vol.rglob("*.bin"):
        path.chmod(0o644)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 files instead of 10,000")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of copy / first / repeated snapshot")
    parser.add_argument("--dir", type=Path, default=None, help="where to build the trees (default: a temp dir)")
    parser.add_argument("--method", choices=["auto", "reflink", "hardlink"], default="auto")
    args = parser.parse_args()
    files, large, large_bytes = (1_000, 10, 2 << 20) if args.quick else (10_000, 100, 2 << 20)

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-snapshot-") as tmp:
        work = Path(tmp)
        vol = work / "vol"
        start = time.perf_counter()
        total = generate(vol, files, large, large_bytes)
        print(f"tree: {files} files ({large} x {large_bytes >> 20} MiB, the rest 1-16 KiB), {total / 2**20:.0f} MiB "
              f"in {work} (generated in {time.perf_counter() - start:.1f} s); {args.repeat} rounds")  # fmt: skip

        provider = LocalSnapshotProvider(LocalSnapshotProvider.Config(method=args.method))
        times: dict[str, list[float]] = {"copy": [], "first": [], "again": []}
        for r in range(args.repeat):
            t, _ = timed(lambda: shutil.copytree(vol, work / "copy", symlinks=True))
            times["copy"].append(t)
            shutil.rmtree(work / "copy")
            for snap in provider.list(str(vol)):
                provider.delete(str(vol), snap.name)
            make_writable(vol)
            t, first = timed(lambda: provider.create(str(vol), f"first-{r}"))
            times["first"].append(t)
            t, again = timed(lambda: provider.create(str(vol), f"again-{r}"))
            times["again"].append(t)
            assert first.digest == again.digest and again.details["reused_digests"] == files

        changed = sorted(vol.glob("clips/*/*.bin"))[::100]
        for path in changed:  # replace, like a well-behaved writer
            tmp_file = path.with_suffix(".tmp")
            tmp_file.write_bytes(os.urandom(4096))
            os.replace(tmp_file, path)
        t_third, third = timed(lambda: provider.create(str(vol), "third"))
        t_verify, result = timed(lambda: provider.verify(third))
        assert third.digest != first.digest and result.ok

        copy = min(times["copy"])
        rows = [
            ("shutil.copytree (baseline)", times["copy"]),
            ("snapshot, first (hashes every byte)", times["first"]),
            ("snapshot, repeated (digests reused)", times["again"]),
            (f"snapshot after {len(changed)} files replaced", [t_third]),
            ("verify (re-hashes every byte)", [t_verify]),
        ]
        print(f"method: {first.details['method']}; after the replace {third.details['reused_digests']}"
              f"/{third.details['files']} digests reused")  # fmt: skip
        print(f"  {'phase':<38} {'best':>8} {'median':>8} {'us/file':>8}   best vs best copy")
        for label, ts in rows:
            best, med = min(ts), statistics.median(ts)
            print(f"  {label:<38} {best:7.3f}s {med:7.3f}s {1e6 * best / files:8.1f}   "
                  f"{100 * best / copy:6.1f} %  ({copy / best:5.1f}x)")  # fmt: skip
        print("goal: repeated snapshot <= 5 % of the copy")
        for snap in provider.list(str(vol)):  # snapshots share inodes with the live tree: remove them properly
            provider.delete(str(vol), snap.name)


if __name__ == "__main__":
    main()
