"""mlflow_anf_lanedet.data.frames: the one frame preprocessor that the dataset and inference share."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mlflow_anf_lanedet import predict
from mlflow_anf_lanedet.data.frames import frame_to_tensor, load_input, normalise
from mlflow_anf_lanedet.data.tusimple import TuSimpleDataset
from mlflow_anf_lanedet.tusimple_format import H_SAMPLES_TEST

INPUT_HW = (288, 512)


@pytest.fixture()
def root(tmp_path: Path, tusimple_fixtures: Path) -> Path:
    raw_file = "clips/0531/1/20.jpg"
    (tmp_path / raw_file).parent.mkdir(parents=True)
    shutil.copyfile(tusimple_fixtures / "520.jpg", tmp_path / raw_file)
    lane = [-2] * 20 + [600 + i for i in range(len(H_SAMPLES_TEST) - 20)]
    line = {"lanes": [lane], "h_samples": list(H_SAMPLES_TEST), "raw_file": raw_file}
    (tmp_path / "label_data_0531.json").write_text(json.dumps(line) + "\n", encoding="utf-8")
    return tmp_path


def test_predict_files_feeds_the_network_the_dataset_tensor(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = TuSimpleDataset(root, "val", input_hw=INPUT_HW)
    seen: list[torch.Tensor] = []

    def fake_probs(model: torch.nn.Module, batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        seen.append(batch.clone())
        return np.zeros((len(batch), 5, *INPUT_HW), np.float32), np.zeros((len(batch), 4), np.float32)

    monkeypatch.setattr(predict, "predict_probs", fake_probs)
    predictor = predict.LanePredictor(torch.nn.Identity(), INPUT_HW)
    predictor.predict_files([dataset.image_path(0)])
    assert torch.equal(seen[0][0], dataset[0]["image"])
    assert torch.equal(load_input(dataset.image_path(0), INPUT_HW)[0], dataset[0]["image"])


def test_in_memory_frames_are_normalised_as_the_dataset_does(root: Path) -> None:
    """An in-memory frame already at the input size gives bit for bit the dataset's normalisation of its pixels."""
    with Image.open(root / "clips/0531/1/20.jpg") as src:
        small = src.convert("RGB").resize(INPUT_HW[::-1], Image.Resampling.BILINEAR)
    expected = normalise(np.array(small))
    assert torch.equal(predict.to_tensor(small, INPUT_HW), expected)
    assert torch.equal(frame_to_tensor(small, INPUT_HW), expected)
    assert expected.dtype == torch.float32 and tuple(expected.shape) == (3, *INPUT_HW)
