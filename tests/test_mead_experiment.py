"""configs/experiments/mead.yaml and mead_ned_baseline.yaml: the stages they plan and --plan's time estimate from
measured step times (a bench JSON in evaluation.bench's format, written here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_module


def plan(python_exe, env, experiment, *extra):
    """--plan's output; without NED's files and the VGG19 weights (never here) it ends with those, exit 2."""
    proc = run_module(
        python_exe, env, "common.experiment", f"configs/experiments/{experiment}.yaml", "--plan", *extra, check=False
    )
    assert proc.returncode == 2 and "problem(s) to fix before it runs" in proc.stderr, proc.stderr
    assert "20_nets_finetuned.pth: not found" in proc.stderr and "perceptual=on needs the VGG19" in proc.stderr
    return proc.stdout


def test_mead_plan_with_an_estimate(tmp_path, python_exe, python_env):
    bench = tmp_path / "bench.json"
    bench.write_text(
        json.dumps(
            {
                "manipulator": {"ned": {"batch": 64, "windows_per_s": 640.0, "device": "cpu"}, "peak_rss_mb": 1098.0},
                "renderer": {"ned_256": {"train_step_s": 2.0, "device": "cpu"}},
                "metric": {"base": {"batch": 64, "pairs_per_s": 6400.0, "device": "cpu"}, "peak_rss_mb": 480.0},
            }
        )
    )
    out = plan(python_exe, python_env, "mead", f"bench={bench}", "renderer.actors=[M003,M009]")
    labels = [
        line.split(":")[0] + ":" + line.split(":")[1]
        for line in out.splitlines()
        if not line.startswith(" ") and ": -m " in line
    ]
    assert labels == [
        "metric:audio",
        "metric:expr",
        "metric:joint",
        "index:joint",
        "diagnose:joint",
        "manipulator:scmcl",
        "renderer:M003",
        "renderer:M009",
    ]
    assert "init_from=checkpoints/ned/manipulator_checkpoints/20_nets_finetuned.pth" in out and "expr_norm=none" in out
    # metric 20000 + 20000 + 10000 steps x 0.01 s, manipulator 11500 x 0.1 s, 2 renderers x 20000 x 2 s
    assert "~ 11500 steps x 0.100 s = 0.32 h" in out
    total = (50000 * 0.01 + 11500 * 0.1 + 2 * 20000 * 2.0) / 3600
    assert f"estimate: {total:.1f} h for the step-based stages (a CPU extrapolation" in out
    assert "not estimated: index:joint, diagnose:joint" in out
    base = plan(python_exe, python_env, "mead_ned_baseline", f"bench={tmp_path / 'none.json'}")
    assert "manipulator:ned_baseline" in base and "scmcl.lambda_corr" not in base and "no estimate" in base


@pytest.mark.parametrize(
    "env", [{}, {"XDG_CACHE_HOME": "/tmp/xdg"}, {"TORCH_HOME": "/tmp/th", "XDG_CACHE_HOME": "/tmp/xdg"}]
)
def test_the_plan_looks_for_weights_where_torch_does(env, monkeypatch):
    """The plan's VGG19 check (no torch import) and the trainers (torch.hub) agree on the folder."""
    import torch

    from common.experiment import torch_home

    for key in ("TORCH_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert torch_home() / "hub" == Path(torch.hub.get_dir())
