"""Run a whole training experiment from one YAML (what `scripts/train.sh` runs):

  python -m common.experiment configs/experiments/<name>.yaml [key=value …] [--dry-run]

Stages, in order, each as its own `python -m …` process (so each one logs, checkpoints and resumes on its
own): SCMCL metric stages -> retrieval index -> the metric's diagnosis (`manipulator.metric.diagnose`) ->
expression manipulator -> one renderer per identity ->
optional SCMCL image-level renderer fine-tuning. A stage whose run already reached its `max_steps` resumes
at its end and exits at once, so re-running an experiment continues where it stopped. Prints the time of
every stage. This module only builds command lines; it imports nothing from the stages.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

from common.cli import parse_cli
from common.config import arg, read_yaml_chain, to_yaml
from common.dry_run import run_all
from common.errors import UserError, cli_entry
from common.formats import CLIPS_FILE, read_clip_index, select_clips

JOINT_INIT = {"joint": ("audio", "expr"), "joint_visual": ("audio", "visual")}  # stages initialised from others


@dataclass
class MetricStages:
    stages: list[str] = field(default_factory=lambda: ["audio", "expr", "joint"])  # configs/metric/<stage>.yaml
    configs: list[str] = field(default_factory=list)  # layered after each stage's config (e.g. a preset)
    overrides: list[str] = field(default_factory=list)  # key=value for every metric stage
    stage_overrides: dict[str, list[str]] = field(default_factory=dict)  # e.g. {joint: [engine.max_steps=300]}


@dataclass
class StageSpec:
    config: str = ""  # configs/<stage>/<config>.yaml or a path; "" skips the stage
    configs: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)


@dataclass
class RendererStages:
    config: str = "base"  # configs/renderer/<config>.yaml; "" skips the renderers
    configs: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    actors: list[str] = field(default_factory=list)  # default: every actor with clips in the train split
    scmcl_finetune: bool = False  # then fine-tune each renderer with configs/renderer/scmcl.yaml
    scmcl_configs: list[str] = field(default_factory=list)
    scmcl_overrides: list[str] = field(default_factory=list)


@dataclass
class ExperimentConfig:
    experiment: str = arg(help="configs/experiments/<name>.yaml (merged over these defaults)")
    plan: bool = arg(False, "print the stage commands with an estimate of their time, and exit")
    bench: str = arg(
        "runs/bench/bench.json",
        "measured step times for --plan's estimate (python -m evaluation.bench "
        "--only manipulator renderer metric, on the machine that will train)",
    )
    data_dir: str = "data/processed/toy_mead"
    runs_root: str = "runs"
    metric: MetricStages = field(default_factory=MetricStages)
    index: bool = True
    diagnose_overrides: list[str] = field(default_factory=list)  # key=value for the metric's diagnosis
    manipulator: StageSpec = field(default_factory=lambda: StageSpec(config="scmcl"))
    renderer: RendererStages = field(default_factory=RendererStages)


def _config_path(stage: str, name: str) -> str:
    if name.endswith((".yaml", ".yml")) or "/" in name:
        return name
    return f"configs/{stage}/{name}.yaml"


def _layered(stage: str, first: str, extra: list[str]) -> list[str]:
    out = ["--config", _config_path(stage, first)]
    for c in extra:
        out += ["--config", _config_path(stage, c)]
    return out


def train_actors(data_dir: str, planning: bool = False) -> list[str]:
    """The actors with train clips; when only planning and the data is not preprocessed yet, a placeholder."""
    if planning and not (Path(data_dir) / CLIPS_FILE).is_file():
        return ["<each train actor>"]
    return sorted({c["actor"] for c in select_clips(read_clip_index(data_dir), "train") if c["actor"]})


def plan(cfg, planning: bool = False) -> list[tuple[str, list[str]]]:
    """(label, argv) of every stage command, in order (`planning`: nothing runs, the data may not exist yet)."""
    py = [sys.executable, "-m"]
    runs = cfg.runs_root
    common = [f"data_dir={cfg.data_dir}", f"engine.runs_root={runs}"]
    steps: list[tuple[str, list[str]]] = []
    m = cfg.metric
    for stage in m.stages:
        argv = py + ["manipulator.metric.train"] + _layered("metric", stage, list(m.configs)) + common
        if stage in JOINT_INIT:
            argv.append(f"init_from=[{','.join(f'{runs}/metric/{s}' for s in JOINT_INIT[stage])}]")
        steps.append((f"metric:{stage}", argv + list(m.overrides) + list(m.stage_overrides.get(stage, []))))
    r = cfg.renderer
    if cfg.index:  # one index per metric run whose distances a SCMCL term uses
        for name in ["joint"] + (["joint_visual"] if r.config and r.scmcl_finetune else []):
            steps.append(
                (
                    f"index:{name}",
                    py + ["manipulator.metric.index", f"data_dir={cfg.data_dir}", f"metric_run={runs}/metric/{name}"],
                )
            )
        # the expression metric's diagnosis: the correlation term refuses a metric that fails it
        steps.append(
            (
                "diagnose:joint",
                py
                + ["manipulator.metric.diagnose", f"{runs}/metric/joint", f"data_dir={cfg.data_dir}"]
                + list(cfg.diagnose_overrides),
            )
        )
    man = cfg.manipulator
    if man.config:
        argv = py + ["manipulator.train"] + _layered("manipulator", man.config, list(man.configs)) + common
        steps.append(
            (
                f"manipulator:{Path(man.config).stem}",
                argv + [f"scmcl.metric_run={runs}/metric/joint"] + list(man.overrides),
            )
        )
    if r.config:
        actors = list(r.actors) or train_actors(cfg.data_dir, planning)
        for actor in actors:
            argv = py + ["renderer.train"] + _layered("renderer", r.config, list(r.configs)) + common
            steps.append((f"renderer:{actor}", argv + [f"actor={actor}"] + list(r.overrides)))
        if r.scmcl_finetune:
            man_run = f"{runs}/manipulator/{_run_name(man)}"
            for actor in actors:
                argv = py + ["renderer.train"] + _layered("renderer", "scmcl", list(r.configs) + list(r.scmcl_configs))
                argv += common + [
                    f"actor={actor}",
                    f"scmcl.manipulator_run={man_run}",
                    f"scmcl.metric_run={runs}/metric/joint_visual",
                ]
                steps.append((f"renderer-scmcl:{actor}", argv + list(r.scmcl_overrides)))
    return steps


def stage_settings(argv: list[str]) -> DictConfig:
    """A stage command's settings as its YAML layers and key=value overrides give them (no schema defaults)."""
    cfg = OmegaConf.create({})
    for flag, path in zip(argv, argv[1:], strict=False):
        if flag == "--config":
            for _, data in read_yaml_chain(Path(path)):
                cfg = OmegaConf.merge(cfg, OmegaConf.create(data))
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    return OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))


