"""ArcFace for FAD / CSIM: weight files written in the real on-disk layouts, CDRL's preprocessing, known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from common.errors import FormatError, UserError
from evaluation.arcface import ARCFACE_FILE, ArcFace, IResNet, ResNetFace18, csim, default_path, fad, missing


def _bn(name: str, c: int) -> dict[str, tuple]:
    return {f"{name}.{p}": (c,) for p in ("weight", "bias", "running_mean", "running_var")} | {
        f"{name}.num_batches_tracked": ()
    }


def resnet18_110_layout() -> dict[str, tuple]:
    """Keys and shapes of resnet18_110.pth (ronghuaiyang/arcface-pytorch models/resnet.py, resnet_face18 with
    use_se=False), spelled out here independently of evaluation.arcface."""
    keys = {"conv1.weight": (64, 1, 3, 3), **_bn("bn1", 64), "prelu.weight": (1,)}
    c_in = 64
    for stage, c_out in enumerate((64, 128, 256, 512), 1):
        for j in range(2):
            b, c = f"layer{stage}.{j}", c_in if j == 0 else c_out
            keys |= {**_bn(f"{b}.bn0", c), f"{b}.conv1.weight": (c, c, 3, 3), **_bn(f"{b}.bn1", c)}
            keys |= {f"{b}.prelu.weight": (1,), f"{b}.conv2.weight": (c_out, c, 3, 3), **_bn(f"{b}.bn2", c_out)}
            if j == 0 and stage > 1:  # stride 2
                keys |= {f"{b}.downsample.0.weight": (c_out, c, 1, 1), **_bn(f"{b}.downsample.1", c_out)}
        c_in = c_out
    return keys | {**_bn("bn4", 512), "fc5.weight": (512, 512 * 8 * 8), "fc5.bias": (512,), **_bn("bn5", 512)}


def iresnet_layout(depths: tuple[int, ...]) -> dict[str, tuple]:
    """Keys and shapes of an InsightFace arcface_torch backbone.pth (backbones/iresnet.py)."""
    keys = {"conv1.weight": (64, 3, 3, 3), **_bn("bn1", 64), "prelu.weight": (64,)}
    c_in = 64
    for stage, (n, c_out) in enumerate(zip(depths, (64, 128, 256, 512), strict=True), 1):
        for j in range(n):
            b, c = f"layer{stage}.{j}", c_in if j == 0 else c_out
            keys |= {**_bn(f"{b}.bn1", c), f"{b}.conv1.weight": (c_out, c, 3, 3), **_bn(f"{b}.bn2", c_out)}
            keys |= {f"{b}.prelu.weight": (c_out,), f"{b}.conv2.weight": (c_out, c_out, 3, 3), **_bn(f"{b}.bn3", c_out)}
            if j == 0:  # every stage starts with stride 2
                keys |= {f"{b}.downsample.0.weight": (c_out, c, 1, 1), **_bn(f"{b}.downsample.1", c_out)}
        c_in = c_out
    return keys | {**_bn("bn2", 512), "fc.weight": (512, 512 * 7 * 7), "fc.bias": (512,), **_bn("features", 512)}


def _random_state(layout: dict[str, tuple], seed: int, prefix: str = "", counters: bool = True) -> dict:
    """Random weights of moderate scale (so activations stay finite through the depth) in `layout`."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, shape in layout.items():
        if k.endswith("num_batches_tracked"):
            if counters:
                state[prefix + k] = torch.tensor(1000)
            continue
        if len(shape) > 1:
            v = torch.randn(shape, generator=g) / np.sqrt(np.prod(shape[1:]))
        elif "prelu" in k:
            v = torch.full(shape, 0.25)
        elif k.endswith("running_var"):
            v = torch.rand(shape, generator=g) + 0.5
        else:
            v = torch.randn(shape, generator=g) * 0.1 + (1.0 if k.endswith("weight") else 0.0)
        state[prefix + k] = v
    return state


