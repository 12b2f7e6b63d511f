"""FAN landmarks (landmarks=fan) through face-alignment with generated weights in TORCH_HOME, fed with our
track boxes, and the DECA backend cutting its crop from them."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from conftest import run_module
from deca_standins import write_deca_data, write_fan_weights

from common.formats import Clip

pytestmark = pytest.mark.skipif(importlib.util.find_spec("face_alignment") is None, reason="face-alignment absent")


def test_fan_landmarks_and_deca_crop(toy_one, tmp_path, python_exe, python_env):
    toy = toy_one
    env = dict(python_env, TORCH_HOME=str(tmp_path / "torch_home"))
    out = tmp_path / "processed"
    missing = run_module(
        python_exe, env, "preprocessing.run", toy, "train", f"out_dir={out}", "landmarks=fan", check=False
    )
    assert missing.returncode == 2 and "2DFAN4-11f355bf06.pth.tar" in missing.stderr
    assert "Traceback" not in missing.stderr
    write_fan_weights(tmp_path / "torch_home")
    deca = tmp_path / "deca"
    write_deca_data(deca)
    run_module(
        python_exe,
        env,
        "preprocessing.run",
        toy,
        "train",
        f"out_dir={out}",
        "landmarks=fan",
        "face_model=deca",
        f"deca_data={deca}",
        "num_workers=1",
        timeout=600,
    )
    clip = Clip(next(out.glob("*/neutral/level_*/*")))
    clip.validate()
    track = clip.track()
    assert track["landmarks68"].shape == (clip.n_frames, 68, 2)
    assert np.isfinite(track["landmarks68"]).all() and clip.meta.backends["landmarks"] == "fan"
    # the DECA box comes from the 68 landmarks: (x0, y0, size) with size = 1.375 x the mean landmark extent
    cam = clip.face()["cam"]
    from facemodel.geometry import apply_affine

    pts = apply_affine(track["align"].astype(np.float64), track["landmarks68"].astype(np.float64))
    extent = (pts.max(1) - pts.min(1)).mean(1)
    np.testing.assert_allclose(cam[:, 5], extent * 1.1 * 1.25, rtol=1e-4)
