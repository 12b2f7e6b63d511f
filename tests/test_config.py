from __future__ import annotations

import subprocess
from dataclasses import dataclass, field

import pytest
import yaml

from common.cli import parse_cli
from common.config import arg, choice, config_hash, load_config, save_config
from common.errors import ConfigError


@dataclass
class Optim:
    lr: float = 1e-3
    kind: str = choice("adam", ["adam", "sgd"])


@dataclass
class Schema:
    name: str = "run"
    steps: int = 10
    use_amp: bool = False
    optim: Optim = field(default_factory=Optim)
    widths: list[int] = field(default_factory=lambda: [8, 16])


def write_yaml(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_then_yaml_then_overrides(tmp_path):
    f = write_yaml(tmp_path / "a.yaml", {"steps": 20, "optim": {"lr": 0.5}})
    cfg = load_config(Schema, [f], ["optim.kind=sgd", "steps=30"])
    assert (cfg.steps, cfg.optim.lr, cfg.optim.kind, cfg.name) == (30, 0.5, "sgd", "run")


def test_base_chain_is_merged_first(tmp_path):
    write_yaml(tmp_path / "base.yaml", {"steps": 5, "name": "base"})
    delta = write_yaml(tmp_path / "delta.yaml", {"_base_": "base.yaml", "name": "delta"})
    cfg = load_config(Schema, [delta])
    assert (cfg.steps, cfg.name) == (5, "delta")


def test_unknown_key_in_yaml_names_file_and_suggests(tmp_path):
    f = write_yaml(tmp_path / "bad.yaml", {"optim": {"lrr": 0.1}})
    with pytest.raises(ConfigError, match=r"bad\.yaml.*unknown config key 'optim\.lrr'.*did you mean 'lr'"):
        load_config(Schema, [f])


def test_unknown_key_override():
    with pytest.raises(ConfigError, match="unknown config key 'stepz'"):
        load_config(Schema, [], ["stepz=3"])


def test_wrong_type_yaml(tmp_path):
    f = write_yaml(tmp_path / "bad.yaml", {"steps": "many"})
    with pytest.raises(ConfigError, match=r"bad\.yaml: wrong type for config key 'steps'"):
        load_config(Schema, [f])


def test_wrong_type_override():
    with pytest.raises(ConfigError, match="wrong type for config key 'optim.lr'"):
        load_config(Schema, [], ["optim.lr=fast"])


def test_yaml_boolean_words_stay_words_for_a_string_key():
    """perceptual=on means the choice "on", not YAML 1.1's True; a bool key still reads them as booleans."""
    cfg = load_config(Schema, overrides=["name=off", "use_amp=yes"])
    assert cfg.name == "off" and cfg.use_amp is True
    with pytest.raises(ConfigError, match="'optim.kind' = 'on' is not one of: adam, sgd"):  # the word, not 'True'
        load_config(Schema, overrides=["optim.kind=on"])


def test_choice_violation():
    with pytest.raises(ConfigError, match="'optim.kind' = 'rmsprop' is not one of: adam, sgd"):
        load_config(Schema, [], ["optim.kind=rmsprop"])


def test_malformed_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not of the form key=value"):
        load_config(Schema, [], ["steps"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Schema, [tmp_path / "nope.yaml"])


def test_base_cycle(tmp_path):
    write_yaml(tmp_path / "a.yaml", {"_base_": "b.yaml"})
    write_yaml(tmp_path / "b.yaml", {"_base_": "a.yaml"})
    with pytest.raises(ConfigError, match="cycle"):
        load_config(Schema, [tmp_path / "a.yaml"])


def test_config_is_read_only_and_hash_stable(tmp_path):
    cfg = load_config(Schema, [], ["steps=3"])
    with pytest.raises(Exception):  # noqa: B017 - omegaconf's ReadonlyConfigError
        cfg.steps = 4
    assert config_hash(cfg) == config_hash(load_config(Schema, [], ["steps=3"]))
    assert config_hash(cfg) != config_hash(load_config(Schema, [], ["steps=4"]))
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(Schema, [tmp_path / "config.yaml"]) == cfg


def test_parse_cli_dry_run_prints_resolved_config(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_cli(Schema, ["--dry-run", "steps=7"])
    assert exc.value.code == 0
    assert yaml.safe_load(capsys.readouterr().out)["steps"] == 7


def test_cli_error_is_one_line_no_traceback(tmp_path, repo_root, python_exe, python_env):
    script = repo_root / "tests" / "fixtures" / "regression_train.py"
    proc = subprocess.run(
        [python_exe, str(script), "engine.max_stepz=3"], capture_output=True, text=True, env=python_env
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "unknown config key 'engine.max_stepz'" in proc.stderr


@dataclass
class Command:
    clip_dir: str = arg(help="a clip dir")
    emotion: str = arg("", "target emotion")
    intensity: float = 1.0
    side_by_side: bool = False
    runs: list[str] = arg([], "manipulator runs")
    optim: Optim = field(default_factory=Optim)


def test_cli_dialect_positional_flags_lists_and_overrides():
    argv = [
        "clip",
        "--emotion",
        "happy",
        "--side-by-side",
        "--runs",
        "a=x,y",
        "b=z",
        "--intensity=0.5",
        "optim.kind=sgd",
        "--optim.lr",
        "0.1",
    ]
    cfg = parse_cli(Command, argv, prog="cmd", positional=["clip_dir"])
    assert (cfg.clip_dir, cfg.emotion, cfg.intensity, cfg.side_by_side) == ("clip", "happy", 0.5, True)
    assert list(cfg.runs) == ["a=x,y", "b=z"]
    assert (cfg.optim.kind, cfg.optim.lr) == ("sgd", 0.1)
    assert parse_cli(Command, ["runs=[p,q]", "clip"], positional=["clip_dir"]).runs == ["p", "q"]


def test_cli_repeated_list_option_adds_up():
    argv = ["c", "--runs", "a", "--emotion", "sad", "--runs", "b", "c2", "--runs=d"]
    assert list(parse_cli(Command, argv, positional=["clip_dir"]).runs) == ["a", "b", "c2", "d"]
    # the first --runs replaces the value set before it (defaults, configs, key=value); the next ones add
    assert list(parse_cli(Command, ["c", "runs=[x]", "--runs", "a"], positional=["clip_dir"]).runs) == ["a"]


def test_cli_dialect_errors_name_the_problem():
    with pytest.raises(ConfigError, match="missing <clip_dir> \\(a clip dir\\)"):
        parse_cli(Command, ["--emotion", "happy"], prog="cmd", positional=["clip_dir"])
    with pytest.raises(ConfigError, match="unknown option --emotio"):
        parse_cli(Command, ["c", "--emotio", "happy"], positional=["clip_dir"])
    with pytest.raises(ConfigError, match="unexpected argument 'd'"):
        parse_cli(Command, ["c", "d"], positional=["clip_dir"])
    with pytest.raises(ConfigError, match="wrong type for config key 'intensity'"):
        parse_cli(Command, ["c", "--intensity", "lots"], positional=["clip_dir"])
    with pytest.raises(ConfigError, match="not one of"):
        parse_cli(Command, ["c", "--optim.kind", "rmsprop"], positional=["clip_dir"])


def test_cli_help_lists_every_option_with_its_default(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_cli(Command, ["--help"], prog="cmd", doc="Edit a clip.", positional=["clip_dir"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: cmd <clip_dir>") and "Edit a clip." in out
    for line in ("clip_dir (str) [required]  a clip dir", "intensity (float) [1.0]", "optim.kind (str) ['adam']"):
        assert line in out


def test_cli_derive_sets_defaults_that_depend_on_other_keys():
    derive = lambda c: {"emotion": c.clip_dir.upper()} if not c.emotion else {}  # noqa: E731
    assert parse_cli(Command, ["abc"], positional=["clip_dir"], derive=derive).emotion == "ABC"
    assert parse_cli(Command, ["abc", "emotion=sad"], positional=["clip_dir"], derive=derive).emotion == "sad"
