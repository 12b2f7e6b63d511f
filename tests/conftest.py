"""Shared fixtures and markers: GPU tests skip without CUDA; everything else runs on CPU."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def python_env() -> dict[str, str]:
    """Environment for subprocesses running project code (repo importable, few threads)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


@pytest.fixture(scope="session")
def python_exe() -> str:
    return sys.executable


def run_module(python_exe, env, module: str, *args: str, check: bool = True, timeout: int = 300):
    """Run `python -m module args` as a user would; fail the test with its output if it fails."""
    import subprocess

    proc = subprocess.run(
        [python_exe, "-m", module, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def toy_mead_tiny(tmp_path_factory, python_exe, python_env) -> Path:
    """1 actor x (neutral, happy) x 3 sentences at 25 fps: the shared input of the pipeline tests."""
    out = tmp_path_factory.mktemp("toy_tiny") / "toy_mead"
    run_module(
        python_exe,
        python_env,
        "preprocessing.toy_mead",
        "--out",
        out,
        "--actors",
        "1",
        "--sentences",
        "3",
        "--emotions",
        "neutral",
        "happy",
        "--size",
        "192",
        "--fps",
        "25",
        "--workers",
        "2",
    )
    return out


@pytest.fixture(scope="session")
def toy_one(tmp_path_factory, python_exe, python_env) -> Path:
    """1 actor x neutral x 1 sentence, 160 px at 10 fps (~30 frames): the input of the heavy-backend tests
    (FAN, FSGAN, DECA), which only read it."""
    out = tmp_path_factory.mktemp("toy_one") / "toy"
    run_module(
        python_exe,
        python_env,
        "preprocessing.toy_mead",
        "--out",
        out,
        "--actors",
        "1",
        "--sentences",
        "1",
        "--emotions",
        "neutral",
        "--size",
        "160",
        "--fps",
        "10",
    )
    return out


@pytest.fixture(scope="session")
def processed_tiny(tmp_path_factory, toy_mead_tiny, python_exe, python_env) -> Path:
    """toy_mead_tiny preprocessed in train mode (with previews)."""
    out = tmp_path_factory.mktemp("processed") / "toy"
    run_module(
        python_exe,
        python_env,
        "preprocessing.run",
        toy_mead_tiny,
        "train",
        f"out_dir={out}",
        "num_workers=2",
        "--preview",
    )
    return out


def tiny_metric(python_exe, env, data, runs, config, *extra):
    """Train one metric stage with the tiny preset (no validation split in the tiny data)."""
    return run_module(
        python_exe,
        env,
        "manipulator.metric.train",
        "--config",
        f"configs/metric/{config}.yaml",
        "--config",
        "configs/metric/tiny.yaml",
        f"data_dir={data}",
        f"engine.runs_root={runs}",
        "val_splits=[]",
        *extra,
    )


@pytest.fixture(scope="session")
def metric_runs(processed_tiny, tmp_path_factory, python_exe, python_env) -> Path:
    """Tiny metric stages (audio, expr, joint) on processed_tiny, and its retrieval index (train + test)."""
    runs = tmp_path_factory.mktemp("runs")
    for stage in ("audio", "expr"):
        tiny_metric(python_exe, python_env, processed_tiny, runs, stage, "engine.max_steps=20")
    tiny_metric(
        python_exe,
        python_env,
        processed_tiny,
        runs,
        "joint",
        "engine.max_steps=20",
        "consistency_start=5",
        f"init_from=[{runs}/metric/audio,{runs}/metric/expr]",
    )
    run_module(
        python_exe,
        python_env,
        "manipulator.metric.index",
        f"data_dir={processed_tiny}",
        f"metric_run={runs}/metric/joint",
        "splits=[train,test]",
    )
    return runs
