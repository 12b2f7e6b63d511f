"""FID Inception: the checkpoint's key layout, loading generated weights, preprocessing, foreign files, FID order.

No real weights here: pytorch-fid's file is user-placed. The layout literals below are pytorch-fid's
`fid_inception_v3()` (torchvision's Inception3 with num_classes=1008, aux_logits=False), which loads the file
strictly: 94 conv+BN units x 5 tensors + fc weight and bias = 472 keys (+ 94 BatchNorm counters when saved by
torch >= 0.4.1), 23,850,960 parameters.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.errors import FormatError, UserError
from evaluation.fid import FID_FILE, FIDInception, default_path, fid, missing, to_inception_input

N_KEYS = 472
SPOT_SHAPES = {
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
    "Conv2d_4a_3x3.bn.running_var": (192,),
    "Mixed_5b.branch1x1.bn.running_mean": (64,),
    "Mixed_5d.branch_pool.conv.weight": (64, 288, 1, 1),
    "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
    "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
    "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
    "Mixed_7b.branch3x3dbl_1.conv.weight": (448, 1280, 1, 1),
    "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
    "fc.weight": (1008, 2048),
    "fc.bias": (1008,),
}
# pytorch-fid 0.3.0's InceptionV3 (on torchvision 0.28's Inception3 source) gave these per-image mean / std of the
# pool3 features for _random_state() and _images(); our module matched it to the last bit on that run
REFERENCE = {
    "noise_a": ([2.338683, 2.382666, 2.320539], [3.27061, 3.333873, 3.250633]),
    "flat": ([0.740776, 1.969169, 2.340553], [1.039935, 2.745823, 3.272566]),
}


def _random_state(counters: bool) -> dict[str, torch.Tensor]:
    """Random weights with the real names and shapes, scaled so activations stay O(1) through 47 layers."""
    g = torch.Generator().manual_seed(0)
    state = {}
    for k, v in FIDInception().state_dict().items():
        if k.endswith("num_batches_tracked"):
            if counters:
                state[k] = torch.tensor(0)
        elif k.endswith(("running_var", "bn.weight")):
            state[k] = torch.rand(v.shape, generator=g) + 0.5
        elif k.endswith(("running_mean", "bn.bias")):
            state[k] = torch.randn(v.shape, generator=g) * 0.1
        else:
            state[k] = torch.randn(v.shape, generator=g) * (2.0 / v[0].numel()) ** 0.5
    return state


def _images() -> dict[str, np.ndarray]:
    """Two draws of the same noise distribution and a set of flat-coloured images, 3 each, small and non-square."""
    rng = np.random.default_rng(0)
    flat = np.repeat(rng.integers(0, 256, (3, 1, 1, 3), dtype=np.uint8), 48, 1).repeat(40, 2)
    return {
        "noise_a": rng.integers(0, 256, (3, 48, 40, 3), dtype=np.uint8),
        "noise_b": rng.integers(0, 256, (3, 48, 40, 3), dtype=np.uint8),
        "flat": flat,
    }


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("fid") / FID_FILE
    torch.save(_random_state(counters=False), path)
    return path


@pytest.fixture(scope="module")
def net(weights) -> FIDInception:
    return FIDInception.load(weights)


@pytest.fixture(scope="module")
def feats(net) -> dict[str, np.ndarray]:
    return {name: net.features(imgs, batch=2) for name, imgs in _images().items()}


def test_module_keys_are_the_checkpoint_layout():
    model = FIDInception()
    state = model.state_dict()
    keys = [k for k in state if not k.endswith("num_batches_tracked")]
    assert len(keys) == N_KEYS and len(state) - len(keys) == 94
    assert {k: tuple(state[k].shape) for k in SPOT_SHAPES} == SPOT_SHAPES
    assert not any(k.startswith("AuxLogits") for k in keys)
    assert sum(p.numel() for p in model.parameters()) == 23_850_960
    assert model.Conv2d_1a_3x3.bn.eps == pytest.approx(1e-3) and model.Conv2d_1a_3x3.conv.bias is None


def test_input_is_resized_and_scaled_like_pytorch_fid():
    imgs = np.zeros((2, 30, 20, 3), np.uint8)
    imgs[0] = 255
    imgs[1, :, :, 0] = 255  # pure red: channel 0 stays channel 0
    x = to_inception_input(imgs)
    assert x.shape == (2, 3, 299, 299) and x.dtype == torch.float32
    # exact up to float order: bilinear weights of a flat image sum to 1 within an ulp or two, and how they are
    # summed depends on the thread count and the CPU's vector width
    torch.testing.assert_close(x[0], torch.ones_like(x[0]), rtol=0, atol=1e-6)
    torch.testing.assert_close(x[1, 0], torch.ones_like(x[1, 0]), rtol=0, atol=1e-6)
    torch.testing.assert_close(x[1, 1:], -torch.ones_like(x[1, 1:]), rtol=0, atol=1e-6)
    ramp = np.broadcast_to(np.arange(0, 256, 5, dtype=np.uint8)[None, None, :, None], (1, 4, 52, 3)).copy()
    row = to_inception_input(ramp)[0, 0, 0]
    assert row[0] == pytest.approx(-1.0) and row[-1] == pytest.approx(1.0) and torch.all(row.diff() >= 0)
    with pytest.raises(ValueError, match="uint8"):
        to_inception_input(imgs.astype(np.float32))


def test_features_on_generated_weights(weights, net, feats):
    assert missing(weights) is None
    f = feats["noise_a"]
    assert f.shape == (3, 2048) and f.dtype == np.float64
    assert np.isfinite(f).all() and (f >= 0).all() and f.max() > 0
    again = net.features(_images()["noise_a"], batch=32)  # one batch instead of two: same features
    np.testing.assert_allclose(again, f, rtol=1e-5, atol=1e-6)
    assert net.features(np.zeros((0, 8, 8, 3), np.uint8)).shape == (0, 2048)


def test_features_match_pytorch_fid_reference_values(feats):
    for name, (mean, std) in REFERENCE.items():
        np.testing.assert_allclose(feats[name].mean(1), mean, rtol=1e-4, err_msg=name)
        np.testing.assert_allclose(feats[name].std(1), std, rtol=1e-4, err_msg=name)


@pytest.mark.filterwarnings("ignore:Matrix is singular")  # 3 samples in 64 dimensions: rank-deficient by design
def test_fid_orders_image_sets(feats):
    # scipy's sqrtm of a 2048 x 2048 matrix takes 10-30 s on a 2-core CPU: the order is checked on 64
    # feature channels (fid() itself does not depend on the dimension)
    a, b, flat = (feats[k][:, :64] for k in ("noise_a", "noise_b", "flat"))
    assert fid(a, a.copy()) == pytest.approx(0.0, abs=1e-6)
    same, different = fid(a, b), fid(a, flat)
    assert 0.0 < same < different
    assert fid(flat, a) == pytest.approx(different, rel=1e-6)
    # known answer: N(0, I) vs N(1, 4 I) in d dims is d + d (1 + 4 - 2 * 2) = 2d
    x = np.random.default_rng(0).normal(size=(50, 8))
    x -= x.mean(0)
    x = x @ np.linalg.inv(np.linalg.cholesky(np.cov(x, rowvar=False))).T  # sample mean 0, covariance I exactly
    assert fid(x, 1.0 + 2.0 * x) == pytest.approx(16.0, rel=1e-9)


def test_missing_file_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert default_path() == tmp_path / "hub" / "checkpoints" / FID_FILE
    why = missing(None)
    assert str(default_path()) in why and "pytorch-fid" in why
    with pytest.raises(UserError, match=FID_FILE):
        FIDInception.load()
    with pytest.raises(UserError, match="elsewhere.pth"):
        FIDInception.load(tmp_path / "elsewhere.pth")


def test_foreign_files_are_format_errors(tmp_path):
    path = tmp_path / FID_FILE
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(FormatError, match="not a PyTorch weight file"):
        FIDInception.load(path)
    torch.save(torch.zeros(3), path)
    with pytest.raises(FormatError, match="expected a state dict, found Tensor"):
        FIDInception.load(path)
    state = _random_state(counters=True)  # the counters are accepted, the missing key is not
    del state["Mixed_6b.branch7x7_2.bn.running_mean"]
    state["fc.weight"] = torch.zeros(1000, 2048)  # torchvision's ImageNet Inception has 1000 classes
    state["AuxLogits.fc.bias"] = torch.zeros(1000)
    torch.save(state, path)
    with pytest.raises(FormatError, match=r"1 missing key\(s\) \(Mixed_6b.branch7x7_2.bn.running_mean\)") as err:
        FIDInception.load(path)
    assert "1 unexpected key(s) (AuxLogits.fc.bias)" in str(err.value)
    assert "fc.weight: (1000, 2048), expected (1008, 2048)" in str(err.value)
    torch.save({"fc.bias": "1008 logits"}, path)
    with pytest.raises(FormatError, match=r"non-tensor value\(s\) \(fc.bias\)"):
        FIDInception.load(path)
