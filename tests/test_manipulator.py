"""Expression manipulator: shapes, losses, overlap-add, editing, training (NED and SCMCL), resume, DDP."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import run_module

from common.checkpoint import load_checkpoint
from common.errors import ConfigError
from common.formats import Clip
from facemodel import face_model_for
from facemodel.lips import follow_speech, gaps_of
from facemodel.symmetry import mirror_map, symmetric_edit
from manipulator.edit import Editor
from manipulator.editing import (
    clip_style,
    edit_expr,
    gaussian_weights,
    geometric_median,
    keep_speech,
    label_style,
    overlap_add,
    parse_timeline,
    timeline_styles,
)
from manipulator.losses import correlation_loss, mouth_loss, paired_loss, pearson
from manipulator.metric.models import AffineScale
from manipulator.models import SIZES, build_manipulator


@pytest.mark.parametrize("size", ["ned", "tiny"])
def test_network_shapes(size):
    nets = build_manipulator(51, 7, size)
    s = SIZES[size]
    x, y = torch.randn(3, 10, 51), torch.tensor([0, 4, 6])
    style = nets["mapping"](torch.randn(3, s.latent_dim), y)
    assert style.shape == (3, s.style_dim)
    assert nets["generator"](x, style).shape == (3, 10, 51)
    assert nets["style"](x).shape == (3, s.style_dim)
    assert nets["discriminator"](x, y).shape == (3,)
    # the mapping network has one head per emotion: different labels give different styles
    z = torch.randn(1, s.latent_dim).expand(2, -1)
    two = nets["mapping"](z, torch.tensor([1, 2]))
    assert not torch.allclose(two[0], two[1])


def test_losses_on_constructed_inputs():
    x = torch.randn(4, 10, 51)
    assert mouth_loss(x, x.clone()).item() == pytest.approx(0.0, abs=1e-5)
    assert mouth_loss(x, -x).item() == pytest.approx(2.0, abs=1e-5)
    assert pearson(x[:, :, 0], 3 * x[:, :, 0] + 1).min().item() == pytest.approx(1.0, abs=1e-5)
    target = torch.randn(4, 10, 51)
    weight, valid = torch.tensor([1.0, 0.5, 0.0, 1.0]), torch.tensor([1.0, 1.0, 0.0, 1.0])
    assert paired_loss(target, target.clone(), weight, valid).item() == pytest.approx(0.0, abs=1e-5)
    # cos = -1 everywhere: (1 + 0.5 + 1) * 2 over the 3 valid targets
    assert paired_loss(-target, target, weight, valid).item() == pytest.approx(5.0 / 3, abs=1e-5)
    assert paired_loss(target, target + 1, weight, valid, "l1").item() == pytest.approx(2.5 / 3, abs=1e-6)
    f = torch.nn.Flatten()
    phi = AffineScale()
    fake, src = torch.randn(4, 10, 3), torch.randn(4, 10, 3)
    d_v = (f(fake[:, -5:]) - f(src[:, -5:])).norm(dim=-1)
    assert correlation_loss(f, phi, fake, src, d_v, torch.ones(4), 5).item() == pytest.approx(0.0, abs=1e-5)
    assert correlation_loss(f, phi, fake, src, d_v + 1, torch.ones(4), 5).item() == pytest.approx(1.0, abs=1e-5)


def test_overlap_add_covers_every_frame_with_normalised_weights():
    w = gaussian_weights(10)
    np.testing.assert_allclose(w, w[::-1])  # centred on 4.5
    sigma = 0.3 * (4.5 - 1) + 0.8  # OpenCV's default sigma for 10 taps
    assert w.sum() == pytest.approx(1.0) and w[4] / w[0] == pytest.approx(np.exp((4.5**2 - 0.5**2) / (2 * sigma**2)))
    n = 23
    starts = np.arange(n - 10 + 1)
    ones = np.ones((len(starts), 10, 2))
    out, total = overlap_add(ones, starts, n)
    np.testing.assert_allclose(out, 1.0)  # weights sum to 1 on every frame, the first and last included
    assert len(total) == n and total[0] == pytest.approx(w[0]) and total[-1] == pytest.approx(w[-1])
    np.testing.assert_allclose(total[9 : n - 9], 1.0)  # frames every window position covers: the whole kernel
    ramp = np.stack([np.arange(s, s + 10)[:, None].repeat(2, 1) for s in starts]).astype(float)
    np.testing.assert_allclose(overlap_add(ramp, starts, n)[0][:, 0], np.arange(n))  # consistent windows: exact


def test_long_clips_are_edited_in_window_batches(monkeypatch):
    """The networks see the windows of a long clip in batches (bounded memory); the edit is the same."""
    from manipulator import editing

    torch.manual_seed(0)
    nets = build_manipulator(6, 3, "tiny")
    for net in nets.values():
        net.eval()
    expr = np.random.default_rng(0).normal(size=(60, 6)).astype(np.float32)
    style = np.random.default_rng(1).normal(size=SIZES["tiny"].style_dim).astype(np.float32)
    whole = editing.edit_expr(nets["generator"], expr, 10, style), editing.clip_style(nets["style"], expr, 10)
    calls = []
    monkeypatch.setattr(editing, "WINDOW_BATCH", 7)  # 51 windows -> 8 calls
    real = nets["generator"].forward
    monkeypatch.setattr(nets["generator"], "forward", lambda *a: calls.append(len(a[0])) or real(*a))
    blocked = editing.edit_expr(nets["generator"], expr, 10, style), editing.clip_style(nets["style"], expr, 10)
    assert calls == [7] * 7 + [2]
    np.testing.assert_allclose(blocked[0], whole[0], atol=1e-5)
    np.testing.assert_allclose(blocked[1], whole[1], atol=1e-5)


def test_keep_speech_scales_the_source_opening_and_keeps_closed_mouths_closed():
    rng = np.random.default_rng(0)
    t = np.arange(100)
    opening = np.clip(np.sin(t / 3.0), 0, None) * 0.1  # speech: closed half the time
    source = np.column_stack([opening, rng.normal(size=(100, 4))]).astype(np.float32)
    edited = source + 0.5  # an emotion that moves every channel, the opening by a steady +0.5
    edited[:, 0] = 1.3 * opening + 0.03  # ... here: articulated wider and parted when closed
    out, scale = keep_speech(source, edited)
    np.testing.assert_array_equal(out[:, 1:], edited[:, 1:])  # the other channels untouched
    assert 1.3 < scale <= 1.5  # least squares through zero: the steady part counts in (then clipped at 1.5)
    np.testing.assert_allclose(out[:, 0], scale * opening, rtol=1e-6)
    assert (out[opening == 0, 0] == 0).all()  # closed stays closed
    # the scale is clipped; a mouth that never moves keeps its (zero) opening
    assert keep_speech(source, source * [10.0, 1, 1, 1, 1])[1] == 1.5
    assert keep_speech(source, source * [0.5, 1, 1, 1, 1])[1] == 1.0  # never narrower than spoken
    still = source.copy()
    still[:, 0] = 0
    assert keep_speech(still, edited) == (pytest.approx(np.column_stack([still[:, :1], edited[:, 1:]])), 1.0)


class _BiasedGenerator(torch.nn.Module):
    """G(x, s) = x + bias(x) + s @ A: a generator whose output carries a bias of its input (how it misreads faces
    tracked unlike its training faces) besides the style's effect."""

    def __init__(self, dim: int, style_dim: int):
        super().__init__()
        self.a = torch.linspace(-1, 1, style_dim * dim).reshape(style_dim, dim)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return x + torch.tanh(3 * x) ** 2 + 0.4 + (s @ self.a)[:, None]


