"""The one command-line dialect of every `python -m <package>.<verb>` entry point.

Each entry point has a dataclass schema (DESIGN section 7). `parse_cli` reads the command line against it:

  value                      positional inputs, filling the schema fields named in `positional` in order
                             (a list field takes every remaining positional)
  --config FILE              YAML merged over the schema defaults (repeatable, merged in order; `_base_` chains)
  key=value                  an override; dotted keys reach into sections (engine.max_steps=10)
  --key value | --key=value  the same; dashes stand for underscores (--side-by-side, --runs-root runs)
  --flag                     a bool field set to true
  --key v1 v2 …              a list field: every value up to the next --option; given again
                             (--only a --only b), the values add up
  --dry-run                  print the resolved config (YAML) and exit 0
  -h, --help                 the command's description and every option with its type and default

Precedence: schema defaults < YAML files < the command line (in the order given). Unknown keys, wrong types,
missing values and values outside a field's choices stop with one line naming the key.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from collections.abc import Callable, Sequence
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

from common.config import apply_override, finish_config, merge_config, to_yaml
from common.errors import ConfigError


def _fields(schema: type, prefix: str = "") -> dict[str, tuple[Any, dataclasses.Field]]:
    """Dotted name -> (type hint, field) of every leaf field of a (nested) dataclass schema."""
    hints = typing.get_type_hints(schema)
    out: dict[str, tuple[Any, dataclasses.Field]] = {}
    for f in dataclasses.fields(schema):
        hint = hints[f.name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            out |= _fields(hint, f"{prefix}{f.name}.")
        else:
            out[f"{prefix}{f.name}"] = (hint, f)
    return out


def _is_list(hint: Any) -> bool:
    return typing.get_origin(hint) in (list, tuple, Sequence)


def _is_bool(hint: Any) -> bool:
    return hint is bool or (typing.get_origin(hint) is typing.Union and bool in typing.get_args(hint))


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return MISSING


def _type_name(hint: Any) -> str:
    name = getattr(hint, "__name__", None) or str(hint)
    return str(hint).replace("typing.", "") if typing.get_args(hint) else name


def usage(
    schema: type, prog: str, doc: str = "", positional: Sequence[str] = (), values: DictConfig | None = None
) -> str:
    """The --help text: description, usage line and every option with type, default and help; the defaults
    are `values`' where given (the config files of the command line merged in)."""
    fields = _fields(schema)
    pos = " ".join(f"<{p}>{' …' if _is_list(fields[p][0]) else ''}" for p in positional)
    lines = [f"usage: {prog} {pos} [--config YAML …] [key=value | --key value …] [--dry-run]".replace("  ", " ")]
    if doc:
        lines += ["", doc.strip()]
    where = "defaults in brackets" if values is None else "in brackets: the values with the given --config and options"
    lines += ["", f"options (key=value or --key value; {where}):"]
    for name, (hint, f) in fields.items():
        default = _default(f)
        if values is not None and not OmegaConf.is_missing(values, name):
            default = (
                OmegaConf.to_container(node) if OmegaConf.is_config(node := OmegaConf.select(values, name)) else node
            )
        shown = "required" if isinstance(default, str) and default == MISSING else repr(default)
        extra = f.metadata.get("help", "")
        if "choices" in f.metadata:
            extra = (extra + "; " if extra else "") + "one of " + ", ".join(map(str, f.metadata["choices"]))
        lines.append(f"  {name} ({_type_name(hint)}) [{shown}]{'  ' + extra if extra else ''}")
    lines += [
        "  --config YAML   config file(s) merged in order",
        "  --dry-run       print the resolved config and exit",
    ]
    return "\n".join(lines)


