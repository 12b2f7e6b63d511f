"""Shared fixtures and markers: GPU tests skip without CUDA; everything else runs on CPU.

`make test` runs the suite on parallel workers (pytest-xdist, one per core, a test file per worker at a time).
The session fixtures that build data (toy sets, preprocessing, tiny metric runs) are built once per test run
and shared by every worker (`shared_dir`): the first worker to need one builds it under a file lock, the others
wait for it and reuse it. They are read-only inputs: a test that changes one works on a copy."""

from __future__ import annotations

import fcntl
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from cli_runner import run_in_process

from common.formats import AUDIO_SR, frame_to_sample
from common.video import probe_video, read_audio, read_frames, write_video
from preprocessing.toy_mead.dataset import ground_truth_of

REPO_ROOT = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):  # workers share the cores: in-process torch takes its share only
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))


# pytest-xdist hands test files to the workers in collection order: the longest files (measured with
# --durations) go first, so that no worker starts a long file while the other is about to run dry. The second
# builds its own data (toy_mead), so it does not wait while the first builds the shared processed set.
LONGEST_FIRST = ("test_postprocess.py", "test_toy_mead.py", "test_preprocess.py", "test_renderer.py", "test_deca.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


def shared_dir(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """A folder `build(folder)` fills once per test run. Without workers: a fresh temporary folder. With
    pytest-xdist workers: one folder beside the workers' own temporary roots, built by the first worker that asks
    (under a file lock; the others wait) and marked complete last, so a failed build is retried, never reused."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        folder = tmp_path_factory.mktemp(name)
        build(folder)
        return folder
    root = tmp_path_factory.getbasetemp().parent / "shared"
    root.mkdir(exist_ok=True)
    folder, done = root / name, root / f"{name}.complete"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also when a build raises
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


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


def run_module(python_exe, env, module: str, *args: str, check: bool = True, timeout: int = 300, isolate: bool = False):
    """Run `python -m module args` as a user would; fail the test with its output if it fails.

    In this process by default (`cli_runner`: the command's exit code, stdout and stderr, the given
    environment, and the test process's state restored after it); `isolate=True` starts a fresh interpreter,
    for a command that forks or whose process is the point (`timeout` applies to those)."""
    args = [str(a) for a in args]
    if isolate:
        import subprocess

        proc = subprocess.run(
            [python_exe, "-m", module, *args], capture_output=True, text=True, env=env, timeout=timeout
        )
    else:
        proc = run_in_process(module, args, env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def toy_mead_tiny(tmp_path_factory, python_exe, python_env) -> Path:
    """1 actor x (neutral, happy) x 3 sentences at 25 fps: the shared input of the pipeline tests."""
    args = ["--actors", "1", "--sentences", "3", "--emotions", "neutral", "happy", "--size", "192", "--fps", "25"]

    def build(folder: Path) -> None:
        run_module(
            python_exe,
            python_env,
            "preprocessing.toy_mead",
            "--out",
            folder / "toy_mead",
            *args,
            "--workers",
            "2",
            isolate=True,  # its speech workers fork
        )

    return shared_dir(tmp_path_factory, "toy_tiny", build) / "toy_mead"


PER_FRAME_TRUTH = ("rig", "phonemes", "landmarks")


def trim_toy_set(root: Path, n_frames: int) -> None:
    """Cut every video of a toy MEAD root (its wav and its ground truth's per-frame arrays too) to its first
    `n_frames` frames."""
    for video in sorted(root.glob("*/video/front/*/level_*/*.mp4")):
        fps = probe_video(video).fps
        audio = read_audio(video)[: frame_to_sample(n_frames, fps)]
        trimmed = video.with_name(f".trim_{video.name}")
        write_video(trimmed, read_frames(video, 0, n_frames), fps, audio)
        trimmed.replace(video)
        wav = root / video.relative_to(root).as_posix().replace("/video/front/", "/audio/", 1)
        soundfile.write(wav.with_suffix(".wav"), audio, AUDIO_SR, subtype="PCM_16")
        truth = ground_truth_of(video)  # its per-frame arrays too
        with np.load(truth) as z:
            arrays = {k: z[k][:n_frames] if z[k].ndim and k in PER_FRAME_TRUTH else z[k] for k in z.files}
        np.savez(truth, **arrays)


@pytest.fixture(scope="session")
def toy_one(tmp_path_factory, python_exe, python_env) -> Path:
    """1 actor x neutral x 1 sentence, 160 px at 10 fps, cut to its first 12 frames (one window and a bit): the
    input of the heavy-backend tests (FAN, FSGAN, DECA, with random weights at their real sizes), which only
    read it."""
    args = ["--actors", "1", "--sentences", "1", "--emotions", "neutral", "--size", "160", "--fps", "10"]

    def build(folder: Path) -> None:
        run_module(python_exe, python_env, "preprocessing.toy_mead", "--out", folder / "toy", *args, isolate=True)
        trim_toy_set(folder / "toy", 12)

    return shared_dir(tmp_path_factory, "toy_one", build) / "toy"


@pytest.fixture(scope="session")
def processed_tiny(tmp_path_factory, toy_mead_tiny, python_exe, python_env) -> Path:
    """toy_mead_tiny preprocessed in train mode (with previews)."""

    def build(folder: Path) -> None:
        out = f"out_dir={folder / 'toy'}"
        run_module(
            python_exe, python_env, "preprocessing.run", toy_mead_tiny, "train", out, "num_workers=2", "--preview"
        )

    return shared_dir(tmp_path_factory, "processed", build) / "toy"


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


def tiny_renderer_args(data: Path, runs: Path, actor: str = "W001") -> list[str]:
    """renderer.train's arguments for one identity's renderer with the tiny preset."""
    configs = ["--config", "configs/renderer/base.yaml", "--config", "configs/renderer/tiny.yaml"]
    return [*configs, f"data_dir={data}", f"engine.runs_root={runs}", f"actor={actor}"]


@pytest.fixture(scope="session")
def metric_runs(processed_tiny, tmp_path_factory, python_exe, python_env) -> Path:
    """Tiny metric stages (audio, expr, joint) on processed_tiny, and its retrieval index (train + test)."""

    def build(runs: Path) -> None:
        for stage in ("audio", "expr"):
            tiny_metric(python_exe, python_env, processed_tiny, runs, stage, "engine.max_steps=20")
        init = f"init_from=[{runs}/metric/audio,{runs}/metric/expr]"
        tiny_metric(
            python_exe, python_env, processed_tiny, runs, "joint", "engine.max_steps=20", "consistency_start=5", init
        )
        index = ["manipulator.metric.index", f"data_dir={processed_tiny}", f"metric_run={runs}/metric/joint"]
        run_module(python_exe, python_env, *index, "splits=[train,test]")

    return shared_dir(tmp_path_factory, "runs", build)
