"""mlflow_anf_lanedet.synth: official TuSimple layout, determinism, held-out geometry, labels vs drawn pixels, bad input."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from mlflow_anf_lanedet.cli import main as lanedet_main
from mlflow_anf_lanedet.synth import SynthError, generate
from mlflow_anf_lanedet.synth.config import H_SAMPLES_0313, H_SAMPLES_WIDE, SynthConfig
from mlflow_anf_lanedet.synth.geometry import file_order, load_sources, split_sources
from mlflow_anf_lanedet.synth.writer import FrameRenderer, plan_frames

FRAMES, SEED = 12, 7
LABEL_FILES = {
    "train_set/label_data_0313.json": ("clips/0313-1/", "clips/0313-2/"),
    "train_set/label_data_0601.json": ("clips/0601/",),
    "train_set/label_data_0531.json": ("clips/0531/",),
    "test_label.json": ("clips/0530/",),
}


@pytest.fixture(scope="module")
def labels_file(tusimple_fixtures: Path) -> Path:
    return tusimple_fixtures / "label_data_0313.json"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, labels_file: Path):
    out = tmp_path_factory.mktemp("synth") / "tusimple"
    report = generate(out, FRAMES, SEED, labels=labels_file)
    return out, report


def _lines(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_official_layout_and_json_lines(dataset) -> None:
    out, report = dataset
    total = 0
    for rel, prefixes in LABEL_FILES.items():
        records = _lines(out / rel)
        assert len(records) == report.counts[Path(rel).name]
        total += len(records)
        for rec in records:
            assert list(rec) == ["lanes", "h_samples", "raw_file"]  # the real files' key order
            assert rec["raw_file"].startswith(prefixes) and rec["raw_file"].endswith("/20.jpg")
            assert tuple(rec["h_samples"]) in (H_SAMPLES_0313, H_SAMPLES_WIDE)
            visible = [lane for lane in rec["lanes"] if any(x >= 0 for x in lane)]
            assert 3 <= len(visible) <= 5
            if rel.endswith("0313.json"):  # like the real file: four lanes a line, an invisible one all -2
                assert len(rec["lanes"]) == max(4, len(visible))
            else:
                assert len(rec["lanes"]) == len(visible)
            for lane in rec["lanes"]:
                assert len(lane) == len(rec["h_samples"])
                assert all(type(x) is int and (x == -2 or 0 <= x < 1280) for x in lane)
            for lane in visible:
                assert sum(x >= 0 for x in lane) >= 4
            image_root = out / ("test_set" if rel == "test_label.json" else "train_set")
            with Image.open(image_root / rec["raw_file"]) as im:
                assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (1280, 720))
    assert total == FRAMES
    raw_files = [rec["raw_file"] for rel in LABEL_FILES for rec in _lines(out / rel)]
    assert len(set(raw_files)) == FRAMES
    assert all(n >= 1 for n in report.counts.values())
    tasks = _lines(out / "test_set" / "test_tasks_0627.json")
    truth = _lines(out / "test_label.json")
    assert [list(t) for t in tasks] == [["h_samples", "raw_file"]] * len(truth)
    assert [(t["raw_file"], t["h_samples"]) for t in tasks] == [(g["raw_file"], g["h_samples"]) for g in truth]
    jpgs = sorted(str(p.relative_to(out)) for p in out.rglob("*.jpg"))
    assert len(jpgs) == FRAMES
    assert not list(out.parent.glob(".tusimple.synth-*"))  # no temp dir left beside out


def test_same_seed_same_bytes_any_workers_and_other_seed_differs(dataset, tmp_path: Path, labels_file: Path) -> None:
    out, _ = dataset
    again = tmp_path / "again"
    generate(again, FRAMES, SEED, labels=labels_file, workers=2)
    assert _all_files(again) == _all_files(out)
    other = tmp_path / "other"
    generate(other, FRAMES, SEED + 1, labels=labels_file)
    a, b = _all_files(out), _all_files(other)
    jpg_a = sorted(v for k, v in a.items() if k.endswith(".jpg"))
    jpg_b = sorted(v for k, v in b.items() if k.endswith(".jpg"))
    assert not set(jpg_a) & set(jpg_b)
    assert a["test_label.json"] != b["test_label.json"]


def test_val_and_test_geometry_is_held_out(dataset, labels_file: Path) -> None:
    out, report = dataset
    train = _lines(out / "train_set/label_data_0313.json") + _lines(out / "train_set/label_data_0601.json")
    held = _lines(out / "train_set/label_data_0531.json") + _lines(out / "test_label.json")
    train_sets = {json.dumps(r["lanes"]) for r in train}
    train_lanes = {json.dumps(lane) for r in train for lane in r["lanes"]}
    for rec in held:
        assert json.dumps(rec["lanes"]) not in train_sets
        assert not {json.dumps(lane) for lane in rec["lanes"]} & train_lanes
    # the real frames behind val/test come from other blocks of the real clips than those behind train
    sources = load_sources(labels_file)
    pools = {name: {sources[i].raw_file for i in idx} for name, idx in split_sources(sources).items()}
    assert not pools["train"] & pools["val"] and not pools["train"] & pools["test"] and not pools["val"] & pools["test"]
    for split, used in report.sources.items():
        assert used and set(used) <= pools[split]


def test_labels_are_what_is_drawn(dataset, labels_file: Path) -> None:
    """Re-render each frame (deterministic): the bytes match the file, the marking starts where its label starts,
    and visible marking pixels at labelled points are brighter than the road beside them."""
    out, _ = dataset
    config = SynthConfig(out=out, frames=FRAMES, seed=SEED, labels=labels_file)
    renderer = FrameRenderer(labels_file, SEED, config.max_fit_rms, config.jpeg_quality)
    checked = brighter = 0
    for plan in plan_frames(config):
        scene, rendered = renderer.render(plan)
        assert (out / plan.image_path).read_bytes() == rendered.jpeg
        rgb = np.asarray(Image.open(io.BytesIO(rendered.jpeg)), dtype=np.float32)
        luma = rgb @ np.asarray([0.299, 0.587, 0.114], np.float32)
        yellowness = (rgb[..., 0] + rgb[..., 1]) / 2 - rgb[..., 2]  # yellow paint on grey road: chroma, not luma
        rec_file = {"train": "train_set/label_data_0313.json", "train_0601": "train_set/label_data_0601.json",
                    "val": "train_set/label_data_0531.json", "test": "test_label.json"}[plan.label_file]  # fmt: skip
        rec = next(r for r in _lines(out / rec_file) if r["raw_file"] == plan.raw_file)
        order = file_order(scene)
        # as in the real files: the ego lane's left and right markings first, then outwards
        offsets = [scene.lanes[i].b for i in order]
        left, right = [b for b in offsets if b < 0], [b for b in offsets if b >= 0]
        assert left == sorted(left, reverse=True) and right == sorted(right)
        if left and right:
            assert offsets[0] < 0 <= offsets[1]
        visible = [lane for lane in rec["lanes"] if any(x >= 0 for x in lane)]
        assert len(visible) == len(order) == len(scene.lanes) == len(rendered.marking_alpha)
        for lane, i in zip(visible, order):
            spec, alpha = scene.lanes[i], rendered.marking_alpha[i]
            image = yellowness if spec.color[2] < 0.5 * spec.color[0] else luma
            rows = [h for h, x in zip(rec["h_samples"], lane) if x >= 0]
            # nothing of this marking is drawn above its first labelled row (within one h_sample step)
            assert not alpha[: max(0, rows[0] - 10)].any()
            for h, x in zip(rec["h_samples"], lane):
                if x < 0 or alpha[h] < 0.6 or rendered.occluded[h, x]:
                    continue
                t = h - scene.y_h
                slope = spec.b - scene.k / t**2
                half = spec.width_m / scene.cam_h * t / 2 * np.sqrt(1 + slope**2)
                if spec.style == "double":
                    half += 0.2 / scene.cam_h * t
                gap = int(half + 6)
                left, right = image[h, max(0, x - gap - 4) : max(0, x - gap)], image[h, x + gap : x + gap + 4]
                if len(left) < 4 or len(right) < 4:
                    continue
                reach = int(half) if spec.style == "double" else 1  # a double line is labelled between its lines
                centre = image[h, max(0, x - reach) : x + reach + 1].max()
                checked += 1
                brighter += centre > min(left.mean(), right.mean()) + 8
    assert checked >= 40
    assert brighter / checked >= 0.95, (brighter, checked)


def test_bad_input_is_refused_and_nothing_is_written(tmp_path: Path, labels_file: Path) -> None:
    out = tmp_path / "ds"
    with pytest.raises(SynthError, match="frames"):
        generate(out, 2, 0, labels=labels_file)
    with pytest.raises(SynthError, match="seed"):
        generate(out, 5, -1, labels=labels_file)
    with pytest.raises(SynthError, match="nope.json"):
        generate(out, 5, 0, labels=tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"lanes": [], "h_samples": [240], "raw_file": "clips/a/1/20.jpg"}\n{oops\n', encoding="utf-8")
    with pytest.raises(SynthError, match=r"bad.json:2"):
        generate(out, 5, 0, labels=bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json"]
    # a non-empty out is kept as it is unless overwrite
    out.mkdir()
    (out / "keep.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(SynthError, match="not empty"):
        generate(out, 3, 0, labels=labels_file)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    report = generate(out, 3, 0, labels=labels_file, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "test_label.json").is_file()
    assert report.counts["label_data_0313.json"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json", "ds"]


def test_failure_while_rendering_leaves_nothing(tmp_path: Path) -> None:
    """Real-looking labels whose frames have a single lane give no usable road fit: the run fails mid-way."""
    one_lane = [-2] * 10 + list(range(600, 638))
    lines = [
        json.dumps({"lanes": [one_lane], "h_samples": list(H_SAMPLES_0313), "raw_file": f"clips/0313-1/{i}/20.jpg"})
        for i in range(400)
    ]
    labels = tmp_path / "one_lane.json"
    labels.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(SynthError, match="no usable real frame"):
        generate(tmp_path / "ds", 3, 0, labels=labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one_lane.json"]


def test_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "ds"
    for args in (
        ["--frames", "2"],
        ["--frames", "5", "--seed", "-1"],
        ["--frames", "5", "--seed", "abc"],
        ["--frames", "5", "--labels", str(tmp_path / "missing.json")],
    ):
        result = runner.invoke(lanedet_main, ["synth", "--out", str(out), *args])
        assert result.exit_code == 2, result.output
    assert not any(tmp_path.iterdir())
    # without --labels: the real labels shipped as package data (no path outside the package is read)
    result = runner.invoke(lanedet_main, ["synth", "--out", str(out), "--frames", "3", "--seed", "4"])
    assert result.exit_code == 0, result.output
    assert "wrote 3 frames" in result.output and (out / "test_set" / "test_tasks_0627.json").is_file()
    result = runner.invoke(lanedet_main, ["synth", "--out", str(out), "--frames", "3"])
    assert result.exit_code == 2 and "not empty" in result.output


def test_packaged_labels_are_the_real_file_byte_for_byte(tusimple_fixtures: Path, tmp_path: Path) -> None:
    """The compact package asset gives back TuSimple's label_data_0313.json exactly (its sha256 as published in
    fixtures/README.md), and a damaged asset is refused by name rather than read as other lanes."""
    import hashlib

    import numpy as np

    from mlflow_anf_lanedet.assets import AssetError, decode_bytes, labels_0313_path
    from mlflow_anf_lanedet.synth import default_labels_path

    path = default_labels_path()
    assert path == labels_0313_path() and path.suffix == ".npz" and path.stat().st_size < 1_000_000
    raw = decode_bytes(path)
    assert hashlib.sha256(raw).hexdigest() == "e2303153417da4d6dc40b71877294b01770f27377ef8a7881bfc01ecac303e05"
    assert raw == (tusimple_fixtures / "label_data_0313.json").read_bytes() and raw.count(b"\n") == 2858
    with np.load(path) as z:
        arrays = dict(z)
    arrays["lanes"] = arrays["lanes"].copy()
    arrays["lanes"][5, 1, 20] += 1  # one pixel of one lane
    damaged = tmp_path / "damaged.npz"
    np.savez_compressed(damaged, **arrays)
    with pytest.raises(AssetError, match="does not match its recorded sha256"):
        decode_bytes(damaged)
    not_npz = tmp_path / "labels.npz"
    not_npz.write_text("{}")
    with pytest.raises(SynthError, match=r"labels\.npz: not a compact label file"):
        generate(tmp_path / "ds", 3, 0, labels=not_npz)
    assert not (tmp_path / "ds").exists()
