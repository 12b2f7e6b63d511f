"""EfficientFace for csim_emo: a weight file written in the released layout, strict loading, CDRL's
preprocessing, an independent functional forward, known answers of the set-to-set cosine average."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from common.errors import FormatError, UserError
from evaluation import pretrained
from evaluation.efficientface import (
    EFFICIENTFACE_FILE,
    FEATURE_DIM,
    EfficientFace,
    EfficientFaceNet,
    csim_emo,
    csim_emo_indices,
    default_path,
    missing,
)

MEAN = torch.tensor([0.57535914, 0.44928582, 0.40079932]).view(1, 3, 1, 1)
STD = torch.tensor([0.20735591, 0.18981615, 0.18132027]).view(1, 3, 1, 1)


def _bn(name: str, c: int) -> dict[str, tuple]:
    return {f"{name}.{p}": (c,) for p in ("weight", "bias", "running_mean", "running_var")} | {
        f"{name}.num_batches_tracked": ()
    }


def efficientface_layout(num_classes: int = 7) -> dict[str, tuple]:
    """Keys and shapes of zengqunzhao/EfficientFace's efficient_face() (models/EfficientFace.py, modulator.py),
    spelled out here independently of evaluation.efficientface."""
    keys = {"conv1.0.weight": (29, 3, 3, 3), **_bn("conv1.1", 29)}
    c_in = 29
    for stage, n, c_out in ((2, 4, 116), (3, 8, 232), (4, 4, 464)):
        half = c_out // 2
        for j in range(n):
            b = f"stage{stage}.{j}"
            if j == 0:
                keys |= {f"{b}.branch1.0.weight": (c_in, 1, 3, 3), **_bn(f"{b}.branch1.1", c_in)}
                keys |= {f"{b}.branch1.2.weight": (half, c_in, 1, 1), **_bn(f"{b}.branch1.3", half)}
            keys |= {f"{b}.branch2.0.weight": (half, c_in if j == 0 else half, 1, 1), **_bn(f"{b}.branch2.1", half)}
            keys |= {f"{b}.branch2.3.weight": (half, 1, 3, 3), **_bn(f"{b}.branch2.4", half)}
            keys |= {f"{b}.branch2.5.weight": (half, half, 1, 1), **_bn(f"{b}.branch2.6", half)}
        c_in = c_out
    for i in range(1, 5):
        keys |= {f"local.conv{i}_1.weight": (116, 1, 3, 3), **_bn(f"local.bn{i}_1", 116)}
        keys |= {f"local.conv{i}_2.weight": (116, 1, 3, 3), **_bn(f"local.bn{i}_2", 116)}
    c, s = "modulator.channel_att.gate_c", "modulator.spatial_att.gate_s"
    keys |= {f"{c}.gate_c_fc_0.weight": (7, 116), f"{c}.gate_c_fc_0.bias": (7,), **_bn(f"{c}.gate_c_bn_1", 7)}
    keys |= {f"{c}.gate_c_fc_final.weight": (116, 7), f"{c}.gate_c_fc_final.bias": (116,)}
    keys |= {f"{s}.gate_s_conv_reduce0.weight": (7, 116, 1, 1), f"{s}.gate_s_conv_reduce0.bias": (7,)}
    keys |= _bn(f"{s}.gate_s_bn_reduce0", 7)
    for i in range(2):
        keys |= {f"{s}.gate_s_conv_di_{i}.weight": (7, 7, 3, 3), f"{s}.gate_s_conv_di_{i}.bias": (7,)}
        keys |= _bn(f"{s}.gate_s_bn_di_{i}", 7)
    keys |= {f"{s}.gate_s_conv_final.weight": (1, 7, 1, 1), f"{s}.gate_s_conv_final.bias": (1,)}
    keys |= {"conv5.0.weight": (1024, 464, 1, 1), **_bn("conv5.1", 1024)}
    return keys | {"fc.weight": (num_classes, 1024), "fc.bias": (num_classes,)}


def random_state(layout: dict[str, tuple], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights of moderate scale, BatchNorm step counters included (as a PyTorch >= 0.4.1 save has)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, shape in layout.items():
        if k.endswith("num_batches_tracked"):
            v = torch.tensor(1000)
        elif len(shape) > 1:
            v = torch.randn(shape, generator=g) / np.sqrt(np.prod(shape[1:]))
        elif k.endswith("running_var"):
            v = torch.rand(shape, generator=g) + 0.5
        else:
            v = torch.randn(shape, generator=g) * 0.1 + (1.0 if k.endswith("weight") else 0.0)
        state[k] = v
    return state


def released_file(path, state: dict) -> None:
    """EfficientFace's main.py save: torch.save({'state_dict': DataParallel(model).state_dict()})."""
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)


