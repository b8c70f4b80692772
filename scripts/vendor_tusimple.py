"""Re-create the repository's compact copies of the TuSimple example files from their source (a maintainer's tool).

    python scripts/vendor_tusimple.py <dir holding label_data_0313.json and pred_example_0313.json>

Writes the package asset ``project/mlflow_anf_lanedet/assets/tusimple_label_data_0313.npz`` and the test fixture
``fixtures/tusimple/pred_example_0313.npz``; each gives its source back byte for byte (sha256 recorded inside and in
``fixtures/README.md``). Nothing in the product or its tests runs this: they read the compact files.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "project"))

from mlflow_anf_lanedet.assets import LABELS_0313, encode_label_lines  # noqa: E402


def main(src: str) -> None:
    base = Path(src)
    targets = {
        "label_data_0313.json": ROOT / "project" / "mlflow_anf_lanedet" / "assets" / LABELS_0313,
        "pred_example_0313.json": ROOT / "fixtures" / "tusimple" / "pred_example_0313.npz",
    }
    for name, dst in targets.items():
        encode_label_lines(base / name, dst)
        print(f"{base / name} -> {dst.relative_to(ROOT)} ({dst.stat().st_size:,} bytes)")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