def manipulator_variant(scmcl: bool, lambda_corr: float) -> str:
    """How a manipulator stage runs, as evaluation.bench names its timings: NED's objective, plus SCMCL's
    paired term, plus its correlation term."""
    return "ned" if not scmcl else "scmcl_corr" if lambda_corr > 0 else "scmcl"


def metric_variant(modalities: list[str], consistency: str) -> str:
    """How a metric stage runs, as evaluation.bench names its timings: its modalities and consistency term."""
    return "+".join(modalities) + ("" if consistency == "none" else f"/{consistency}")


def renderer_variant(perceptual: str, scmcl: bool) -> str:
    """How a renderer stage runs, as evaluation.bench names its timings: with the VGG19 perceptual loss (auto
    times it: the weights are usually placed before a real run) and with SCMCL's image-level terms."""
    return ("plain" if perceptual == "off" else "perceptual") + ("+scmcl" if scmcl else "")


def _measured(entry: dict, variant: str, legacy: str) -> float:
    """The entry's timing of this variant; an older bench file's single timing (without SCMCL terms or VGG)."""
    return float(entry.get("variants", {}).get(variant, entry[legacy]))


def stage_seconds(label: str, argv: list[str], bench: dict) -> tuple[int, float] | None:
    """(steps, seconds per step) of a stage from its settings and the measured step times (None: not known)."""
    s = stage_settings(argv)
    steps, kind = OmegaConf.select(s, "engine.max_steps"), label.split(":")[0]
    if steps is None or kind in ("index", "diagnose"):
        return None
    size = OmegaConf.select(s, "size", default="small" if kind == "metric" else "ned")
    batch = float(OmegaConf.select(s, "batch_size", default=64))
    if kind == "metric" and isinstance(bench.get("metric", {}).get(size), dict):  # pairs/s per encoder size
        modalities = list(OmegaConf.select(s, "modalities", default=["audio"]))
        variant = metric_variant(modalities, OmegaConf.select(s, "consistency", default="none"))
        return int(steps), batch / _measured(bench["metric"][size], variant, "pairs_per_s")
    if kind == "manipulator" and size in bench.get("manipulator", {}):
        variant = manipulator_variant(
            bool(OmegaConf.select(s, "scmcl.enabled", default=False)),
            float(OmegaConf.select(s, "scmcl.lambda_corr", default=1.0)),
        )
        return int(steps), batch / _measured(bench["manipulator"][size], variant, "windows_per_s")
    key = f"{size}_{OmegaConf.select(s, 'image_size', default=256)}"
    if kind.startswith("renderer") and key in bench.get("renderer", {}):
        perceptual = OmegaConf.select(s, "perceptual", default="auto")
        perceptual = "off" if perceptual is False else str(perceptual)  # YAML reads a bare off as false
        variant = renderer_variant(perceptual, bool(OmegaConf.select(s, "scmcl.enabled", default=False)))
        return int(steps), _measured(bench["renderer"][key], variant, "train_step_s")
    return None


