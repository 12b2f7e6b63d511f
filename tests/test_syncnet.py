"""SyncNet LSE-D / LSE-C: MFCCs, face crops, the offset search on constructed features, loading generated weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.errors import FormatError, UserError
from evaluation.syncnet import (
    SyncNet,
    face_crops,
    log_mel,
    mfcc,
    missing,
    offset_distances,
    pcm16_scale,
    resample_indices,
    sync_scores,
)

COUNTER = "num_batches_tracked"


def _state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random values under the real file's keys and shapes (no BatchNorm counters, like the 2017 file):
    torch's default initialisation, and random BatchNorm statistics so that loading them matters."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        state = {k: v.clone() for k, v in SyncNet().state_dict().items() if not k.endswith(COUNTER)}
        for k, v in state.items():
            if k.endswith("running_mean"):
                v.normal_(0.0, 0.1)
            elif k.endswith("running_var"):
                v.uniform_(0.5, 2.0)
    return state


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("syncnet") / "syncnet_v2.model"
    state = _state()
    torch.save(state, path)
    return path, state


def _clip(n_frames: int, fps: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    crops = rng.integers(0, 256, (n_frames, 224, 224, 3), dtype=np.uint8)
    audio = (rng.normal(size=int(n_frames / fps * 16000)) * 0.1).astype(np.float32)
    return crops, audio


# --- loading ----------------------------------------------------------------------------------------------


def test_generated_weights_load_and_score(weights):
    path, state = weights
    net = SyncNet.load(path)
    loaded = net.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    crops, audio = _clip(12, 30.0)  # 12 frames at 30 fps -> 10 at 25 fps -> 5 windows
    v, a = net.embed(crops, 30.0, audio)
    assert v.shape == a.shape == (5, 1024)
    lse_d, lse_c = net.lse(crops, 30.0, audio)
    assert isinstance(lse_d, float) and isinstance(lse_c, float)
    assert net.lse(crops, 30.0, audio) == (lse_d, lse_c)  # deterministic
    # the reference's input, built by hand: 25 fps frames 0, 1, 2, 4, 5, ... as BGR 0..255 floats in
    # (B, 3, 5, H, W) windows; MFCCs of the int16-scaled audio, 20 columns every 4
    frames = torch.from_numpy(crops[resample_indices(12, 30.0)][..., ::-1].copy()).float().permute(3, 0, 1, 2)
    windows = torch.stack([frames[:, i : i + 5] for i in range(5)])
    ref_v = net.forward_lip(windows)
    torch.testing.assert_close(v, ref_v, rtol=1e-4, atol=1e-5)
    ceps = torch.from_numpy(mfcc(np.round(audio.astype(np.float64) * 32768)).T).float()
    ref_a = net.forward_audio(torch.stack([ceps[None, :, 4 * i : 4 * i + 20] for i in range(5)]))
    torch.testing.assert_close(a, ref_a)
    # LSE-D / LSE-C: the offset search (known-shift tests below) on the reference's embeddings
    assert (lse_d, lse_c) == pytest.approx(sync_scores(ref_v, ref_a)[:2], rel=1e-4)
    with pytest.raises(UserError, match="at least 6 frames"):
        net.lse(crops[:5], 25.0, audio)


def test_load_accepts_batchnorm_counters(tmp_path):
    full = SyncNet().state_dict()  # a re-save from a recent torch carries the counters
    path = tmp_path / "syncnet_v2.model"
    torch.save(full, path)
    assert torch.equal(SyncNet.load(path).state_dict()["netfclip.3.weight"], full["netfclip.3.weight"])


def test_load_rejects_wrong_files(tmp_path):
    path = tmp_path / "syncnet_v2.model"
    path.write_bytes(b"certainly not a checkpoint")
    with pytest.raises(FormatError, match="syncnet_v2.model: not a PyTorch weight file"):
        SyncNet.load(path)
    torch.save(torch.zeros(3), path)
    with pytest.raises(FormatError, match="expected a state dict, found Tensor"):
        SyncNet.load(path)
    state = _state()
    del state["netcnnlip.0.weight"]
    torch.save(state, path)
    with pytest.raises(FormatError, match=r"1 missing key\(s\) \(netcnnlip.0.weight\)"):
        SyncNet.load(path)
    state = _state()
    state["netfcaud.3.weight"] = torch.zeros(512, 512)  # a 512-d embedding head
    torch.save(state, path)
    with pytest.raises(FormatError, match=r"wrong shape.*netfcaud.3.weight: \(512, 512\), expected \(1024, 512\)"):
        SyncNet.load(path)
    torch.save({"module." + k: v for k, v in _state().items()}, path)  # a DataParallel re-save reads the same
    assert torch.equal(SyncNet.load(path).state_dict()["netcnnaud.0.weight"], _state()["netcnnaud.0.weight"])


def test_missing_file_is_named(tmp_path):
    path = tmp_path / "nowhere" / "syncnet_v2.model"
    why = missing(path)
    assert why.startswith(f"missing {path}") and "syncnet_python" in why
    with pytest.raises(UserError, match="syncnet_v2.model"):
        SyncNet.load(path)


# --- offset search ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [-4, 0, 3, 15])
def test_offset_search_finds_a_known_shift(k):
    n, vshift = 40, 15
    audio = torch.randn(n, 8, generator=torch.Generator().manual_seed(0))
    video = torch.zeros_like(audio)  # video frame i shows audio window i - k (zero outside, like the padding)
    src = torch.arange(n) - k
    inside = (src >= 0) & (src < n)
    video[inside] = audio[src[inside]]
    lse_d, lse_c, offset = sync_scores(video, audio, vshift)
    assert offset == k
    assert lse_d < 1e-4  # only F.pairwise_distance's eps is left
    assert lse_c > 1.0
    mean = offset_distances(video, audio, vshift).mean(0)
    assert (mean > 1.0).sum() == 2 * vshift  # every other offset is far


def test_offset_distances_match_a_direct_loop():
    g = torch.Generator().manual_seed(1)
    video, audio, vshift = torch.randn(9, 5, generator=g), torch.randn(9, 5, generator=g), 3
    d = offset_distances(video, audio, vshift)
    assert d.shape == (9, 7)
    for i in range(9):
        for j in range(7):
            t = i + j - vshift
            other = audio[t] if 0 <= t < 9 else torch.zeros(5)
            assert d[i, j].item() == pytest.approx(torch.linalg.norm(video[i] - other + 1e-6).item(), rel=1e-5)
    mean = d.mean(0)
    lse_d, lse_c, offset = sync_scores(video, audio, vshift)
    assert lse_d == pytest.approx(mean.min().item()) and offset == vshift - int(mean.argmin())
    assert lse_c == pytest.approx(float(np.median(mean.numpy())) - mean.min().item())


def test_resample_to_25_fps_by_nearest_frame():
    assert resample_indices(6, 30.0).tolist() == [0, 1, 2, 4, 5]  # frame times 0, 40, 80, 120, 160 ms
    assert resample_indices(7, 25.0).tolist() == list(range(7))
    assert len(resample_indices(300, 30.0)) == 250


# --- MFCC -------------------------------------------------------------------------------------------------


def test_mfcc_matches_python_speech_features():
    psf = pytest.importorskip("python_speech_features")
    rng = np.random.default_rng(0)
    for sr, n in ((16000, 16037), (16000, 400), (16000, 401), (16000, 50), (8000, 9000)):
        x = (rng.normal(size=n) * 3000).astype(np.int16)
        np.testing.assert_allclose(mfcc(x, sr), psf.mfcc(x, sr), rtol=1e-9, atol=1e-9)
    # SyncNet's input: our float audio brought back to the int16 values the reference's wavfile.read gives
    pcm = (rng.normal(size=8000) * 3000).astype(np.int16)
    np.testing.assert_allclose(mfcc(pcm16_scale(pcm / 32768.0)), psf.mfcc(pcm, 16000), rtol=1e-9, atol=1e-9)


def test_mfcc_shape_tone_and_silence():
    assert mfcc(np.zeros(16000)).shape == (99, 13)  # 1 + ceil((16000 - 400) / 160)
    assert mfcc(np.zeros(100)).shape == (1, 13)  # shorter than a window: one zero-padded frame
    silent = mfcc(np.zeros(3000))
    assert np.all(silent[:, 0] == np.log(np.finfo(np.float64).eps))  # log(eps): zero energies are replaced
    np.testing.assert_allclose(silent[:, 1:], 0.0, atol=1e-12)  # the DCT of a constant
    t = np.arange(16000) / 16000
    bands, energy = log_mel(np.sin(2 * np.pi * 1500.0 * t) * 1000)
    mel_1500 = 2595 * np.log10(1 + 1500 / 700)
    centres = np.linspace(0, 2595 * np.log10(1 + 8000 / 700), 28)[1:-1]  # band peaks, mel-spaced
    assert np.all(bands.argmax(1) == np.abs(centres - mel_1500).argmin())
    assert np.all(np.isfinite(energy))
    loud = mfcc(np.sin(2 * np.pi * 1500.0 * t) * 2000)
    assert np.allclose(loud[:, 0] - mfcc(np.sin(2 * np.pi * 1500.0 * t) * 1000)[:, 0], np.log(4))  # log energy


# --- face crops -------------------------------------------------------------------------------------------


def test_face_crops_cut_the_expected_region():
    frame = np.full((480, 640, 3), 50, dtype=np.uint8)
    frame[190:290, 270:370] = (255, 0, 0)  # a red face box, 100 px, centre (320, 240)
    boxes = np.tile([270.0, 190.0, 370.0, 290.0], (15, 1))
    crops = face_crops([frame] * 15, boxes)
    assert crops.shape == (15, 224, 224, 3) and crops.dtype == np.uint8
    # half-size 50: x 250..390, y 190..330 (140 px -> 224: x 1.6): the box fills rows 0..160, cols 32..192
    c = crops[7]
    assert (c[5:155, 37:187] == (255, 0, 0)).all()  # RGB order kept
    assert (c[165:, :] == 50).all() and (c[:, :27] == 50).all() and (c[:, 197:] == 50).all()


def test_face_crops_pad_outside_and_smooth_a_jump():
    frame = np.full((200, 200, 3), 50, dtype=np.uint8)
    boxes = np.tile([0.0, 0.0, 40.0, 40.0], (9, 1))  # corner face: the crop reaches outside the frame
    crops = face_crops([frame] * 9, boxes)
    # half-size 20: x -8..48, y 0..56 (56 px -> 224: x 4): 8 columns of padding become 32
    assert (crops[4, :, :30] == 110).all() and (crops[4, :, 34:] == 50).all()
    frames = [np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)] * 15
    boxes = np.tile([60.0, 60.0, 140.0, 140.0], (15, 1))
    jumped = boxes.copy()
    jumped[7] += 50  # one bad detection: the 13-frame median filter ignores it
    np.testing.assert_array_equal(face_crops(frames, jumped), face_crops(frames, boxes))
    with pytest.raises(UserError, match="frames for"):
        face_crops(frames[:10], boxes)