class _Mapping(torch.nn.Module):
    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(y, 3).float() * 2.0


class _Style(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(x), 3)


def test_an_edit_is_the_change_from_the_start_style_on_the_source_itself():
    """Editor.edit's contract (EDIT_FROM): from `neutral` the edit is source + G(x, target) - G(x, neutral), which
    cancels whatever G adds regardless of the style; `none` is G's output itself; intensity 0 from neutral is the
    source; a timeline starts from the same style."""
    from manipulator.expr_norm import Normaliser

    dim, seq = 4, 5
    nets = {"generator": _BiasedGenerator(dim, 3), "style": _Style(), "mapping": _Mapping()}
    norm = Normaliser(np.full(dim, 0.1, np.float32), np.array([1.0, 2.0, 0.5, 1.0], np.float32))
    editor = Editor(nets, norm, ["neutral", "happy", "sad"], seq, 2, data_dir=None)
    expr = np.random.default_rng(0).normal(size=(20, dim)).astype(np.float32)
    happy = editor.target_style("happy")
    effect = (happy - editor.target_style("neutral")) @ nets["generator"].a.numpy() * norm.std  # in raw units
    np.testing.assert_allclose(editor.edit(expr, happy), expr + effect, atol=1e-5)  # the bias cancels
    np.testing.assert_allclose(editor.edit(expr, happy, 0.5), expr + 0.5 * effect, atol=1e-5)
    np.testing.assert_allclose(editor.edit(expr, happy, 0.0), expr, atol=1e-6)
    raw = editor.edit(expr, happy, edit_from="none")  # NED's edit: the biased output itself
    x = norm.forward(expr)
    a = nets["generator"].a.numpy()
    np.testing.assert_allclose(raw, norm.inverse(x + np.tanh(3 * x) ** 2 + 0.4 + happy @ a), atol=1e-4)
    assert np.abs(raw - expr - effect).max() > 0.3
    np.testing.assert_allclose(editor.edit_timeline(expr, 25.0, "0:happy"), expr + effect, atol=1e-5)
    np.testing.assert_allclose(editor.edit_timeline(expr, 25.0, "0:neutral"), expr, atol=1e-6)
    np.testing.assert_allclose(
        editor.edit_timeline(expr, 25.0, "0:happy", intensity=0.5), expr + 0.5 * effect, atol=1e-5
    )
    with pytest.raises(ConfigError, match="edit_from"):
        editor.edit(expr, happy, edit_from="sad")
    # the start really used: the source's own style for a reference, a neutral target, or no neutral label
    assert editor.start_for("neutral", "happy") == "neutral"
    assert editor.start_for("neutral", reference=True) == editor.start_for("neutral", "neutral") == "source"
    assert editor.start_for("none", reference=True) == "none"
    no_neutral = Editor(nets, norm, ["happy", "sad"], seq, 2, data_dir=None)
    assert no_neutral.start_for("neutral", "happy") == "source"
    own = no_neutral.start_style(norm.forward(expr), "neutral")  # the clip's own style (here: the style net's 0)
    np.testing.assert_array_equal(own, np.zeros(3, np.float32))