def print_plan(steps: list[tuple[str, list[str]]], bench_path: str) -> None:
    """Every stage command and, from measured step times, its steps x seconds per step and the total."""
    path = Path(bench_path)
    try:
        bench = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError as exc:
        raise UserError(f"bench={path}: not a JSON file of python -m evaluation.bench ({exc})") from None
    total, unknown = 0.0, []
    for label, cmd in steps:
        print(f"{label}: {' '.join(cmd[1:])}")
        est = stage_seconds(label, cmd, bench)
        if est is None:
            unknown.append(label)
            continue
        n, per = est
        total += n * per
        each = " per actor (counted once in the total: the data is not preprocessed yet)" if "<each" in label else ""
        print(f"    ~ {n} steps x {per:.3f} s = {n * per / 3600:.2f} h{each}")
    if not bench:
        print(f"no estimate: {path} not found (python -m evaluation.bench --only manipulator renderer metric)")
        return
    sections = ("manipulator", "renderer", "metric")
    entries = [v for sec in sections for v in bench.get(sec, {}).values() if isinstance(v, dict)]
    devices = sorted({str(v.get("device", "?")) for v in entries})
    where = "a CPU extrapolation" if devices == ["cpu"] else "measured on " + ", ".join(devices)
    if any("variants" not in v for v in entries):
        print(
            f"{path} is from an older bench (no SCMCL terms, no VGG19): rerun python -m evaluation.bench to time them"
        )
    print(
        f"estimate: {total / 3600:.1f} h for the step-based stages ({where}; {path}); not estimated: "
        f"{', '.join(unknown) or 'none'}"
    )


VGG19_FILE = "vgg19-dcbb9e9d.pth"  # the perceptual loss's weights (renderer.losses), placed by the user


def torch_home() -> Path:
    """Where torch keeps its files, by torch's own rule ($TORCH_HOME, else $XDG_CACHE_HOME/torch, else
    ~/.cache/torch), without importing torch (a plan stays quick): where the trainers will look."""
    cache = os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))
    return Path(os.path.expanduser(os.environ.get("TORCH_HOME", os.path.join(cache, "torch"))))


