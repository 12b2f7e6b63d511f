"""evaluation.bench times each training stage as the experiment configs run it (SCMCL terms, VGG19 perceptual
loss, the metric stages' modalities and consistency term), and `--plan` picks the timing of the way each stage
runs; an older bench file (one timing per size) still gives an estimate, with a note."""

from __future__ import annotations

import json
import re

from conftest import run_module

from common.experiment import manipulator_variant, metric_variant, renderer_variant
from evaluation.bench.training import METRIC_STAGES, bench_manipulator, bench_metric, bench_renderer


def test_the_bench_times_every_variant():
    man = bench_manipulator(steps=1, sizes=(("tiny", 4),))["tiny"]
    assert set(man["variants"]) == {"ned", "scmcl", "scmcl_corr"} and man["windows_per_s"] == man["variants"]["ned"]
    met = bench_metric(steps=1, batch=4, sizes=("tiny",))["tiny"]
    assert set(met["variants"]) == {metric_variant(*v) for v in METRIC_STAGES.values()}
    assert met["pairs_per_s"] == met["variants"]["audio+expr/affine"]
    ren = bench_renderer(steps=1, frames=1, presets=(("tiny", 64, 2),))["tiny_64"]
    assert set(ren["variants"]) == {"perceptual", "plain", "perceptual+scmcl", "plain+scmcl"}
    assert ren["train_step_s"] == ren["variants"]["perceptual"] and "vgg19" in ren["perceptual"]
    assert all(v > 0 for section in (man, met, ren) for v in section["variants"].values())


def test_variant_names():
    assert [manipulator_variant(*a) for a in ((False, 1.0), (True, 0.0), (True, 1.0))] == ["ned", "scmcl", "scmcl_corr"]
    assert (
        metric_variant(["audio", "expr"], "affine") == "audio+expr/affine"
        and metric_variant(["expr"], "none") == "expr"
    )
    assert renderer_variant("auto", False) == "perceptual" and renderer_variant("off", True) == "plain+scmcl"


def estimates(out: str) -> dict[str, float]:
    """Stage label -> the seconds per step --plan printed for it."""
    found, label = {}, None
    for line in out.splitlines():
        if not line.startswith(" ") and ": " in line:
            label = line.split(": ")[0]
        elif m := re.match(r"\s+~ \d+ steps x ([\d.]+) s", line):
            found[label] = float(m.group(1))
    return found


def test_plan_uses_the_timing_of_each_stage_as_configured(tmp_path, python_exe, python_env):
    entry = {"device": "cpu"}
    bench = {
        "manipulator": {
            size: entry | {"windows_per_s": 640.0, "variants": {"ned": 640.0, "scmcl": 320.0, "scmcl_corr": 160.0}}
            for size in ("ned", "small")
        },
        "renderer": {
            "ned_256": entry
            | {
                "train_step_s": 2.0,
                "variants": {"perceptual": 2.0, "plain": 1.0, "perceptual+scmcl": 4.0, "plain+scmcl": 3.0},
            }
        },
        "metric": {
            size: entry
            | {
                "pairs_per_s": 1600.0,
                "variants": {"audio": 6400.0, "expr": 3200.0, "audio+expr/affine": 1600.0, "visual": 640.0},
            }
            for size in ("base", "small")
        },
    }
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(bench))

    def plan(experiment, *extra):
        argv = [f"configs/experiments/{experiment}.yaml", "--plan", f"bench={path}", "renderer.actors=[A]", *extra]
        proc = run_module(python_exe, python_env, "common.experiment", *argv, check=False)
        assert proc.returncode in (0, 2), proc.stderr  # 2: the plan lists files to place (NED's); never a crash
        return proc.stdout

    mead = plan("mead")
    got = estimates(mead)
    # the metric stages at 64 pairs a step; the manipulator with both SCMCL terms (mead.yaml: lambda_corr=1)
    assert got["metric:audio"] == 0.01 and got["metric:expr"] == 0.02 and got["metric:joint"] == 0.04
    assert got["manipulator:scmcl"] == 64 / 160 and got["renderer:A"] == 2.0
    assert "older bench" not in mead
    assert estimates(plan("mead_ned_baseline"))["manipulator:ned_baseline"] == 0.1
    default = estimates(plan("default", "renderer.scmcl_finetune=true", "renderer.scmcl_overrides=[perceptual=off]"))
    assert default["manipulator:scmcl"] == 0.1  # scmcl.yaml: the paired term only; batch 32
    assert default["renderer:A"] == 2.0 and default["renderer-scmcl:A"] == 3.0
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"manipulator": {"ned": entry | {"batch": 64, "windows_per_s": 640.0}}}))
    legacy = run_module(
        python_exe,
        python_env,
        "common.experiment",
        "configs/experiments/mead.yaml",
        "--plan",
        f"bench={old}",
        check=False,
    ).stdout
    assert estimates(legacy)["manipulator:scmcl"] == 0.1 and "older bench (no SCMCL terms, no VGG19)" in legacy