def test_geometric_median_and_timeline():
    pts = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [100.0, 100.0]])
    med = geometric_median(pts)
    assert np.linalg.norm(med) < 1.0  # robust to the outlier, unlike the mean
    tl = parse_timeline("2.5:happy,0:neutral", ["neutral", "happy"])
    assert tl == [(0.0, "neutral"), (2.5, "happy")]
    styles = timeline_styles(np.array([0.0, 2.5, 5.0]), [(0.0, np.zeros(2)), (2.5, np.ones(2))])
    np.testing.assert_allclose(styles[:, 0], [0.0, 0.5, 1.0], atol=1e-6)
    from common.errors import UserError

    with pytest.raises(UserError, match="start at time 0"):
        parse_timeline("1:happy", ["happy"])
    with pytest.raises(UserError, match="not one of"):
        parse_timeline("0:bored", ["happy"])


def train_tiny(python_exe, env, data, runs, config, *extra, check=True):
    return run_module(
        python_exe,
        env,
        "manipulator.train",
        "--config",
        f"configs/manipulator/{config}.yaml",
        "--config",
        "configs/manipulator/tiny.yaml",
        f"data_dir={data}",
        f"engine.runs_root={runs}",
        "val_splits=[test]",
        *extra,
        check=check,
    )


@pytest.fixture(scope="module")
def manipulator_runs(metric_runs, processed_tiny, python_exe, python_env):
    train_tiny(python_exe, python_env, processed_tiny, metric_runs, "ned_baseline")
    joint = metric_runs / "metric/joint"
    full = [f"scmcl.metric_run={joint}", "scmcl.lambda_corr=1"]  # the default leaves corr off
    # the correlation term needs a diagnosed metric; the tiny one (40 steps) fails its diagnosis
    proc = run_module(
        python_exe,
        python_env,
        "manipulator.metric.diagnose",
        joint,
        f"data_dir={processed_tiny}",
        "pairs=100",
        "per_group=16",
    )
    diagnosis = json.loads((joint / "diagnosis.json").read_text())
    assert "checks (retrieved pairs, overall)" in proc.stdout and not diagnosis["passed"]
    refused = train_tiny(
        python_exe, python_env, processed_tiny, metric_runs, "scmcl", *full, "engine.name=refused", check=False
    )
    assert refused.returncode == 2 and "fails its diagnosis" in refused.stderr
    assert f"python -m manipulator.metric.diagnose {joint}" in refused.stderr and "Traceback" not in refused.stderr
    train_tiny(python_exe, python_env, processed_tiny, metric_runs, "scmcl", *full, "scmcl.allow_failing_metric=true")
    return metric_runs / "manipulator"


