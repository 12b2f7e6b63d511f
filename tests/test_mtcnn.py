"""MTCNN (detector=mtcnn) with the weights from the facenet-pytorch wheel, without importing facenet-pytorch
(so no torchvision): detection on toy MEAD frames, NMS maths, subject choice and a preprocess run."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from conftest import run_module

from common.errors import FormatError, UserError
from common.formats import Clip
from common.video import read_frames
from preprocessing.mtcnn import MTCNN, default_weights_dir, load_nets, nms

pytestmark = pytest.mark.skipif(default_weights_dir() is None, reason="facenet-pytorch (MTCNN weights) not installed")


def test_nms_known_answer():
    boxes = np.array([[0, 0, 9, 9], [1, 1, 10, 10], [20, 20, 29, 29], [0, 0, 4, 4]], np.float64)
    scores = np.array([0.9, 0.8, 0.7, 0.95])
    assert sorted(nms(boxes, scores, 0.5).tolist()) == [0, 2, 3]  # box 1 overlaps box 0 with IoU 0.68
    assert sorted(nms(boxes, scores, 0.5, "min").tolist()) == [2, 3]  # box 3 lies inside box 0: min-overlap 1


def test_detects_the_toy_face(toy_mead_tiny):
    det = MTCNN()
    frame = read_frames(next(toy_mead_tiny.glob("*/video/front/neutral/level_*/*.mp4")), 0, 1)[0]
    found = det.detect(frame)
    assert len(found.boxes) == 1 and found.probs[0] > 0.95
    x1, y1, x2, y2 = found.boxes[0]
    h, w = frame.shape[:2]
    assert 0.2 * w < x2 - x1 < 0.9 * w and 0 <= x1 < w / 2 < x2 <= w  # a face-sized box around the centre
    (lx, ly), (rx, ry) = found.points[0, 0], found.points[0, 1]
    assert lx < rx and abs(ly - ry) < 0.1 * h and y1 < ly < y2  # eyes level, left before right
    assert len(det.detect(np.zeros((96, 96, 3), np.uint8)).boxes) == 0  # nothing in a black image
    assert "torchvision" not in sys.modules and "facenet_pytorch" not in sys.modules


def test_weight_errors(tmp_path):
    with pytest.raises(UserError, match="pnet.pt"):
        load_nets(tmp_path)
    for name in ("pnet", "rnet", "onet"):
        torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / f"{name}.pt")
    with pytest.raises(FormatError, match="not facenet-pytorch's pnet"):
        load_nets(tmp_path)


def test_preprocess_with_mtcnn(toy_mead_tiny, tmp_path, python_exe, python_env):
    out = tmp_path / "processed"
    one = next(toy_mead_tiny.glob("*/video/front/neutral/level_*/*.mp4"))
    run_module(
        python_exe,
        python_env,
        "preprocessing.run",
        one,
        "test",
        f"out_dir={out}",
        "detector=mtcnn",
        "num_workers=1",
        "expr_dim=8",
        f"basis_file={tmp_path / 'none.npz'}",
        check=False,
    )
    clip = Clip(out / one.stem)  # tracked even though the face-model pass has no basis to use
    assert clip.meta.backends["detector"] == "mtcnn"
    assert clip.track()["valid"].mean() > 0.95