def split_argv(schema: type, argv: Sequence[str], positional: Sequence[str] = ()) -> tuple[list[str], list]:
    """Config files and overrides (`key=value` strings or (key, value) pairs) from a command line."""
    fields = _fields(schema)
    configs: list[str] = []
    overrides: list = []
    positionals: list[str] = []
    list_options: dict[str, list[str]] = {}  # values of the --key options of list fields so far
    args = list(argv)
    i = 0
    while i < len(args):
        tok = args[i]
        i += 1
        if tok == "--config":
            if i >= len(args):
                raise ConfigError("--config needs a YAML file")
            configs.append(args[i])
            i += 1
        elif tok.startswith("--config="):
            configs.append(tok.split("=", 1)[1])
        elif tok.startswith("--") and len(tok) > 2:
            name, eq, inline = tok[2:].partition("=")
            key = name.replace("-", "_")
            if key not in fields:
                raise ConfigError(f"unknown option --{name} (see --help)")
            hint = fields[key][0]
            if _is_list(hint):
                values = [inline] if eq else []
                while not eq and i < len(args) and not args[i].startswith("--"):
                    values.append(args[i])
                    i += 1
                values = list_options.get(key, []) + values  # a repeated --key adds to its values
                list_options[key] = values
                overrides.append((key, values))
            elif eq:
                overrides.append((key, inline))
            elif _is_bool(hint) and (i >= len(args) or args[i].lower() not in ("true", "false")):
                overrides.append((key, True))
            else:
                if i >= len(args):
                    raise ConfigError(f"--{name} needs a value")
                overrides.append((key, args[i]))
                i += 1
        elif "=" in tok and not tok.startswith("="):
            overrides.append(tok)
        else:
            positionals.append(tok)
    overrides = _positional_overrides(fields, positional, positionals) + overrides
    return configs, overrides


def _positional_overrides(fields: dict, names: Sequence[str], values: list[str]) -> list:
    out: list = []
    for k, name in enumerate(names):
        if k >= len(values):
            break
        if _is_list(fields[name][0]):
            out.append((name, values[k:]))
            values = values[:k]
            break
        out.append((name, values[k]))
    extra = values[len(names) :] if not out or not _is_list(fields[out[-1][0]][0]) else []
    if extra:
        raise ConfigError(f"unexpected argument {extra[0]!r} (see --help)")
    return out


def parse_cli(
    schema: type,
    argv: Sequence[str] | None = None,
    *,
    prog: str = "",
    doc: str = "",
    positional: Sequence[str] = (),
    derive: Callable[[DictConfig], dict[str, Any]] | None = None,
) -> DictConfig:
    """Parse a command line for `schema` (see the module doc) into the resolved, read-only config.

    `derive(cfg)` returns defaults that depend on other keys, {dotted key: value}, computed from the merged
    config (it decides what counts as unset, e.g. a name left at its schema default). With --dry-run the
    resolved config is printed and the process exits 0."""
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = prog or f"python -m {sys.argv[0]}"
    if "-h" in argv or "--help" in argv:
        rest = [a for a in argv if a not in ("-h", "--help", "--dry-run")]
        values = None
        if rest:  # --config files and options given: show what they set (the schema's defaults otherwise)
            configs, overrides = split_argv(schema, rest, positional)
            values = merge_config(schema, configs, overrides)
        print(usage(schema, prog, doc, positional, values))
        raise SystemExit(0)
    dry_run = "--dry-run" in argv
    argv = [a for a in argv if a != "--dry-run"]
    configs, overrides = split_argv(schema, argv, positional)
    cfg = merge_config(schema, configs, overrides)
    for name in positional:
        if OmegaConf.is_missing(cfg, name):
            what = _fields(schema)[name][1].metadata.get("help", "")
            raise ConfigError(f"{prog}: missing <{name}>{f' ({what})' if what else ''}; see --help")
    if derive is not None:
        for key, value in derive(cfg).items():
            cfg = apply_override(cfg, (key, value))
    cfg = finish_config(schema, cfg)
    if dry_run:
        sys.stdout.write(to_yaml(cfg))
        raise SystemExit(0)
    return cfg
