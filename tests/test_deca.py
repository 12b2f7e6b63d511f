"""DECA/FLAME backend on generated stand-ins of the licensed files (tests/deca_standins.py): restricted
unpickling, FLAME properties, strict checkpoint loading, the asset check, NMFC rendering, a full
`face_model=deca` preprocess and the warp renderer's refusal of its clips. Tests that need the real files skip
when DECA/data does not hold them."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
import torch
from conftest import run_module
from deca_standins import write_deca_data, write_deca_model, write_flame_pickle

from common.errors import FormatError, UserError
from common.formats import Clip, read_clip_index
from DECA.assets import DATA_DIR, REQUIRED, load_flame_pickle, load_landmark_embedding, missing_message
from DECA.flame import FLAME
from DECA.model import DECA, load_networks
from facemodel import face_model_for
from postprocessing.edit_video import edit_video
from renderer.conditioning import ClipConditioner
from renderer.registry import load_renderer


@pytest.fixture(scope="module")
def deca_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("deca_data")
    info = write_deca_data(d)
    return d, info


def test_flame_pickle_loads_through_the_restricted_unpickler(deca_data):
    d, info = deca_data
    model = load_flame_pickle(d / "generic_model.pkl")
    assert isinstance(model["shapedirs"], np.ndarray) and model["shapedirs"].shape == (5023, 3, 400)
    np.testing.assert_array_equal(model["shapedirs"], info["shapedirs"])  # the chumpy object became its array
    np.testing.assert_allclose(model["J_regressor"], info["J_regressor"])  # the CSC matrix, densified
    assert model["f"].shape == (9976, 3) and model["bs_style"] == "lbs"


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/spfem_pickle_exploit_ran",))


def test_restricted_unpickler_refuses_code(tmp_path):
    bad = tmp_path / "generic_model.pkl"
    bad.write_bytes(pickle.dumps({"v_template": _Exploit()}, protocol=2))
    marker = __import__("pathlib").Path("/tmp/spfem_pickle_exploit_ran")
    marker.unlink(missing_ok=True)
    with pytest.raises(FormatError, match="refusing to load posix.system|refusing to load os.system"):
        load_flame_pickle(bad)
    assert not marker.exists()
    emb = tmp_path / "landmark_embedding.npy"
    np.save(emb, np.array({"x": _Exploit()}, dtype=object), allow_pickle=True)
    with pytest.raises(FormatError, match="refusing"):
        load_landmark_embedding(emb)
    assert not marker.exists()


def test_flame_properties(deca_data):
    d, info = deca_data
    flame = FLAME(load_flame_pickle(d / "generic_model.pkl"), load_landmark_embedding(d / "landmark_embedding.npy"))
    zeros = flame(torch.zeros(2, 100), torch.zeros(2, 50), torch.zeros(2, 6))
    assert zeros.shape == (2, 5023, 3)
    torch.testing.assert_close(zeros[0], torch.as_tensor(info["verts"], dtype=torch.float32))  # the template
    pose = torch.zeros(1, 6)
    pose[0, 3] = 0.3  # open the jaw
    jaw_open = flame(torch.zeros(1, 100), torch.zeros(1, 50), pose)[0]
    moved = (jaw_open - zeros[0]).norm(dim=1) > 1e-6
    assert moved.any()
    assert not moved[~torch.as_tensor(info["jaw"])].any()  # only jaw-region vertices move
    lmk = flame.landmarks(jaw_open[None])
    assert lmk.shape == (1, 68, 3)
    # global rotation is rigid: pairwise distances are kept
    rot = torch.zeros(1, 6)
    rot[0, :3] = torch.tensor([0.1, 0.4, -0.2])
    turned = flame(torch.zeros(1, 100), torch.zeros(1, 50), rot)[0]
    torch.testing.assert_close(torch.cdist(turned[:50], turned[50:100]), torch.cdist(zeros[0, :50], zeros[0, 50:100]))
    # shape coefficients act through the identity blend shapes
    shaped = flame(torch.ones(1, 100), torch.zeros(1, 50), torch.zeros(1, 6))[0]
    expected = info["verts"] + info["shapedirs"][:, :, :100].sum(-1)
    torch.testing.assert_close(shaped, torch.as_tensor(expected, dtype=torch.float32), atol=1e-5, rtol=0)


def test_deca_checkpoint_loads_strictly(deca_data, tmp_path):
    d, _ = deca_data
    nets = load_networks(d / "deca_model.tar")
    assert sorted(nets) == ["D_detail", "E_detail", "E_flame"]
    ckpt = torch.load(d / "deca_model.tar", weights_only=True)
    del ckpt["E_flame"]["layers.2.bias"]
    torch.save(ckpt, tmp_path / "missing.tar")
    with pytest.raises(FormatError, match="E_flame does not match"):
        load_networks(tmp_path / "missing.tar")
    ckpt = torch.load(d / "deca_model.tar", weights_only=True)
    ckpt["E_detail"]["layers.2.weight"] = torch.zeros(64, 1024)
    torch.save(ckpt, tmp_path / "shape.tar")
    with pytest.raises(FormatError, match="E_detail"):
        load_networks(tmp_path / "shape.tar")
    torch.save({"E_flame": {}}, tmp_path / "few.tar")
    with pytest.raises(FormatError, match="missing 'E_detail'"):
        load_networks(tmp_path / "few.tar")


def test_encode_and_decode_shapes(deca_data):
    d, _ = deca_data
    deca = DECA.load(d)
    codes = deca.encode(torch.rand(2, 3, 224, 224), detail=True)
    assert {k: tuple(v.shape) for k, v in codes.items()} == {
        "shape": (2, 100),
        "tex": (2, 50),
        "exp": (2, 50),
        "pose": (2, 6),
        "cam": (2, 3),
        "light": (2, 9, 3),
        "detail": (2, 128),
    }
    assert deca.displacement(codes).shape == (2, 1, 256, 256)
    with pytest.raises(UserError, match="224x224"):
        deca.encode(torch.rand(1, 3, 256, 256))


def test_missing_assets_message_and_check_command(tmp_path, deca_data, python_exe, python_env):
    msg = missing_message(tmp_path, REQUIRED)
    for name in REQUIRED:
        assert str(tmp_path / name) in msg
    assert "flame.is.tue.mpg.de" in msg and "never download" in msg
    proc = run_module(python_exe, python_env, "DECA.check_assets", "--data", tmp_path, check=False)
    assert proc.returncode == 1 and "MISSING" in proc.stdout and "Traceback" not in proc.stderr
    d, _ = deca_data
    data = tmp_path / "copy"
    shutil.copytree(d, data)
    proc = run_module(python_exe, python_env, "DECA.check_assets", "--data", data, "--write-sums")
    assert proc.stdout.count("ok ") == 3 and (data / "SHA256SUMS").is_file()
    proc = run_module(python_exe, python_env, "DECA.check_assets", "--data", data)
    assert proc.stdout.count("checksum matches") == 3
    write_flame_pickle(data / "generic_model.pkl", seed=1)  # another valid file: the checksum catches it
    proc = run_module(python_exe, python_env, "DECA.check_assets", "--data", data, check=False)
    assert proc.returncode == 1 and "CHANGED" in proc.stdout
    write_deca_model(data / "deca_model.tar")
    (data / "deca_model.tar").write_bytes(b"truncated")
    proc = run_module(python_exe, python_env, "DECA.check_assets", "--data", data, check=False)
    assert proc.returncode == 1 and "INVALID" in proc.stdout


@pytest.fixture(scope="module")
def deca_processed(deca_data, toy_one, tmp_path_factory, python_exe, python_env):
    """toy_one preprocessed with face_model=deca (the stand-in files): the processed root."""
    d, _ = deca_data
    out = tmp_path_factory.mktemp("deca_processed") / "processed"
    run_module(
        python_exe,
        python_env,
        "preprocessing.run",
        toy_one,
        "train",
        f"out_dir={out}",
        "face_model=deca",
        f"deca_data={d}",
        "num_workers=1",
        "--preview",
        timeout=600,
    )
    return out


def test_preprocess_with_deca_backend(deca_processed):
    """face_model=deca end to end on a short toy clip: a valid clip dir that the renderer can condition on."""
    out = deca_processed
    clip_dir = next(out.glob("*/neutral/level_*/*"))
    clip = Clip(clip_dir)
    clip.validate()
    face = clip.face()
    assert face["expr"].shape == (clip.n_frames, 51) and face["pose"].shape == (clip.n_frames, 6)
    assert face["cam"].shape == (clip.n_frames, 6) and face["landmarks2d"].shape == (clip.n_frames, 68, 2)
    assert clip.meta.backends["face_model"] == "deca" and (clip_dir / "preview.png").is_file()
    stats = np.load(out / "face_model_deca.npz")
    assert stats["expr_std"].shape == (51,) and np.all(stats["expr_std"] > 0)
    np.testing.assert_allclose(stats["expr_mean"], face["expr"].mean(0), rtol=1e-4, atol=1e-5)

    model = face_model_for(out)
    # NMFC of the stand-in template (no identity, expression or pose) seen from the front with a camera that
    # frames it: DECA's camera is orthographic, so the surface point seen at a pixel centre has that x (column)
    # and y (row), and NMFC red / green, the template's normalised x / y (y up), are known at every pixel
    framed = dict(
        face,
        pose=np.zeros_like(face["pose"]),
        expr=np.zeros_like(face["expr"]),
        identity=np.zeros_like(face["identity"]),
        cam=np.tile(np.array([[9.0, 0, 0, 0, 0, 256]], np.float32), (clip.n_frames, 1)),
    )
    cc = ClipConditioner(model, clip, 64, face=framed)
    cond = cc.render(0)
    nmfc, covered = cond[:3], cond[6] > 0  # shading is >= the ambient 0.25 wherever the mesh is drawn
    assert covered.mean() > 0.2
    rows, cols = np.nonzero(covered)
    x, y = cc.verts[0, :, 0] * cc.scale, cc.verts[0, :, 1] * cc.scale  # the template in pixels of the 64 image
    np.testing.assert_allclose(nmfc[0][covered], (cols + 0.5 - x.min()) / np.ptp(x), atol=1e-4)
    np.testing.assert_allclose(nmfc[1][covered], (y.max() - rows - 0.5) / np.ptp(y), atol=1e-4)
    assert not nmfc[:, ~covered].any()  # black background


def test_the_warp_refuses_a_flame_fitted_clip_in_one_line(deca_processed, tmp_path, python_exe, python_env):
    """The warp moves FaceMesh's own points (eyes, inner lips, oval): a clip fitted with DECA (FLAME's 5023
    vertices) is refused in one line naming both, through the path the pipeline takes (load_renderer ->
    edit_video) and through a command (renderer.evaluate), before anything is written."""
    clip = Clip(next(deca_processed.glob("*/neutral/level_*/*")))
    model = face_model_for(deca_processed)
    out = tmp_path / "edited.mp4"
    with pytest.raises(UserError) as refused:
        edit_video(clip, clip.face(), load_renderer("warp"), model, out, side_by_side=True)
    message = str(refused.value)
    assert "\n" not in message and not out.exists() and not list(tmp_path.iterdir())
    assert message.startswith("the warp renderer needs a face model of topology facemesh468 (FaceMesh, 468 vert")
    assert "fitted with deca (FLAME, 5023 vertices)" in message and "face_model=mesh" in message
    actor = clip.meta.actor
    split = next(c["split"] for c in read_clip_index(deca_processed)["clips"] if c["actor"] == actor)
    args = ["--run", "warp", "--actor", actor, "--data-dir", deca_processed, "--split", split]
    proc = run_module(python_exe, python_env, "renderer.evaluate", *args, "--out", tmp_path / "e.json", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and not (tmp_path / "e.json").exists()
    assert proc.stderr.strip().splitlines()[-1] == f"error: {message}"


@pytest.mark.skipif(not all((DATA_DIR / n).is_file() for n in REQUIRED), reason="real DECA/FLAME files not placed")
def test_real_assets_load():
    deca = DECA.load()
    codes = deca.encode(torch.rand(1, 3, 224, 224))
    verts = deca.flame(codes["shape"], codes["exp"], codes["pose"])
    assert verts.shape == (1, 5023, 3)
