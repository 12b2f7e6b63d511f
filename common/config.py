"""Configs: a dataclass schema per entry point, YAML files merged over it, then `key=value` overrides.

Order of precedence (later wins): schema defaults < YAML files (in the order given, each after its
`_base_` chain) < command-line overrides. Unknown keys, wrong types, missing mandatory values and values
outside a field's declared `choices` raise `ConfigError` naming the source and the key.

A YAML file may start with `_base_: other.yaml` (path relative to that file) so that experiments are small
deltas of a base config.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from common.errors import ConfigError
from common.fsutil import atomic_write_text

BASE_KEY = "_base_"


def arg(default: Any = MISSING, help: str = "") -> Any:
    """A dataclass field with a help line for --help (`MISSING`: required); list/dict defaults are copied."""
    if isinstance(default, list | dict):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def choice(default: Any, choices: Sequence[Any], help: str = "") -> Any:
    """A dataclass field whose value must be one of `choices` (checked after every merge)."""
    return dataclasses.field(default=default, metadata={"choices": tuple(choices), "help": help})


def _schema_keys(node: Any) -> list[str]:
    return list(node.keys()) if isinstance(node, DictConfig) else []


def _explain(exc: OmegaConfBaseException, source: str, cfg: DictConfig) -> ConfigError:
    key = getattr(exc, "full_key", None) or "?"
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, ConfigKeyError):
        parent_key, _, leaf = key.rpartition(".")
        parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
        hint = difflib.get_close_matches(leaf, _schema_keys(parent), n=1)
        extra = f" (did you mean '{hint[0]}'?)" if hint else ""
        return ConfigError(f"{source}: unknown config key '{key}'{extra}")
    if isinstance(exc, ValidationError):
        return ConfigError(f"{source}: wrong type for config key '{key}': {first}")
    return ConfigError(f"{source}: invalid config at '{key}': {first}")


def read_yaml_chain(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[str, dict]]:
    """Return [(source, mapping), ...] for a YAML file and its `_base_` chain, base first."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: `_base_` cycle through {', '.join(map(str, seen))}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys, got {type(data).__name__}")
    chain: list[tuple[str, dict]] = []
    base = data.pop(BASE_KEY, None)
    if base is not None:
        chain += read_yaml_chain(path.parent / str(base), seen + (path,))
    chain.append((str(path), data))
    return chain


def _check_choices(schema: type, cfg: DictConfig, prefix: str = "") -> None:
    """Check `choice(...)` fields, recursing into nested dataclass sections."""
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        value = cfg[f.name]
        allowed = f.metadata.get("choices")
        if allowed is not None and value not in allowed:
            raise ConfigError(
                f"config key '{prefix}{f.name}' = {value!r} is not one of: {', '.join(map(str, allowed))}"
            )
        sub = hints.get(f.name)
        if isinstance(sub, type) and dataclasses.is_dataclass(sub):
            _check_choices(sub, value, f"{prefix}{f.name}.")


YAML_BOOL_WORDS = ("on", "off", "yes", "no", "y", "n")  # YAML 1.1 reads these as booleans


def apply_override(cfg: DictConfig, item: str | tuple[str, Any]) -> DictConfig:
    """Merge one override: a `key=value` string (YAML-typed value) or a (dotted key, value) pair."""
    if isinstance(item, tuple):
        key, value = item
        source = f"option --{key.replace('_', '-')}"
        nested: Any = value
        for part in reversed(key.split(".")):
            nested = {part: nested}
        update = OmegaConf.create(nested)
    else:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"command-line override {item!r} is not of the form key=value")
        source = f"override {item!r}"
        key, _, raw = item.partition("=")
        if raw.strip().lower() in YAML_BOOL_WORDS and isinstance(OmegaConf.select(cfg, key.strip()), str):
            update = OmegaConf.from_dotlist([f"{key}='{raw.strip()}'"])  # perceptual=on means the word, not True
        else:
            update = OmegaConf.from_dotlist([item])
    try:
        return OmegaConf.merge(cfg, update)
    except OmegaConfBaseException as exc:
        raise _explain(exc, source, cfg) from None


def merge_config(
    schema: type, config_files: Sequence[str | Path] = (), overrides: Sequence[str | tuple[str, Any]] = ()
) -> DictConfig:
    """Schema defaults < YAML files (in order) < overrides, not yet checked for missing values or choices."""
    cfg = OmegaConf.structured(schema)
    for config_file in config_files:
        for source, data in read_yaml_chain(Path(config_file)):
            try:
                cfg = OmegaConf.merge(cfg, OmegaConf.create(data))
            except OmegaConfBaseException as exc:
                raise _explain(exc, source, cfg) from None
    for item in overrides:
        cfg = apply_override(cfg, item)
    return cfg


def finish_config(schema: type, cfg: DictConfig) -> DictConfig:
    """Check missing values and choices, resolve interpolations and make the config read-only."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"config keys without a value (set them in YAML or as key=value): {', '.join(missing)}")
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as exc:
        raise _explain(exc, "interpolation", cfg) from None
    _check_choices(schema if isinstance(schema, type) else type(schema), cfg)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def load_config(
    schema: type, config_files: Sequence[str | Path] = (), overrides: Sequence[str | tuple[str, Any]] = ()
) -> DictConfig:
    """Build the resolved, read-only config for `schema` from YAML files and overrides (`key=value` strings or
    (dotted key, value) pairs)."""
    return finish_config(schema, merge_config(schema, config_files, overrides))


def to_plain(cfg: DictConfig) -> dict:
    """The config as plain Python data (for checkpoints and JSON)."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def to_object(node: DictConfig):
    """A config section as an instance of its dataclass (so its properties and methods work)."""
    return OmegaConf.to_object(node)


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


def config_hash(cfg: DictConfig | dict) -> str:
    """Short stable hash of the resolved config (recorded in meta.json and checkpoints)."""
    plain = to_plain(cfg) if isinstance(cfg, DictConfig) else cfg
    blob = json.dumps(plain, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def save_config(cfg: DictConfig, path: str | Path) -> None:
    atomic_write_text(path, to_yaml(cfg))