def stage_configs(steps: list[tuple[str, list[str]]]) -> list[tuple[str, dict | None]]:
    """(label, the stage's resolved config) of every stage as the stage itself parses its command line (its
    `--dry-run`, `common.dry_run`: this module imports nothing from the stages); the config is None and the label
    carries the stage's one-line error when it refuses the command line."""
    results = run_all([cmd[2:] for _, cmd in steps])  # cmd = [python, -m, module, args...]
    parsed = []
    for (label, _), result in zip(steps, results, strict=True):
        if result["code"] != 0:
            lines = [ln for ln in result["stderr"].strip().splitlines() if ln.strip()] or [f"exit {result['code']}"]
            parsed.append((f"{label}: {lines[-1]}", None))
        else:
            parsed.append((label, yaml.safe_load(result["stdout"])))
    return parsed


def _as_list(value) -> list[str]:
    return [v for v in (value if isinstance(value, list) else [value]) if v]


def data_note(cfg) -> str:
    """A line when the experiment's data is not preprocessed yet (a plan may well come first), else ""."""
    if (Path(cfg.data_dir) / CLIPS_FILE).is_file():
        return ""
    return f"note: data_dir={cfg.data_dir} is not preprocessed yet (scripts/preprocess.sh <videos> train ...)"


def check_stages(steps: list[tuple[str, list[str]]], cfg) -> list[str]:
    """What would fail hours into the experiment, found now: every stage's options and values as the stage parses
    them (a misspelt override, a wrong type or choice) and the files a stage reads that no earlier stage writes
    (init_from checkpoints, the VGG19 weights of perceptual=on). One line per problem."""
    problems = []
    runs = Path(cfg.runs_root).resolve()
    for label, stage in stage_configs(steps):
        if stage is None:
            problems.append(label)
            continue
        for path in _as_list(stage.get("init_from")):
            file = Path(str(path).split("@")[0])
            if not file.exists() and runs not in file.resolve().parents:  # a run an earlier stage writes is fine
                problems.append(f"{label}: init_from {path}: not found (the files to place: docs/mead.md)")
        if stage.get("perceptual") == "on":
            weights = Path(stage.get("perceptual_weights") or torch_home() / "hub" / "checkpoints" / VGG19_FILE)
            if not weights.is_file():
                problems.append(f"{label}: perceptual=on needs the VGG19 weights {weights} (docs/mead.md)")
    return problems


def _run_name(spec: StageSpec) -> str:
    """The manipulator run name: engine.name from the overrides, else the config's stem (scmcl, ned_baseline)."""
    for o in spec.overrides:
        if o.startswith("engine.name="):
            return o.split("=", 1)[1]
    return Path(spec.config).stem


@cli_entry
def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    exp = next((a for a in argv if not a.startswith("-") and "=" not in a), None)
    if exp is not None and not Path(exp).is_file():
        raise UserError(f"{exp}: no such experiment file (see configs/experiments/)")
    dry_run = "--dry-run" in argv  # the resolved config, printed once every stage accepts its command line
    cfg = parse_cli(
        ExperimentConfig,
        (["--config", exp] if exp else []) + [a for a in argv if a != "--dry-run"],
        prog="python -m common.experiment",
        doc=__doc__,
        positional=["experiment"],
    )
    steps = plan(cfg, planning=cfg.plan or dry_run)
    if cfg.plan or dry_run:  # the plan (or the config) first, then what would stop the experiment: exit 2
        problems = check_stages(steps, cfg)
        if cfg.plan:
            print_plan(steps, cfg.bench)
        elif not problems:
            sys.stdout.write(to_yaml(cfg))
        if note := data_note(cfg):
            print(note)
        if problems:
            raise UserError(
                f"{cfg.experiment}: {len(problems)} problem(s) to fix before it runs:\n  " + "\n  ".join(problems)
            )
        raise SystemExit(0)
    times: list[tuple[str, float]] = []
    for label, cmd in steps:
        print(f"== {label}: {' '.join(cmd[1:])}", flush=True)
        t = time.perf_counter()
        code = subprocess.call(cmd)
        times.append((label, time.perf_counter() - t))
        if code != 0:
            print(f"stage {label} failed (exit {code}); fix it and re-run: finished stages are skipped", flush=True)
            sys.exit(code)
    print("stage times:")
    for label, dt in times:
        print(f"  {label:<28} {dt:7.1f} s")
    print(f"  {'total':<28} {sum(dt for _, dt in times):7.1f} s")


if __name__ == "__main__":
    main()
