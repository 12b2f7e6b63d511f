"""The metric diagnosis (manipulator.metric.diagnose): each check on constructed encoders and pairs with known
answers, the verdicts, and the SCMCL manipulator's refusal of a metric that fails it."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from common.checkpoint import save_checkpoint
from common.errors import UserError
from manipulator.metric.diagnose import (
    DIAGNOSIS_FILE,
    TARGETS,
    PairSet,
    judge,
    judge_images,
    path_terms,
    require_passing,
    s1_target_vs_source,
    s2_path,
    s3_calibration,
    s4_ratio,
    s5_ratios,
    s5_summary,
    summarise,
    summarise_images,
)
from manipulator.metric.index import metric_identity
from manipulator.metric.models import AffineScale
from manipulator.windows import is_silent

W, D = 3, 4  # encoder window, coefficients


class Linear(torch.nn.Module):
    """f(x) = A · flatten(x): a known Jacobian A everywhere."""

    def __init__(self, a: torch.Tensor):
        super().__init__()
        self.a = a

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(len(x), -1) @ self.a.T


def phi(weight: float = 1.0, bias: float = 0.0) -> AffineScale:
    p = AffineScale()
    with torch.no_grad():
        p.weight.fill_(weight)
        p.bias.fill_(bias)
    return p.requires_grad_(False)


def pairs_with_edit(d_audio: np.ndarray, edit_scale: float, seed: int = 0) -> PairSet:
    """Sources at random, targets at source + e with ||e|| = edit_scale · d_a (under the identity encoder)."""
    rng = np.random.default_rng(seed)
    n = len(d_audio)
    source = torch.from_numpy(rng.normal(size=(n, W, D)).astype(np.float32))
    e = rng.normal(size=(n, W * D))
    e *= (edit_scale * d_audio / np.linalg.norm(e, axis=1))[:, None]
    target = source + torch.from_numpy(e.reshape(n, W, D).astype(np.float32))
    return PairSet(
        source, target, source, torch.from_numpy(d_audio.astype(np.float32)), np.array(["happy"] * n), np.zeros(n, bool)
    )


IDENTITY = Linear(torch.eye(W * D))


def test_a_calibrated_encoder_has_its_minimum_at_the_target():
    d_a = np.linspace(0.5, 2.0, 20)
    pairs = pairs_with_edit(d_a, 1.0)  # φ(d_v(source, target)) = d_a exactly
    terms = path_terms(IDENTITY, phi(), pairs)
    np.testing.assert_allclose(terms[0], d_a, rtol=1e-5)  # at the source d_v = 0: |0 - d_a|
    np.testing.assert_allclose(terms[-1], 0.0, atol=1e-5)
    np.testing.assert_allclose(terms.mean(1), (1 - np.linspace(0, 1, 11)) * d_a.mean(), rtol=1e-4, atol=1e-5)
    s1 = s1_target_vs_source(terms[0], terms[-1])
    assert s1["margin"] == pytest.approx(d_a.mean(), rel=1e-5) and s1["share_target_lower"] == 1.0
    assert s2_path(terms)["max_rise"] == pytest.approx(-d_a.mean() / 10, rel=1e-3)


def test_an_overshooting_encoder_has_its_minimum_half_way():
    d_a = np.linspace(0.5, 2.0, 20)
    terms = path_terms(IDENTITY, phi(), pairs_with_edit(d_a, 2.0))  # φ(d_v) = 2 d_a at the target
    np.testing.assert_allclose(terms[-1], d_a, rtol=1e-5)  # as high as at the source
    assert terms.mean(1).argmin() == 5  # α = 0.5
    s1 = s1_target_vs_source(terms[0], terms[-1])
    assert s1["margin"] == pytest.approx(0.0, abs=1e-5)
    assert s2_path(terms)["max_rise"] == pytest.approx(2 * d_a.mean() / 10, rel=1e-3)


def test_calibration_offset_and_rank_correlation():
    d_a = np.array([0.2, 0.5, 0.9, 1.4, 2.0])
    out = s3_calibration(d_a + 0.1, d_a * 3.0, d_a)
    assert out["median_offset"] == pytest.approx(0.1) and out["spearman"] == pytest.approx(1.0)
    assert s3_calibration(d_a, d_a[::-1].copy(), d_a)["spearman"] == pytest.approx(-1.0)
    assert np.isnan(s3_calibration(d_a, np.ones(5), d_a)["spearman"])  # no order: fails ρ >= 0.5


def test_invariance_ratio():
    assert s4_ratio(np.array([1.0, 3.0]), np.array([4.0, 4.0, 8.0])) == {
        "same_sentence": 2.0,
        "different_sentence": pytest.approx(16 / 3),
        "ratio": pytest.approx(0.375),
    }


def test_sensitivity_ratio_of_a_known_jacobian():
    a = torch.eye(W * D)
    a[0, 0] = 10.0  # steepest direction: the first input, 10x
    f = Linear(a)
    source = torch.zeros(5, W, D)
    along_flat = torch.zeros(5, W, D)
    along_flat[:, 1, 2] = 0.7  # an edit the encoder sees with gain 1
    assert s5_summary(s5_ratios(f, source, along_flat))["ratio"] == pytest.approx(10.0, rel=1e-5)
    steep = torch.zeros(5, W, D)
    steep[:, 0, 0] = 0.3  # along the steepest direction
    assert s5_summary(s5_ratios(f, source, steep))["ratio"] == pytest.approx(1.0, rel=1e-5)
    assert s5_summary(s5_ratios(f, source, source))["pairs"] == 0  # no edit: left out


def test_silence_rule():
    t = np.arange(800) / 16000
    assert is_silent(np.zeros(800)) and not is_silent(0.1 * np.sin(2 * np.pi * 220 * t))
    quiet = 10 ** (-50 / 20) * np.sqrt(2) * np.sin(2 * np.pi * 220 * t)  # -50 dBFS RMS
    assert is_silent(quiet) and not is_silent(quiet * 10 ** (20 / 20))  # -30 dBFS: speech level
    np.testing.assert_array_equal(is_silent(np.stack([np.zeros(800), 0.1 * np.ones(800)])), [True, False])


def test_summary_and_verdicts():
    d_a = np.linspace(0.5, 2.0, 30)
    good = summarise(IDENTITY, phi(), pairs_with_edit(d_a, 1.0))
    s4 = {"W001/happy": s4_ratio(np.ones(3), np.full(3, 4.0))}
    checks = judge(good, s4)
    assert checks["S1"]["pass"] and checks["S2"]["pass"] and checks["S4"]["pass"] and checks["S6"]["pass"]
    assert good["S3"]["median_offset"] == pytest.approx(0.0, abs=1e-5) and good["S3"]["spearman"] > 0.99
    assert checks["S3"]["pass"] and checks["S5"]["pass"]
    assert good["S5"]["ratio"] == pytest.approx(1.0, rel=1e-5)  # the identity: equally sensitive every way
    bad = summarise(IDENTITY, phi(), pairs_with_edit(d_a, 2.0))
    silent = pairs_with_edit(d_a, 1.0)
    silent.silent[:2] = True
    checks = judge(bad, {"W001/happy": s4_ratio(np.full(3, 3.0), np.full(3, 4.0))})
    assert not any(checks[k]["pass"] for k in ("S1", "S2", "S4"))
    assert not judge(summarise(IDENTITY, phi(), silent), s4)["S6"]["pass"]
    assert TARGETS.s1_margin == 0.3 and TARGETS.s5_ratio == 3.0  # the pass targets


PUBLISHED = {"dist_thresh": 2.0, "pivot_distance": "source_hop"}


def test_image_level_checks_on_known_distances():
    d_a = np.array([0.3, 0.8, 1.2, 1.9])
    pairs = {"d_img": d_a.astype(np.float32), "d_a": d_a, "emotion": np.array(["happy", "sad"] * 2)}
    got = summarise_images(phi(), pairs)  # φ(d_img) = d_a at the real target frame
    assert (
        got["overall"]["S1"]["margin"] == pytest.approx(d_a.mean()) and got["overall"]["S1"]["share_target_lower"] == 1
    )
    assert got["overall"]["S3"] == {"median_offset": pytest.approx(0.0, abs=1e-6), "spearman": pytest.approx(1.0)}
    assert got["happy"]["pairs"] == 2 and judge_images(got)["image S1"]["pass"]
    flat = summarise_images(phi(0.0, 1.0), pairs)  # a flat φ: the same term at the source and the target
    assert flat["overall"]["S1"]["margin"] == 0.0 and not judge_images(flat)["image S1"]["pass"]


def _metric_run(tmp_path):
    run = tmp_path / "metric"
    save_checkpoint(run / "checkpoints", 10, {"step": 10, "nets": {}, "config": {}, "extra": {}}, keep_last=2)
    return run


def _write_diagnosis(run, passed: bool, digest: str | None = None):
    checks = {k: {"value": "v", "target": "t", "pass": True} for k in ("S1", "S2", "S3", "S4", "S5", "S6")}
    if not passed:
        checks["S1"] = {"value": "margin -0.27, target lower in 48%", "target": "t", "pass": False}
    result = {**metric_identity(run), "checks": checks, "passed": passed, "retrieval": PUBLISHED}
    if digest:
        result["metric_digest"] = digest
    (run / DIAGNOSIS_FILE).write_text(json.dumps(result))


def test_the_correlation_term_refuses_a_metric_that_fails_its_diagnosis(tmp_path):
    run = _metric_run(tmp_path)
    log = logging.getLogger("test")
    with pytest.raises(UserError, match=r"no diagnosis.*python -m manipulator.metric.diagnose"):
        require_passing(run, False, log)
    _write_diagnosis(run, passed=False)
    with pytest.raises(UserError) as err:
        require_passing(run, False, log)
    message = str(err.value)
    assert "S1 (margin -0.27" in message and f"python -m manipulator.metric.diagnose {run}" in message
    assert "\n" not in message and "allow_failing_metric" in message
    record = require_passing(run, True, log)  # overridden: trains, and says so
    assert record["overridden"] is True and record["checks"]["S1"] is False
    _write_diagnosis(run, passed=True)
    assert require_passing(run, False, log, PUBLISHED)["overridden"] is False
    with pytest.raises(UserError, match="pairs drawn with"):  # diagnosed on other pairs than the run draws
        require_passing(run, False, log, PUBLISHED | {"dist_thresh": None})
    _write_diagnosis(run, passed=True, digest="0" * 16)  # of an older checkpoint
    with pytest.raises(UserError, match="older checkpoint"):
        require_passing(run, False, log)