def reference_resnet_face18(state: dict, x: torch.Tensor) -> torch.Tensor:
    """resnet_face18(use_se=False).eval() forward written out with functional ops from ronghuaiyang's
    models/resnet.py (ResNetFace, IRBlock): (B, 1, 128, 128) -> (B, 512)."""

    def bn(y, name):
        w, b, mean, var = (state[f"{name}.{p}"] for p in ("weight", "bias", "running_mean", "running_var"))
        return F.batch_norm(y, mean, var, w, b, training=False, eps=1e-5)

    x = F.max_pool2d(F.prelu(bn(F.conv2d(x, state["conv1.weight"], padding=1), "bn1"), state["prelu.weight"]), 2)
    for stage in range(1, 5):
        for j in range(2):
            b, stride = f"layer{stage}.{j}", 2 if stage > 1 and j == 0 else 1
            slope = state[f"{b}.prelu.weight"]
            out = F.prelu(bn(F.conv2d(bn(x, f"{b}.bn0"), state[f"{b}.conv1.weight"], padding=1), f"{b}.bn1"), slope)
            out = bn(F.conv2d(out, state[f"{b}.conv2.weight"], stride=stride, padding=1), f"{b}.bn2")
            if f"{b}.downsample.0.weight" in state:
                x = bn(F.conv2d(x, state[f"{b}.downsample.0.weight"], stride=stride), f"{b}.downsample.1")
            x = F.prelu(out + x, slope)
    x = F.linear(bn(x, "bn4").flatten(1), state["fc5.weight"], state["fc5.bias"])
    return bn(x, "bn5")


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    """resnet18_110.pth as saved from DataParallel (module. keys, step counters) and a plain copy without both."""
    root = tmp_path_factory.mktemp("arcface")
    torch.save(_random_state(resnet18_110_layout(), 0, prefix="module."), root / ARCFACE_FILE)
    torch.save(_random_state(resnet18_110_layout(), 0, counters=False), root / "plain.pth")
    return root / ARCFACE_FILE, root / "plain.pth"