def test_scmcl_run_uses_retrieved_pairs(manipulator_runs):
    records = [json.loads(x) for x in (manipulator_runs / "scmcl/metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if "val/expr_err" not in r][-1]  # the losses (validation has records of its own)
    assert "g/paired_latent" in last and "g/corr_ref" in last
    baseline = [json.loads(x) for x in (manipulator_runs / "ned_baseline/metrics.jsonl").read_text().splitlines()]
    assert not any("g/paired_latent" in r for r in baseline)
    assert list((manipulator_runs / "scmcl/tb").iterdir())  # TensorBoard events incl. the edit plots
    record = load_checkpoint(sorted((manipulator_runs / "scmcl/checkpoints").glob("*.pt"))[-1])["extra"]
    assert record["metric_diagnosis"]["overridden"] is True and record["metric_diagnosis"]["passed"] is False


def test_resume_is_exact(manipulator_runs, metric_runs, processed_tiny, python_exe, python_env):
    train_tiny(
        python_exe,
        python_env,
        processed_tiny,
        metric_runs,
        "ned_baseline",
        "engine.name=halves",
        "engine.session_steps=10",
    )
    train_tiny(python_exe, python_env, processed_tiny, metric_runs, "ned_baseline", "engine.name=halves")
    a = load_checkpoint(manipulator_runs / "ned_baseline/checkpoints/step_000000020.pt")["nets"]
    b = load_checkpoint(manipulator_runs / "halves/checkpoints/step_000000020.pt")["nets"]
    for net in a:
        for key in a[net]:
            assert torch.equal(a[net][key], b[net][key]), (net, key)
    # the finished run started again measures nothing and keeps the final scores it recorded
    recorded = json.loads((manipulator_runs / "halves/hparams.json").read_text())["metrics"]
    assert "val/expr_err" in recorded
    train_tiny(python_exe, python_env, processed_tiny, metric_runs, "ned_baseline", "engine.name=halves")
    assert json.loads((manipulator_runs / "halves/hparams.json").read_text())["metrics"] == recorded


@pytest.mark.slow
def test_ddp_smoke(metric_runs, processed_tiny, python_exe, python_env):
    cmd = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "manipulator.train"]
    import subprocess

    args = [
        "--config",
        "configs/manipulator/ned_baseline.yaml",
        "--config",
        "configs/manipulator/tiny.yaml",
        f"data_dir={processed_tiny}",
        f"engine.runs_root={metric_runs}",
        "engine.name=ddp",
        "engine.max_steps=4",
        "val_splits=[]",
    ]
    proc = subprocess.run([python_exe, *cmd, *args], capture_output=True, text=True, env=python_env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ckpt = load_checkpoint(metric_runs / "manipulator/ddp/checkpoints/step_000000004.pt")
    assert len(ckpt["rng"]) == 2


def test_edit_cli_label_reference_intensity_timeline(
    manipulator_runs, processed_tiny, tmp_path, python_exe, python_env
):
    import shutil

    clip = tmp_path / "003"  # a copy: the shared processed fixture must stay as preprocessing wrote it
    shutil.copytree(processed_tiny / "W001/neutral/level_1/003", clip)
    run = manipulator_runs / "scmcl"
    raw = ["--symmetric", "false", "--speech", "false"]
    common = [clip, "--run", run, *raw, "--edit-from", "none"]  # the manipulator's own output (NED's edit)
    run_module(python_exe, python_env, "manipulator.edit", *common, "--emotion", "happy")
    # by default an edit is the source plus the generator's change from the neutral style to the target's
    for extra in (["--name", "delta"], ["--intensity", "0", "--name", "delta_x0"]):
        run_module(python_exe, python_env, "manipulator.edit", clip, "--run", run, *raw, "--emotion", "happy", *extra)
    # by default the edit's change is made left-right symmetric (the raw edit's symmetric part) and the mouth
    # opens as in the source, scaled
    run_module(python_exe, python_env, "manipulator.edit", clip, "--run", run, "--emotion", "happy", "--name", "sym")
    run_module(
        python_exe, python_env, "manipulator.edit", *common, "--reference", processed_tiny / "W001/happy/level_3/001"
    )
    run_module(python_exe, python_env, "manipulator.edit", *common, "--emotion", "happy", "--intensity", "0")
    run_module(python_exe, python_env, "manipulator.edit", *common, "--timeline", "0:neutral,1.0:happy")
    edits = {d.name: d for d in (clip / "edits").iterdir()}
    symmetric = Clip(edits.pop("sym")).face()["expr"]
    delta, delta_x0 = (Clip(edits.pop(name)).face()["expr"] for name in ("delta", "delta_x0"))
    assert json.loads((clip / "edits/delta/edit.json").read_text())["edit_from"] == "neutral"
    assert set(edits) == {"happy", "ref_001", "happy_x0", "timeline"}
    source = Clip(clip)
    exprs = {}
    for name, d in edits.items():
        edited = Clip(d)
        face = edited.face()
        assert face["expr"].shape == source.face()["expr"].shape
        np.testing.assert_array_equal(face["pose"], source.face()["pose"])
        exprs[name] = face["expr"]
    assert not np.allclose(exprs["happy"], exprs["ref_001"])  # label and reference editing differ
    model = face_model_for(processed_tiny)
    mirror, residual = mirror_map(model, source.face())
    assert json.loads((clip / "edits/sym/edit.json").read_text())["symmetric"]["eyes_capped"] == 0  # so: no open_eyes
    sym = symmetric_edit(source.face()["expr"], delta, mirror)
    expected, scale = keep_speech(source.face()["expr"], sym)
    expected = follow_speech(model, source.face(), expected, scale)[0]  # every inner-lip pair, not only the middle
    np.testing.assert_allclose(symmetric, expected, atol=1e-5)
    np.testing.assert_allclose(
        gaps_of(model, source.face(), symmetric),
        scale * gaps_of(model, source.face(), source.face()["expr"]),
        atol=2e-4,
    )
    # the basis holds its directions' mirrors up to the probe's pose (tiny set 0.04-0.054, real faces 0.07-0.09)
    assert residual < 0.1 and not np.allclose(symmetric, delta)
    np.testing.assert_allclose(symmetric[:, 0], scale * source.face()["expr"][:, 0], rtol=1e-5, atol=1e-7)
    assert json.loads((clip / "edits/sym/edit.json").read_text())["speech"]["opening_scale"] == round(scale, 4)
    # known answers from the contract: every window edited with one style, overlap-added; the style at intensity
    # k is own + k (target - own), own = the source's style (its windows' geometric median)
    editor = Editor.load(run)
    x, seq = editor.norm.forward(source.face()["expr"]), editor.seq_len

    def edited_with(style: np.ndarray) -> np.ndarray:
        return editor.norm.inverse(edit_expr(editor.nets["generator"], x, seq, style))

    def label(emotion: str) -> np.ndarray:
        return label_style(editor.nets["mapping"], editor.emotions.index(emotion), editor.latent_dim)

    close = {"rtol": 1e-4, "atol": 1e-5}  # the CLI ran in another process (thread count)
    np.testing.assert_allclose(exprs["happy"], edited_with(label("happy")), **close)
    np.testing.assert_allclose(exprs["happy_x0"], edited_with(clip_style(editor.nets["style"], x, seq)), **close)
    ref = editor.norm.forward(Clip(processed_tiny / "W001/happy/level_3/001").face()["expr"])
    np.testing.assert_allclose(exprs["ref_001"], edited_with(clip_style(editor.nets["style"], ref, seq)), **close)
    # the default edit: source + G(source, happy) - G(source, neutral); at intensity 0 the source itself
    expr = source.face()["expr"]
    np.testing.assert_allclose(delta, expr + edited_with(label("happy")) - edited_with(label("neutral")), **close)
    np.testing.assert_allclose(delta_x0, expr, atol=1e-6)
    # timeline 0:neutral, 1.0:happy: the style switches along a logistic ramp of 0.3 s (scale 0.05 s) at the
    # window centres; frames whose windows all centre 0.5 s or more before 1.0 s (alpha < 5e-5) are the plain
    # neutral edit, those whose windows all centre 0.5 s or more after it the plain happy edit
    fps, half = source.meta.fps, (seq - 1) / 2
    early = slice(0, int(np.floor(0.5 * fps - half)) + 1)
    late = slice(int(np.ceil(1.5 * fps + half)), None)
    neutral, happy, timeline = edited_with(label("neutral")), exprs["happy"], exprs["timeline"]
    assert early.stop > 0 and late.start < source.n_frames
    for part, near, far in ((early, neutral, happy), (late, happy, neutral)):
        assert np.abs(timeline[part] - near[part]).max() < 0.01 * np.abs(far[part] - near[part]).max(), part
    proc = run_module(python_exe, python_env, "manipulator.edit", *common, "--emotion", "bored", check=False)
    assert proc.returncode == 2 and "not one of" in proc.stderr


def test_evaluate_reports_every_emotion(manipulator_runs, processed_tiny, python_exe, python_env, tmp_path):
    out = tmp_path / "eval.json"
    run_module(
        python_exe,
        python_env,
        "manipulator.evaluate",
        "--runs",
        manipulator_runs / "ned_baseline",
        manipulator_runs / "scmcl",
        "--out",
        out,
    )
    report = json.loads(out.read_text())
    source = Clip(processed_tiny / "W001/neutral/level_1/003").face()["expr"]  # the test split's neutral clip
    for run, summary in report.items():
        happy = summary["happy"]
        assert set(summary) == {"happy", "average"} and happy["n"] == 1
        assert len(happy["sweep"]) == 5 and happy["sweep"][-1] == pytest.approx(happy["err_edit"], abs=6e-5)
        assert summary["average"]["mouth"] == happy["mouth"]  # one emotion: the average is its value
        editor = Editor.load(run)  # mouth: Pearson r of channel 0, source vs the intensity-1 label edit
        edited = editor.edit(source, editor.target_style("happy"), edit_from="none")  # the network's own output
        assert happy["mouth"] == pytest.approx(np.corrcoef(source[:, 0], edited[:, 0])[0, 1], abs=1e-4)
    # the unedited source's distance to the target does not depend on the run (both normalise with one dataset)
    assert len({s["happy"]["err_source"] for s in report.values()}) == 1


def test_the_correlation_term_reads_the_same_numbers_in_either_unit(metric_runs, processed_tiny):
    """A manipulator on raw coefficients (expr_norm=none, NED's) and one on dataset-normalised coefficients get
    the same correlation term for the same windows: the metric's encoder always reads its own units (the
    normaliser its checkpoint records)."""
    import logging

    from manipulator.data import WindowBank
    from manipulator.expr_norm import Normaliser
    from manipulator.train import ScmclConfig, _ScmclTerms

    cfg = ScmclConfig(enabled=True, metric_run=str(metric_runs / "metric/joint"), allow_failing_metric=True)
    values = []
    for mode in ("none", "dataset"):
        norm = Normaliser.from_index(processed_tiny, mode)
        bank = WindowBank(processed_tiny, ("train",), ["neutral", "happy"], 10, 1, norm)
        terms = _ScmclTerms(cfg, bank, torch.device("cpu"), logging.getLogger("test"))
        rng = np.random.default_rng(0)
        src = bank.sample_sources(rng, 32)
        batch = terms.batch(src, 1 - bank.win_label[src], rng)
        raw = norm.inverse(bank.windows(src).numpy())
        fake_raw = raw + 0.05 * np.sin(np.arange(raw.shape[-1]))  # an edit, in coefficients
        fake = torch.from_numpy(norm.forward(fake_raw))
        args = (batch.correlation_other, batch.d_audio, batch.corr_valid, batch.window)
        values.append(correlation_loss(batch.f_expr, batch.phi, fake, *args).item())
        assert batch.corr_valid.sum() > 0
    assert values[0] == pytest.approx(values[1], rel=1e-4) and values[0] > 0


def test_exported_model_edits_as_its_run_and_checks_its_recipe(
    manipulator_runs, processed_tiny, tmp_path, python_exe, python_env
):
    """A bundled model folder (manipulator.export) holds what editing needs: the same edit as its run, with no
    training set beside it; --check compares the recipe (config, training-set digest) and the files."""
    run, model = manipulator_runs / "scmcl", tmp_path / "models/m"
    proc = run_module(python_exe, python_env, "manipulator.export", run, "--out", model)
    assert "model written to" in proc.stdout
    assert {p.name for p in model.iterdir()} == {"manipulator.pt", "model.json", "face_model_mesh.npz"}
    info = json.loads((model / "model.json").read_text())
    assert info["recipe"]["identities"] == ["W001"] and info["recipe"]["clips"] > 0
    assert "data_dir" not in info["recipe"]["config"] and "runs_root" not in info["recipe"]["config"]["engine"]
    nets = load_checkpoint(model / "manipulator.pt")["nets"]
    assert set(nets) == {"generator", "style", "mapping"}  # no discriminator, optimiser or RNG state
    assert (model / "manipulator.pt").stat().st_size < 0.6 * next((run / "checkpoints").iterdir()).stat().st_size

    clip = Clip(processed_tiny / "W001/neutral/level_1/003")
    from_run, from_folder = Editor.load(run), Editor.load(model)
    assert from_folder.basis_file == str(model / "face_model_mesh.npz") and from_folder.basis_hash
    assert from_folder.basis_hash == from_run.basis_hash
    expr = clip.face()["expr"]
    np.testing.assert_array_equal(
        from_folder.edit(expr, from_folder.target_style("happy")), from_run.edit(expr, from_run.target_style("happy"))
    )
    np.testing.assert_array_equal(from_folder.face_model().b.basis, from_run.face_model().b.basis)

    ok = run_module(python_exe, python_env, "manipulator.export", run, "--out", model, "--check")
    assert "reproduces the recipe" in ok.stdout
    other = run_module(
        python_exe,
        python_env,
        "manipulator.export",
        manipulator_runs / "ned_baseline",
        "--out",
        model,
        "--check",
        check=False,
    )
    assert other.returncode == 1 and "scmcl.enabled: True -> False" in other.stdout
    with open(model / "face_model_mesh.npz", "ab") as f:
        f.write(b"x")
    tampered = run_module(python_exe, python_env, "manipulator.export", run, "--out", model, "--check", check=False)
    assert tampered.returncode == 1 and "face_model_mesh.npz: changed since export" in tampered.stdout
    missing = run_module(python_exe, python_env, "manipulator.export", tmp_path / "nothing", check=False)
    assert missing.returncode == 2 and "no manipulator checkpoint" in missing.stderr


def test_training_shows_validation_scores_sample_videos_and_hparams(manipulator_runs, processed_tiny, tmp_path):
    """What a run shows while it trains: the paired scores on held-out clips (manipulator.train.validate reads
    manipulator.evaluate.paired_scores), a sample video with the clip's audio, and the run's hparams."""
    from common.video import probe_video, read_audio
    from manipulator.evaluate import paired_scores
    from manipulator.plots import SAMPLE_EMOTIONS, sample_video

    run = manipulator_runs / "scmcl"
    editor = Editor.load(run)
    scores = paired_scores(editor, processed_tiny, "test", intensities=(1.0,))
    average = scores["average"]
    assert set(average) >= {"err_edit", "err_source", "mouth"} and np.isnan(average["zero_dev"])
    assert average["err_edit"] > 0 and -1 <= average["mouth"] <= 1 and len(average["sweep"]) == 1
    clip = Clip(processed_tiny / "W001/neutral/level_1/003")
    video = sample_video(editor, face_model_for(processed_tiny), clip, tmp_path / "samples/step_1.mp4", tile=96)
    info = probe_video(video)
    columns = 1 + len([e for e in SAMPLE_EMOTIONS if e in editor.emotions])
    assert info.n_frames == clip.n_frames and (info.width, info.height) == (96 * columns, 96)
    assert len(read_audio(video)) == len(clip.audio())
    hparams = json.loads((run / "hparams.json").read_text())
    assert hparams["hparams"]["engine.seed"] == 0 and hparams["hparams"]["scmcl.enabled"] is True
    # and the run itself showed them: validation records, its final scores with its hparams, its sample videos
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    shown = [r for r in records if "val/expr_err" in r]
    assert shown and {"val/expr_err_source", "val/mouth_r"} <= set(shown[-1])
    assert {"val/expr_err", "val/expr_err_source", "val/mouth_r"} <= set(hparams["metrics"])
    samples = sorted((run / "samples").glob("step_*.mp4"))
    assert samples and probe_video(samples[-1]).width == probe_video(samples[-1]).height * columns
