"""TuSimple labels, SCNN targets and the dataset over a tiny prepared root written here."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mlflow_anf_lanedet.data.tusimple import (
    IMAGENET_MEAN,
    SPLIT_FILES,
    AugmentConfig,
    DataError,
    LabelError,
    LaneLabel,
    TuSimpleDataset,
    build_targets,
    denormalize,
    flip_targets,
    lane_slots,
    read_labels,
)

H_SAMPLES = list(range(250, 720, 10))
NO_AUG_FLIP = AugmentConfig(flip_p=1.0, scale=0.0, translate=0.0, brightness=0.0, contrast=0.0)


@pytest.fixture(autouse=True)
def _few_threads() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def real_labels(tusimple_fixtures: Path) -> list[LaneLabel]:
    return read_labels(tusimple_fixtures / "label_data_0313.json")


def straight_lane(x_bottom: float, vp: tuple[float, float] = (640.0, 240.0), rows=H_SAMPLES) -> list[int]:
    """x per row of a straight lane from (x_bottom, 720) towards the vanishing point; off-image rows are -2."""
    xs = []
    for y in rows:
        x = round(vp[0] + (x_bottom - vp[0]) * (y - vp[1]) / (720 - vp[1]))
        xs.append(x if 0 <= x < 1280 else -2)
    return xs


def label_of(*lanes: list[int], raw_file: str = "clips/x/1/20.jpg") -> LaneLabel:
    return LaneLabel(raw_file=raw_file, lanes=list(lanes), h_samples=H_SAMPLES)


def to_out(x: float, y: float, out_hw=(288, 512), src_hw=(720, 1280)) -> tuple[int, int]:
    """Target pixel (row, col) of a source point, by pixel centres."""
    return round((y + 0.5) * out_hw[0] / src_hw[0] - 0.5), round((x + 0.5) * out_hw[1] / src_hw[1] - 0.5)


# ---------------------------------------------------------------------------------------------------- labels


def test_reads_the_real_label_file(real_labels: list[LaneLabel]) -> None:
    assert len(real_labels) == 2858
    assert real_labels[0].raw_file == "clips/0313-1/6040/20.jpg"
    assert all(len(lab.lanes) == 4 and lab.h_samples == list(range(240, 711, 10)) for lab in real_labels)
    assert real_labels[0].lanes[0][4] == 632 and real_labels[0].run_time is None


GOOD = {"lanes": [[1, -2]], "h_samples": [100, 110], "raw_file": "clips/a/1/20.jpg"}


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"lanes": [[1, 2]], "h_samples": [1', "invalid JSON"),
        (json.dumps({**GOOD, "lanes": [[1, 2, 3]]}), "lanes[0] has 3 points but h_samples has 2 rows"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "h_samples"}), "h_samples: Field required"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "raw_file"}), "raw_file: Field required"),
        (json.dumps({**GOOD, "lanes": [[1.5, -2]]}), "lanes[0][0]"),
        (json.dumps({**GOOD, "h_samples": [110, 100]}), "strictly increasing"),
        (json.dumps({**GOOD, "raw_file": "../../etc/passwd"}), "raw_file: must be a relative path"),
        (json.dumps({**GOOD, "run_time": -1}), "run_time"),
        ("[1, 2]", "object"),
        (json.dumps({**GOOD, "lanes": [[1, 10**9]]}), "lanes[0][1]: Input should be less than 10000"),
        (json.dumps({**GOOD, "lanes": [[-(10**9), 5]]}), "lanes[0][0]: Input should be greater than -10000"),
        (json.dumps({**GOOD, "h_samples": [100, 10**9]}), "h_samples: rows must be < 10000 pixels"),
    ],
    ids=["bad-json", "length-mismatch", "no-h_samples", "no-raw_file", "float-x", "rows-order", "traversal",
         "run_time", "not-object", "huge-x", "huge-negative-x", "huge-row"],
)
def test_malformed_line_names_file_and_line(tmp_path: Path, line: str, expected: str) -> None:
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(GOOD) + "\n\n" + line + "\n" + json.dumps(GOOD) + "\n")
    with pytest.raises(LabelError) as info:
        read_labels(path)
    message = str(info.value)
    assert message.startswith(f"{path}:3: "), message
    assert expected in message


def test_blank_lines_skipped_and_optional_run_time(tmp_path: Path) -> None:
    path = tmp_path / "labels.json"
    path.write_text("\n" + json.dumps({**GOOD, "run_time": 12, "extra": 1}) + "\n\n")
    (label,) = read_labels(path)
    assert label.run_time == 12 and label.lanes == [[1, -2]]


def test_missing_label_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nope.json"):
        read_labels(tmp_path / "nope.json")


# ---------------------------------------------------------------------------------------------------- slots


def _ordered_on_shared_rows(slots: list[list[int] | None]) -> bool:
    present = [np.array(s) for s in slots if s is not None]
    for i, a in enumerate(present):
        for b in present[i + 1 :]:
            shared = (a >= 0) & (b >= 0)
            if shared.any() and not (a[shared] < b[shared]).all():
                return False
    return True


def test_slots_are_left_to_right_on_every_real_frame(real_labels: list[LaneLabel]) -> None:
    filled = 0
    for label in real_labels:
        slots = lane_slots(label)
        assert len(slots) == 4
        assert _ordered_on_shared_rows(slots), label.raw_file
        # the file's lanes are not sorted: slots must hold the file's lanes, not copies or reorders of points
        assert all(s is None or any(s is lane for lane in label.lanes) for s in slots)
        assert 2 <= sum(s is not None for s in slots)
        filled += all(s is not None for s in slots)
    assert filled > 2000  # most frames show two lanes either side of the vehicle


def test_slots_mirror_when_the_frame_is_mirrored(real_labels: list[LaneLabel]) -> None:
    def mirror(xs: list[int]) -> list[int]:
        return [1279 - x if x >= 0 else x for x in xs]

    for label in real_labels[::7]:
        flipped = label.model_copy(update={"lanes": [mirror(lane) for lane in label.lanes]})
        expected = [None if s is None else mirror(s) for s in reversed(lane_slots(label))]
        assert lane_slots(flipped) == expected, label.raw_file


def test_five_lane_frame_drops_the_farthest_lane() -> None:
    far_left, left2, left1, right1, right2 = (straight_lane(x) for x in (-300, 150, 500, 850, 1200))
    lanes = [right2, far_left, left1, right1, left2]
    random.Random(0).shuffle(lanes)
    assert lane_slots(label_of(*lanes)) == [left2, left1, right1, right2]


@pytest.mark.parametrize(
    ("bottoms", "expected"),
    [((500, 850, 1200), [None, 0, 1, 2]), ((150, 500, 850), [0, 1, 2, None]), ((850, 1200), [None, None, 0, 1])],
)
def test_three_and_two_lane_frames_fill_the_slots_next_to_the_vehicle(bottoms, expected) -> None:
    lanes = [straight_lane(x) for x in bottoms]
    slots = lane_slots(label_of(*reversed(lanes)))
    assert slots == [None if i is None else lanes[i] for i in expected]


def test_lanes_with_fewer_than_two_points_are_ignored() -> None:
    single = [-2] * len(H_SAMPLES)
    single[-1] = 300
    empty = [-2] * len(H_SAMPLES)
    lanes = [straight_lane(500), straight_lane(850)]
    assert lane_slots(label_of(single, lanes[1], empty, lanes[0])) == [None, lanes[0], lanes[1], None]


def test_short_far_stub_is_placed_by_position_not_angle() -> None:
    # a 3-point stub near the horizon right of the ego-right lane, leaning less than that lane: angle sorting
    # (the plain SCNN rule) would put it next to the vehicle; it is the farther right lane
    right1 = straight_lane(1100)
    stub = [-2] * len(H_SAMPLES)
    stub[1:4] = [809, 816, 824]  # rows 260..280 (right1 is at ~690 there)
    slots = lane_slots(label_of(stub, straight_lane(200), right1))
    assert slots[2] == right1
    assert slots[3] == stub


# ---------------------------------------------------------------------------------------------------- masks


def test_mask_has_each_class_on_its_lane(real_labels: list[LaneLabel]) -> None:
    label = real_labels[0]
    mask, exist = build_targets(label, (288, 512))
    assert mask.shape == (288, 512) and mask.dtype == np.uint8
    assert exist.dtype == np.float32 and exist.tolist() == [1, 1, 1, 1]
    assert set(np.unique(mask)) == {0, 1, 2, 3, 4}
    for cls, lane in enumerate(lane_slots(label), start=1):
        assert lane is not None
        for x, y in zip(lane, label.h_samples):
            if x >= 0 and y >= 450:  # below the horizon, where lanes do not touch
                assert mask[to_out(x, y)] == cls
    assert (mask > 0).mean() < 0.1


def test_missing_slots_are_not_drawn_and_do_not_exist() -> None:
    lanes = [straight_lane(500), straight_lane(850)]
    mask, exist = build_targets(label_of(*lanes), (288, 512))
    assert exist.tolist() == [0, 1, 1, 0]
    assert set(np.unique(mask)) == {0, 2, 3}


def test_a_gap_inside_a_lane_is_not_bridged() -> None:
    lane = straight_lane(300)
    gap = range(20, 30)  # rows 450..540 have no points
    for j in gap:
        lane[j] = -2
    mask, exist = build_targets(label_of(lane, straight_lane(1000)), (288, 512))
    assert exist.tolist() == [0, 1, 1, 0]
    top_row = to_out(0, H_SAMPLES[gap[0] - 1])[0]
    bottom_row = to_out(0, H_SAMPLES[gap[-1] + 1])[0]
    assert (mask[top_row + 5 : bottom_row - 5] == 2).sum() == 0  # nothing between the runs (beyond the round caps)
    assert (mask[: top_row + 1] == 2).any() and (mask[bottom_row:] == 2).any()


def test_thickness_scales_with_the_output_size() -> None:
    vertical = [640] * len(H_SAMPLES)  # angle 90°: a left lane (slot 2)
    for out_hw, width in (((720, 1280), 15), ((288, 512), 6), ((144, 256), 3)):
        mask, _ = build_targets(label_of(vertical), out_hw)
        row = mask[out_hw[0] * 3 // 4]
        assert abs(int((row == 2).sum()) - width) <= 1, (out_hw, int((row == 2).sum()))
    mask, _ = build_targets(label_of(vertical), (288, 512), thickness=30)
    assert abs(int((mask[200] == 2).sum()) - 12) <= 1


def test_flip_targets_mirrors_and_swaps_slots() -> None:
    mask = np.zeros((4, 6), np.uint8)
    mask[1, 0], mask[1, 1], mask[2, 4], mask[3, 5] = 1, 2, 3, 4
    exist = np.array([1, 1, 1, 0], np.float32)
    flipped, fexist = flip_targets(mask, exist)
    assert flipped[1, 5] == 4 and flipped[1, 4] == 3 and flipped[2, 1] == 2 and flipped[3, 0] == 1
    assert fexist.tolist() == [0, 1, 1, 1]
    again, aexist = flip_targets(flipped, fexist)
    assert (again == mask).all() and (aexist == exist).all()


def test_bad_sizes_are_rejected() -> None:
    with pytest.raises(ValueError, match="out_hw"):
        build_targets(label_of(straight_lane(500)), (0, 512))


# ---------------------------------------------------------------------------------------------------- dataset


def _write_root(root: Path, labels_by_file: dict[str, list[LaneLabel]], draw_lanes: bool = True) -> None:
    """A prepared root whose images show the lanes (white on a gradient), so geometry can be checked."""
    yy, xx = np.mgrid[0:720, 0:1280]
    background = np.stack([xx * 60 // 1280, yy * 60 // 720, np.full_like(xx, 30)], axis=-1).astype(np.uint8)
    for name, labels in labels_by_file.items():
        with open(root / name, "w") as f:
            for label in labels:
                f.write(label.model_dump_json(exclude_none=True) + "\n")
                path = root / label.raw_file
                if path.exists():
                    continue
                path.parent.mkdir(parents=True, exist_ok=True)
                img = background.copy()
                if draw_lanes:
                    mask, _ = build_targets(label, (720, 1280))
                    img[mask > 0] = 255
                Image.fromarray(img).save(path, quality=92)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, real_labels: list[LaneLabel]) -> Path:
    root = tmp_path_factory.mktemp("prepared")
    pick = real_labels[:3]
    val = [label_of(straight_lane(150), straight_lane(500), straight_lane(850), raw_file="clips/0531/1/20.jpg")]
    test = [label_of(straight_lane(500), straight_lane(1200), raw_file="clips/0530/2_0/20.jpg")]
    _write_root(
        root,
        {"label_data_0313.json": pick[:2], "label_data_0601.json": pick[2:], "label_data_0531.json": val,
         "test_label.json": test},
    )
    return root


def test_splits_and_items(root: Path, real_labels: list[LaneLabel]) -> None:
    train = TuSimpleDataset(root, "train")
    assert len(train) == 3 and [lab.raw_file for lab in train.labels] == [lab.raw_file for lab in real_labels[:3]]
    assert len(TuSimpleDataset(root, "val")) == 1 and len(TuSimpleDataset(root, "test")) == 1
    assert len(TuSimpleDataset(root, "train", max_items=2)) == 2
    item = train[1]
    assert item["index"] == 1
    assert item["image"].shape == (3, 288, 512) and item["image"].dtype == torch.float32
    assert item["mask"].shape == (288, 512) and item["mask"].dtype == torch.int64
    assert item["exist"].dtype == torch.float32
    mask, exist = build_targets(real_labels[1], (288, 512))
    assert (item["mask"].numpy() == mask).all() and (item["exist"].numpy() == exist).all()
    # ImageNet-normalised: lanes are white in the picture, so lane pixels are bright after denormalising
    rgb = denormalize(item["image"])
    assert rgb.shape == (288, 512, 3) and rgb.dtype == np.uint8
    lane_px = rgb[mask > 0].mean()
    assert lane_px > 150 and rgb[mask == 0].mean() < 60
    assert item["image"].mean(dim=(1, 2)).lt(0).all()  # a dark picture sits below the ImageNet mean
    assert abs(float(item["image"][0].max()) - (1 - IMAGENET_MEAN[0]) / 0.229) < 0.2


def test_image_matches_a_full_size_decode(root: Path) -> None:
    ds = TuSimpleDataset(root, "val")
    reference = np.asarray(Image.open(ds.image_path(0)).convert("RGB").resize((512, 288), Image.BILINEAR))
    diff = np.abs(denormalize(ds[0]["image"]).astype(int) - reference.astype(int))
    assert diff.mean() < 4


def test_works_with_a_dataloader(root: Path) -> None:
    loader = torch.utils.data.DataLoader(TuSimpleDataset(root, "train", input_hw=(144, 256)), batch_size=2)
    batch = next(iter(loader))
    assert batch["image"].shape == (2, 3, 144, 256) and batch["mask"].shape == (2, 144, 256)
    assert batch["exist"].shape == (2, 4) and batch["index"].tolist() == [0, 1]


def test_flip_augmentation_is_consistent(root: Path) -> None:
    plain = TuSimpleDataset(root, "train")[0]
    flipped = TuSimpleDataset(root, "train", augment=NO_AUG_FLIP)[0]
    assert torch.equal(flipped["image"], plain["image"].flip(-1))
    mask, exist = flip_targets(plain["mask"].numpy().astype(np.uint8), plain["exist"].numpy())
    assert (flipped["mask"].numpy() == mask).all() and (flipped["exist"].numpy() == exist).all()
    # the left-most slot stays on the left of the picture after flipping
    cols = np.nonzero(flipped["mask"].numpy() == 1)[1]
    assert cols.mean() < 256


def test_jitter_moves_image_and_mask_together(root: Path) -> None:
    ds = TuSimpleDataset(root, "train", augment=AugmentConfig(brightness=0.0, contrast=0.0))
    torch.manual_seed(0)
    changed = 0
    for _ in range(4):
        item = ds[2]
        bright = denormalize(item["image"]).mean(axis=-1) > 150
        lanes = item["mask"].numpy() > 0
        iou = (bright & lanes).sum() / (bright | lanes).sum()
        assert iou > 0.7, iou
        changed += not torch.equal(item["mask"], TuSimpleDataset(root, "train")[2]["mask"])
        assert item["exist"].tolist() == [float((item["mask"] == c).any()) for c in range(1, 5)]
    assert changed >= 3


def test_photometric_jitter_changes_the_image_only(root: Path) -> None:
    cfg = AugmentConfig(flip_p=0.0, scale=0.0, translate=0.0, brightness=0.5, contrast=0.5)
    torch.manual_seed(1)
    item = TuSimpleDataset(root, "train", augment=cfg)[0]
    plain = TuSimpleDataset(root, "train")[0]
    assert torch.equal(item["mask"], plain["mask"])
    assert not torch.allclose(item["image"], plain["image"])


def test_augmentation_is_train_only(root: Path) -> None:
    with pytest.raises(ValueError, match="augment"):
        TuSimpleDataset(root, "val", augment=True)


def test_missing_split_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "label_data_0313.json").write_text("")
    with pytest.raises(DataError, match="label_data_0601.json"):
        TuSimpleDataset(tmp_path, "train")
    (tmp_path / "label_data_0601.json").write_text("")
    with pytest.raises(DataError, match="empty"):
        TuSimpleDataset(tmp_path, "train")
    assert len(TuSimpleDataset(tmp_path, "train", allow_empty=True)) == 0
    with pytest.raises(ValueError, match="split"):
        TuSimpleDataset(tmp_path, "holdout")
    with pytest.raises(DataError, match="not a directory"):
        TuSimpleDataset(tmp_path / "absent", "train")


def test_corrupt_and_missing_images_name_the_file(tmp_path: Path) -> None:
    labels = [label_of(straight_lane(500), raw_file=f"clips/c/{i}/20.jpg") for i in range(2)]
    _write_root(tmp_path, {name: labels if name == "test_label.json" else [] for name in sum(SPLIT_FILES.values(), [])})
    corrupt = tmp_path / labels[0].raw_file
    corrupt.write_bytes(corrupt.read_bytes()[:2000])  # truncated JPEG
    (tmp_path / labels[1].raw_file).unlink()
    ds = TuSimpleDataset(tmp_path, "test")
    with pytest.raises(DataError, match=r"clips/c/0/20.jpg: cannot decode image.*test_label.json, item 1"):
        ds[0]
    with pytest.raises(DataError, match=r"clips/c/1/20.jpg: image file not found"):
        ds[1]
    corrupt.write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match=r"clips/c/0/20.jpg: cannot decode image"):
        ds[0]