def reference_features(state: dict, x: torch.Tensor) -> torch.Tensor:
    """The original's forward (fc left out, as CDRL's metrics/models.py) written with functional ops from the
    state dict: (B, 3, 224, 224) -> (B, 1024)."""

    def bn(y, name, relu=True):
        w, b, m, v = (state[f"{name}.{p}"] for p in ("weight", "bias", "running_mean", "running_var"))
        y = F.batch_norm(y, m, v, w, b, training=False, eps=1e-5)
        return F.relu(y) if relu else y

    def dw(y, name, stride=1):
        return F.conv2d(y, state[f"{name}.weight"], stride=stride, padding=1, groups=y.shape[1])

    def unit(y, b, stride):
        def branch2(z):
            z = bn(F.conv2d(z, state[f"{b}.branch2.0.weight"]), f"{b}.branch2.1")
            z = bn(dw(z, f"{b}.branch2.3", stride), f"{b}.branch2.4", relu=False)
            return bn(F.conv2d(z, state[f"{b}.branch2.5.weight"]), f"{b}.branch2.6")

        if stride == 1:
            a, z = y.chunk(2, dim=1)
            out = torch.cat([a, branch2(z)], 1)
        else:
            z1 = bn(dw(y, f"{b}.branch1.0", stride), f"{b}.branch1.1", relu=False)
            out = torch.cat([bn(F.conv2d(z1, state[f"{b}.branch1.2.weight"]), f"{b}.branch1.3"), branch2(y)], 1)
        n, c, h, w = out.shape
        return out.reshape(n, 2, c // 2, h, w).permute(0, 2, 1, 3, 4).reshape(n, c, h, w)

    x = F.max_pool2d(bn(F.conv2d(x, state["conv1.0.weight"], stride=2, padding=1), "conv1.1"), 3, 2, 1)
    stem, y = x, x
    for j in range(4):
        y = unit(y, f"stage2.{j}", 2 if j == 0 else 1)
    # modulator: sigmoid(channel gate * spatial gate) * y
    c, s = "modulator.channel_att.gate_c", "modulator.spatial_att.gate_s"
    g = F.linear(y.mean((2, 3)), state[f"{c}.gate_c_fc_0.weight"], state[f"{c}.gate_c_fc_0.bias"])
    g = F.batch_norm(g, *(state[f"{c}.gate_c_bn_1.{p}"] for p in ("running_mean", "running_var", "weight", "bias")))
    g = F.linear(F.relu(g), state[f"{c}.gate_c_fc_final.weight"], state[f"{c}.gate_c_fc_final.bias"])
    sp = bn(
        F.conv2d(y, state[f"{s}.gate_s_conv_reduce0.weight"], state[f"{s}.gate_s_conv_reduce0.bias"]),
        f"{s}.gate_s_bn_reduce0",
    )
    for i in range(2):
        w, b = state[f"{s}.gate_s_conv_di_{i}.weight"], state[f"{s}.gate_s_conv_di_{i}.bias"]
        sp = bn(F.conv2d(sp, w, b, padding=4, dilation=4), f"{s}.gate_s_bn_di_{i}")
    sp = F.conv2d(sp, state[f"{s}.gate_s_conv_final.weight"], state[f"{s}.gate_s_conv_final.bias"])
    y = torch.sigmoid(g[:, :, None, None] * sp) * y
    # local branches: 1 = rows 0:28 cols 0:28, 2 = rows 28:56 cols 0:28, 3 = rows 0:28 cols 28:56, 4 = both 28:56
    local = torch.zeros_like(y)
    for i, (r, col) in enumerate(((0, 0), (28, 0), (0, 28), (28, 28)), 1):
        p = bn(dw(stem[:, :, r : r + 28, col : col + 28], f"local.conv{i}_1", 2), f"local.bn{i}_1")
        local[:, :, r // 2 : r // 2 + 14, col // 2 : col // 2 + 14] = bn(dw(p, f"local.conv{i}_2"), f"local.bn{i}_2")
    y = y + local
    for stage, n in ((3, 8), (4, 4)):
        for j in range(n):
            y = unit(y, f"stage{stage}.{j}", 2 if j == 0 else 1)
    return bn(F.conv2d(y, state["conv5.0.weight"]), "conv5.1").mean((2, 3))


def synthetic_faces(n: int = 3, size: int = 256, seed: int = 0) -> np.ndarray:
    """Face-like crops: skin ellipse, eyes, brows, a mouth that opens differently per face, some noise."""
    rng = np.random.default_rng(seed)
    faces = []
    for i in range(n):
        img = np.full((size, size, 3), (70, 90, 110), np.uint8)
        c = size // 2
        cv2.ellipse(img, (c, c), (size * 3 // 10, size * 4 // 10), 0, 0, 360, (205, 160, 135), -1)
        for dx in (-1, 1):
            cv2.circle(img, (c + dx * size // 8, c - size // 12), size // 28, (40, 30, 30), -1)
            brow = ((c + dx * size // 12, c - size // 7), (c + dx * size // 5, c - size // 6 - i * 3))
            cv2.line(img, *brow, (60, 40, 30), 3)
        cv2.ellipse(img, (c, c + size // 5), (size // 9, 3 + 6 * i), 0, 0, 360, (120, 40, 50), -1)
        faces.append(np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8))
    return np.stack(faces)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    state = random_state(efficientface_layout())
    path = tmp_path_factory.mktemp("ef") / EFFICIENTFACE_FILE
    released_file(path, state)
    return path, state


def test_layout_is_the_originals():
    ours = {k: tuple(v.shape) for k, v in EfficientFaceNet().state_dict().items()}
    assert ours == efficientface_layout()


def test_released_file_loads_strictly_and_matches_the_reference(weights, tmp_path):
    path, state = weights
    model = EfficientFace.load(path)
    direct = EfficientFaceNet()
    direct.load_state_dict(state, strict=True)
    faces = synthetic_faces()
    x = model.preprocess(faces)
    with torch.no_grad():
        ours, mem, ref = model.net(x), direct.eval()(x), reference_features(state, x)
    assert torch.equal(ours, mem)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)
    assert ours.abs().max() > 0.1  # the random net is not dead
    # the same weights re-saved flat (no `module.`, no counters) read the same
    flat = tmp_path / "flat.pth"
    torch.save({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, flat)
    np.testing.assert_array_equal(EfficientFace.load(flat).features(faces), model.features(faces))


def _one_line_format_error(path, state) -> str:
    released_file(path, state)
    with pytest.raises(FormatError) as err:
        EfficientFace.load(path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(path))
    return msg


def test_wrong_key_or_shape_is_one_line_naming_the_file(weights, tmp_path):
    _, state = weights
    renamed = dict(state)
    renamed["local.conv9_1.weight"] = renamed.pop("local.conv1_1.weight")
    msg = _one_line_format_error(tmp_path / "renamed.pth.tar", renamed)
    assert "missing key(s) (local.conv1_1.weight)" in msg and "unexpected key(s) (local.conv9_1.weight)" in msg
    affectnet8 = state | {"fc.weight": torch.zeros(8, 1024), "fc.bias": torch.zeros(8)}
    msg = _one_line_format_error(tmp_path / "affectnet8.pth.tar", affectnet8)
    assert "fc.weight: (8, 1024), expected (7, 1024)" in msg
    junk = tmp_path / "junk.pth.tar"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(FormatError, match="not a PyTorch weight file") as err:
        EfficientFace.load(junk)
    assert "\n" not in str(err.value) and str(junk) in str(err.value)


def test_missing_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    assert default_path() == tmp_path / "th" / "hub" / "checkpoints" / EFFICIENTFACE_FILE
    line = missing(None)
    assert line.startswith(f"missing {default_path()} (") and "zengqunzhao/EfficientFace" in line
    with pytest.raises(UserError) as err:
        EfficientFace.load(tmp_path / "absent.pth.tar")
    assert str(err.value) == f"EfficientFace: {missing(tmp_path / 'absent.pth.tar')}"


def test_pretrained_registry(weights, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    assert pretrained.METRIC_NETS["csim_emo"] == "efficientface"
    common = dict(lpips_heads=str(tmp_path / "h.pth"), fer=str(tmp_path / "fer.hdf5"))
    nets, why = pretrained.load(pretrained.PretrainedPaths(**common))
    assert nets.efficientface is None and EFFICIENTFACE_FILE in why["csim_emo"]
    nets, why = pretrained.load(pretrained.PretrainedPaths(efficientface=str(weights[0]), **common))
    assert isinstance(nets.efficientface, EfficientFace) and "csim_emo" not in why and "csim" in why


def test_features_and_preprocessing(weights):
    model = EfficientFace.load(weights[0])
    faces = synthetic_faces(4)
    feats = model.features(faces, batch=3)  # two batches
    assert feats.shape == (4, FEATURE_DIM) and feats.dtype == np.float32 and (feats >= 0).all()
    np.testing.assert_array_equal(feats, model.features(faces, batch=3))  # deterministic
    np.testing.assert_allclose(model.features(faces), feats, rtol=1e-4, atol=1e-6)  # batch size: rounding only
    # a 256 x 256 crop: no resize, the central 224 x 224, ToTensor, Normalize
    want = (torch.from_numpy(faces[:, 16:240, 16:240]).permute(0, 3, 1, 2).float() / 255 - MEAN) / STD
    torch.testing.assert_close(model.preprocess(faces), want)
    # other sizes: shorter side -> 256, then the centre crop
    assert model.preprocess(np.zeros((2, 300, 260, 3), np.uint8)).shape == (2, 3, 224, 224)
    assert model.features(np.zeros((0, 256, 256, 3), np.uint8)).shape == (0, FEATURE_DIM)
    with pytest.raises(ValueError, match="uint8"):
        model.features(faces.astype(np.float32))


def test_csim_emo_known_answers():
    rng = np.random.default_rng(0)
    v = rng.random(16)
    same = np.outer(rng.random(30) + 0.1, v)  # all parallel to v
    assert csim_emo(same, same[::-1] * 3) == pytest.approx(1.0)
    e1, e2 = np.eye(16)[0], np.eye(16)[1]
    assert csim_emo(np.tile(e1, (5, 1)), np.tile(e2, (7, 1))) == pytest.approx(0.0, abs=1e-12)
    # all pairs: generated all e1, real half e1 half e2 -> 0.5; a zero row counts as 0
    assert csim_emo(np.tile(e1, (3, 1)), np.stack([e1, e2, e1, e2])) == pytest.approx(0.5)
    assert csim_emo(np.stack([e1, np.zeros(16)]), np.stack([e1])) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        csim_emo(np.zeros((0, 16)), same)
    with pytest.raises(ValueError):
        csim_emo(same, same[:, :8])


def test_csim_emo_sampling_is_seeded_and_capped():
    gi, ri = csim_emo_indices(250, 40, max_pairs=100, seed=3)
    assert len(gi) == 100 == len(set(gi.tolist())) and gi.max() < 250
    np.testing.assert_array_equal(ri, np.arange(40))  # fewer than the cap: all of them
    g2, r2 = csim_emo_indices(250, 40, max_pairs=100, seed=3)
    np.testing.assert_array_equal(gi, g2)
    assert not np.array_equal(gi, csim_emo_indices(250, 40, max_pairs=100, seed=4)[0])
    rng = np.random.default_rng(1)
    gen, real = rng.random((250, 8)), rng.random((180, 8))
    gi, ri = csim_emo_indices(250, 180, max_pairs=50, seed=7)
    assert len(gi) == len(ri) == 50
    g = gen[gi] / np.linalg.norm(gen[gi], axis=1, keepdims=True)
    r = real[ri] / np.linalg.norm(real[ri], axis=1, keepdims=True)
    brute = np.mean([[a @ b for b in r] for a in g])
    assert csim_emo(gen, real, max_pairs=50, seed=7) == pytest.approx(brute, rel=1e-12)
    assert csim_emo(gen, real, max_pairs=50, seed=7) == csim_emo(gen, real, max_pairs=50, seed=7)
    assert csim_emo(gen, real, max_pairs=50, seed=7) != csim_emo(gen, real, max_pairs=50, seed=8)
    with pytest.raises(ValueError):
        csim_emo(gen, real, max_pairs=0)
