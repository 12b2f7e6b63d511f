"""FSGAN segmentation (segmentation=fsgan) on generated weights with the real keys: strict loading, NED's
mask post-processing on constructed label maps, and a preprocess run that writes its masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import run_module
from deca_standins import write_fsgan_weights

from common.errors import FormatError, UserError
from common.formats import Clip
from preprocessing.fsgan_seg import FaceSegmenter, face_mask, load_unet


@pytest.fixture(scope="module")
def fsgan_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("fsgan") / "lfw_figaro_unet_256_2_0_segmentation_v1.pth"
    write_fsgan_weights(path)
    return path


def test_unet_loads_strictly(fsgan_weights, tmp_path):
    net = load_unet(fsgan_weights)
    assert sum(p.numel() for p in net.parameters()) > 28_000_000
    ckpt = torch.load(fsgan_weights, weights_only=True)
    ckpt["state_dict"].pop("final.bias")
    torch.save(ckpt, tmp_path / "bad.pth")
    with pytest.raises(FormatError, match="1 missing key"):
        load_unet(tmp_path / "bad.pth")
    torch.save({"weights": {}}, tmp_path / "other.pth")
    with pytest.raises(FormatError, match="state_dict"):
        load_unet(tmp_path / "other.pth")
    with pytest.raises(UserError, match="lfw_figaro_unet_256_2_0_segmentation_v1.pth.*fsgan"):
        load_unet(tmp_path / "absent.pth")


def test_segmenter_runs_on_crops(fsgan_weights):
    seg = FaceSegmenter(fsgan_weights, batch_size=2)
    crops = np.random.default_rng(0).integers(0, 256, (3, 128, 128, 3), dtype=np.uint8)
    labels = seg.labels(crops)
    assert labels.shape == (3, 128, 128) and set(np.unique(labels)) <= {0, 1, 2}
    masks = seg.masks(list(crops))
    assert len(masks) == 3 and masks[0].dtype == np.uint8 and masks[0].shape == (128, 128)


def test_face_mask_postprocessing():
    labels = np.zeros((128, 128), np.int64)
    labels[20:100, 20:90] = 1  # the face
    labels[105:120, 100:120] = 1  # a smaller face-class blob elsewhere
    labels[0:20, :] = 2  # hair
    mask = face_mask(labels)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255}
    assert mask[60, 55] == 255 and mask[112, 110] == 0  # largest component only
    assert mask[20:100, 20:90].mean() < 255 and not mask[labels != 1].any()  # eroded inside the face region
    empty = np.zeros_like(labels)
    np.testing.assert_array_equal(face_mask(empty, previous=mask), mask)  # empty -> the previous frame's mask
    assert not face_mask(empty).any()


def test_preprocess_with_fsgan_segmentation(fsgan_weights, toy_one, tmp_path, python_exe, python_env):
    toy = toy_one
    out = tmp_path / "processed"
    absent = tmp_path / "none.pth"
    preprocess = ["preprocessing.run", toy, "train", f"out_dir={out}", "segmentation=fsgan"]
    missing = run_module(python_exe, python_env, *preprocess, f"segmentation_weights={absent}", check=False)
    assert missing.returncode == 2 and "segmentation=hull" in missing.stderr and "Traceback" not in missing.stderr
    assert not out.exists() or not list(out.glob("*/neutral/*/*"))
    run_module(
        python_exe,
        python_env,
        *preprocess,
        f"segmentation_weights={fsgan_weights}",
        "num_workers=1",
        "expr_dim=8",
        timeout=600,
    )
    clip = Clip(next(out.glob("*/neutral/level_*/*")))
    clip.validate()
    assert clip.meta.backends["segmentation"] == "fsgan"
    assert set(np.unique(clip.masks.read(0))) <= {0, 255}  # hard masks, as NED's
