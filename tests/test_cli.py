"""Every `python -m` entry point speaks the one command-line dialect (common/cli.py): it answers --help with
its options and --dry-run with the resolved config, without doing any work. The table below must list every
entry point: a new one fails `test_every_entry_point_is_listed` until it is added here."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest
import yaml
from test_structure import LAYERS

REPO = Path(__file__).resolve().parents[1]
PACKAGES = LAYERS  # every layered package (tests/test_structure.py)

# entry point -> the smallest command line that --dry-run accepts (inputs need not exist: nothing runs)
ENTRY_POINTS = {
    "common.selfcheck": [],
    "common.experiment": ["configs/experiments/tiny.yaml"],
    "DECA.check_assets": [],
    "preprocessing.toy_mead": ["--out", "data/toy"],
    "preprocessing.toy_mead.fidelity": ["data/toy_mead"],
    "preprocessing.run": ["videos/", "train"],
    "preprocessing.list_clips": ["data/processed/toy_mead", "split=test"],
    "preprocessing.protocols": ["data/processed/mead", "protocol=scmcl"],
    "manipulator.metric.train": ["--config", "configs/metric/joint.yaml"],
    "manipulator.metric.index": ["metric_run=runs/metric/joint"],
    "manipulator.metric.diagnose": ["runs/metric/joint"],
    "manipulator.metric.evaluate": ["--data", "data/p", "--run", "runs/metric/joint"],
    "manipulator.train": ["--config", "configs/manipulator/scmcl.yaml"],
    "manipulator.edit": ["clip", "--run", "runs/manipulator/scmcl", "--emotion", "happy"],
    "manipulator.ned": ["20_nets_finetuned.pth", "--out", "runs/manipulator/ned", "--data-dir", "data/processed/mead"],
    "manipulator.evaluate": ["--runs", "runs/manipulator/scmcl"],
    "renderer.train": ["actor=W001"],
    "renderer.refine": ["--config", "configs/refiner/base.yaml"],
    "renderer.ned": ["ned_dir", "--out", "runs/renderer/ned"],
    "renderer.infer": ["clip", "--edit", "happy"],
    "renderer.evaluate": ["--run", "runs/renderer/W001"],
    "postprocessing.run": ["clip", "--edit", "happy"],
    "postprocessing.pipeline": ["video.mp4", "--emotion", "happy"],
    "evaluation.classifier": ["--data", "data/p", "--out", "runs/eval/classifier"],
    "evaluation.run": ["--runs", "scmcl=runs/a", "--renderers", "warp", "--classifier", "runs/c"],
    "evaluation.bench": [],
    "evaluation.fer": ["videos/clip.mp4"],
    "evaluation.panel": [],
    "manipulator.export": ["runs/manipulator/scmcl"],
    "webapp.app": [],
}


def entry_points() -> list[str]:
    """Modules that run as `python -m`: a `__main__.py`, or a module with `if __name__ == "__main__"`."""
    found = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            if parts[-1] == "__main__":
                found.append(".".join(parts[:-1]))
            elif any(
                isinstance(n, ast.If) and "__main__" in ast.unparse(n.test) for n in ast.parse(path.read_text()).body
            ):
                found.append(".".join(parts))
    return found


def test_every_entry_point_is_listed():
    assert sorted(entry_points()) == sorted(ENTRY_POINTS)


def test_no_entry_point_parses_its_own_command_line():
    """One dialect: no argparse parser anywhere in the packages (common/cli.py reads every command line)."""
    users = [
        str(p.relative_to(REPO))
        for package in PACKAGES
        for p in (REPO / package).rglob("*.py")
        if "argparse" in p.read_text()
    ]
    assert not users


def _main(module: str):
    is_package = (REPO / module.replace(".", "/") / "__main__.py").is_file()
    return importlib.import_module(f"{module}.__main__" if is_package else module).main


def _run(module: str, argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        _main(module)(argv)
    out = capsys.readouterr()
    assert exc.value.code in (0, None), f"{module} {argv}: exit {exc.value.code}\n{out.err}"
    return out.out


@pytest.mark.parametrize("module", sorted(ENTRY_POINTS))
def test_entry_point_answers_help(module, capsys):
    out = _run(module, ["--help"], capsys)
    assert out.startswith(f"usage: python -m {module} ")
    assert "--dry-run" in out and "options" in out


@pytest.mark.parametrize("module", sorted(ENTRY_POINTS))
def test_entry_point_answers_dry_run(module, capsys, monkeypatch):
    monkeypatch.chdir(REPO)  # relative config paths
    out = _run(module, [*ENTRY_POINTS[module], "--dry-run"], capsys)
    cfg = yaml.safe_load(out)
    assert isinstance(cfg, dict) and cfg


def test_help_shows_the_defaults_a_config_gives(capsys, monkeypatch):
    """--help with --config (and options) shows the values those give, not the schema's defaults."""
    monkeypatch.chdir(REPO)
    plain = _run("manipulator.train", ["--help"], capsys)
    assert "engine.max_steps (int) [1000]" in plain and "defaults in brackets" in plain
    given = _run("manipulator.train", ["--config", "configs/manipulator/scmcl.yaml", "--help"], capsys)
    steps = yaml.safe_load((REPO / "configs/manipulator/base.yaml").read_text())["engine"]["max_steps"]
    assert f"engine.max_steps (int) [{steps}]" in given and "scmcl.lambda_corr (float) [0.0]" in given
    assert "the values with the given --config" in given
    overridden = _run("manipulator.train", ["--config", "configs/manipulator/scmcl.yaml", "lr=0.5", "--help"], capsys)
    assert "lr (float) [0.5]" in overridden