def _faces(n: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """(n, size, size, 3) uint8 smooth random 'faces' (blocky noise, upsampled)."""
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, (n, size // 8, size // 8, 3), dtype=np.uint8)
    return np.ascontiguousarray(low.repeat(8, axis=1).repeat(8, axis=2))


def test_loads_resnet18_110_with_and_without_module_prefix(weight_files):
    dp_file, plain_file = weight_files
    assert missing(dp_file) is None
    faces = _faces(4)
    net = ArcFace.load(dp_file)
    feats = net.embed(faces)
    assert feats.shape == (4, 512) and feats.dtype == np.float32 and np.isfinite(feats).all()
    np.testing.assert_array_equal(net.embed(faces), feats)  # deterministic: eval mode, no dropout
    np.testing.assert_allclose(net.embed(faces, batch=3), feats, rtol=1e-4, atol=1e-4)  # batches independent
    np.testing.assert_allclose(ArcFace.load(plain_file).embed(faces), feats, rtol=1e-5, atol=1e-5)
    state = {k.removeprefix("module."): v for k, v in torch.load(dp_file, weights_only=True).items()}
    want = reference_resnet_face18(state, net.preprocess(torch.tensor(faces)))
    np.testing.assert_allclose(feats, want.numpy(), rtol=1e-4, atol=1e-4 * want.abs().max().item())
    assert net.embed(faces[:0]).shape == (0, 512)
    with pytest.raises(ValueError, match="uint8"):
        net.embed(faces.astype(np.float32))


def test_identical_faces_give_csim_one_and_fad_zero(weight_files):
    net = ArcFace.load(weight_files[0])
    a, b = net.embed(_faces(4, seed=1)), net.embed(_faces(4, seed=2))
    assert csim(a, a.copy()) == pytest.approx(1.0, abs=1e-6)
    assert csim(a, b) < 0.99  # different faces are told apart
    d_other = fad(a, b)
    assert d_other > 0 and fad(a, a.copy()) == pytest.approx(0.0, abs=1e-3 * d_other)


def test_preprocessing_matches_cdrls_pil_pipeline(weight_files):
    """CDRL metrics/models.py: PIL convert('L'), Resize(164), CenterCrop(128), Normalize(0.5, 0.5)."""
    from PIL import Image

    net = ArcFace.load(weight_files[0])
    rng = np.random.default_rng(3)
    for h, w in ((256, 256), (200, 300), (90, 64)):
        img = np.asarray(Image.fromarray(rng.integers(0, 256, (h // 4, w // 4, 3), dtype=np.uint8)).resize((w, h)))
        gray = Image.fromarray(img).convert("L")
        size = (164, int(164 * h / w)) if w <= h else (int(164 * w / h), 164)
        gray = gray.resize(size, Image.BILINEAR)
        top, left = round((gray.height - 128) / 2), round((gray.width - 128) / 2)
        ref = np.asarray(gray.crop((left, top, left + 128, top + 128)), np.float32) / 127.5 - 1.0
        got = net.preprocess(torch.tensor(img)[None])
        assert got.shape == (1, 1, 128, 128)
        diff = np.abs(got[0, 0].numpy() - ref) * 127.5  # in grey levels
        assert diff.max() <= 1.0 + 1e-3 and diff.mean() < 0.5


def test_default_path_and_missing_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert default_path() == tmp_path / "hub" / "checkpoints" / ARCFACE_FILE
    why = missing(None)
    assert why.startswith("missing ") and str(default_path()) in why and "ronghuaiyang/arcface-pytorch" in why
    with pytest.raises(UserError, match="missing .*resnet18_110.pth") as err:
        ArcFace.load()
    assert not isinstance(err.value, FormatError)
    assert missing(tmp_path / "elsewhere.pth").startswith(f"missing {tmp_path / 'elsewhere.pth'}")


def test_foreign_files_raise_format_error(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(FormatError, match="junk.pth: not a PyTorch weight file"):
        ArcFace.load(junk)
    torch.save([torch.zeros(3)], junk)
    with pytest.raises(FormatError, match="not an ArcFace state dict"):
        ArcFace.load(junk)
    state = _random_state(resnet18_110_layout(), 0)
    del state["fc5.weight"], state["bn5.running_var"]  # also keeps the file small
    torch.save(state, junk)
    with pytest.raises(FormatError, match=r"resnet_face18.*2 missing key\(s\) \(fc5.weight, bn5.running_var\)"):
        ArcFace.load(junk)
    state["fc5.weight"], state["bn5.running_var"] = torch.zeros(512, 100), torch.ones(512)
    torch.save(state, junk)
    with pytest.raises(FormatError, match=r"wrong shape\(s\) \(fc5.weight: \(512, 100\), expected \(512, 32768\)\)"):
        ArcFace.load(junk)
    del state["fc5.weight"]
    state["layer1.0.se.fc.0.weight"] = torch.zeros(4, 64)  # the use_se=True variant
    torch.save(state, junk)
    with pytest.raises(FormatError, match=r"unexpected key\(s\) \(layer1.0.se.fc.0.weight\)"):
        ArcFace.load(junk)


@pytest.mark.parametrize("depths", [None, (3, 4, 14, 3), (3, 13, 30, 3)])
def test_network_layouts(depths):
    """resnet_face18 and arcface_torch's iresnet50 / iresnet100 have the checkpoints' keys and shapes."""
    with torch.device("meta"):  # shapes only: nothing allocated
        net = ResNetFace18() if depths is None else IResNet(depths)
    layout = resnet18_110_layout() if depths is None else iresnet_layout(depths)
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == layout


def test_loads_insightface_backbone(tmp_path):
    path = tmp_path / "backbone.pth"
    torch.save(_random_state(iresnet_layout((2, 2, 2, 2)), 5), path)  # iresnet18: the smallest real one
    net = ArcFace.load(path)
    assert isinstance(net.net, IResNet) and [len(net.net.layer3), len(net.net.layer4)] == [2, 2]
    faces = _faces(3, size=128)
    assert net.preprocess(torch.tensor(faces)).shape == (3, 3, 112, 112)
    feats = net.embed(faces)
    assert feats.shape == (3, 512) and feats.dtype == np.float32 and np.isfinite(feats).all()
    assert csim(feats, net.embed(faces)) == pytest.approx(1.0, abs=1e-6)


def test_csim_known_answers():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    b = np.array([[3.0, 0.0], [-2.0, -2.0], [5.0, 0.0]])  # cosines 1, -1, 0
    assert csim(a, b) == pytest.approx(0.0, abs=1e-12)
    assert csim(a[:1], np.array([[1.0, 1.0]])) == pytest.approx(1 / np.sqrt(2))
    assert csim(a[:2], a[:2] * 7.0) == pytest.approx(1.0)  # scale-free
    with pytest.raises(ValueError):
        csim(a, b[:2])


def test_fad_orders_feature_sets():
    rng = np.random.default_rng(0)
    real, fake_same = rng.normal(size=(400, 16)), rng.normal(size=(400, 16))
    fake_other = rng.normal(loc=1.0, scale=2.0, size=(400, 16))  # known answer 16 * 1 + 16 * (1 + 4 - 4) = 32
    assert fad(real, real.copy()) == pytest.approx(0.0, abs=1e-6)
    assert fad(fake_same, real) < 2.0 < 25.0 < fad(fake_other, real) < 40.0
    with pytest.raises(ValueError):
        fad(real, real[:, :8])
