"""Named split protocols for MEAD-layout data (`configs/protocols/<name>.yaml`): which clips train, validate and
test the manipulator / renderer / evaluation (`split`) and the audio-visual metric (`metric_split`).

  python -m preprocessing.protocols data/processed/mead protocol=scmcl     # apply to a processed root's clips.json
  scripts/preprocess.sh data/MEAD train protocol=scmcl                     # or choose it when preprocessing

A protocol file has `main_actors` (empty: every actor), `levels` (emotion -> allowed levels, `default` for the
others), `test_actors` (all their clips are test), `metric_actors` (`others`: the actors outside main_actors,
`same`: the main split's train/val clips), `val_fraction` / `test_fraction` (the last clips by number of each
actor, emotion and level), and `source` (where it comes from). A clip no role uses gets split `unused`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import yaml

from common.cli import parse_cli
from common.config import arg
from common.errors import ConfigError, UserError, cli_entry
from common.formats import clip_split, read_clip_index, write_clip_index

PROTOCOL_DIR = Path(__file__).resolve().parents[1] / "configs" / "protocols"
UNUSED = "unused"
_KEYS = {"source", "main_actors", "levels", "test_actors", "metric_actors", "val_fraction", "test_fraction"}


@dataclass(frozen=True)
class Protocol:
    name: str
    source: str
    main_actors: tuple[str, ...]
    levels: dict[str, tuple[int, ...]]
    test_actors: tuple[str, ...]
    metric_actors: str
    val_fraction: float
    test_fraction: float

    def level_ok(self, emotion: str, level: int | None) -> bool:
        allowed = self.levels.get(emotion, self.levels.get("default", ()))
        return level is None or level in allowed

    def is_main(self, actor: str) -> bool:
        return not self.main_actors or actor in self.main_actors


def protocol_names() -> list[str]:
    return sorted(p.stem for p in PROTOCOL_DIR.glob("*.yaml"))


def load_protocol(name: str) -> Protocol:
    """A protocol by name (configs/protocols/<name>.yaml) or path; one line naming the problem otherwise."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else PROTOCOL_DIR / f"{name}.yaml"
    if not path.is_file():
        raise UserError(f"protocol {name!r}: not found (named protocols: {', '.join(protocol_names())})")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict) or set(data) != _KEYS:
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ConfigError(f"{path}: a protocol has exactly the keys {', '.join(sorted(_KEYS))} (got {got})")
    if data["metric_actors"] not in ("others", "same"):
        raise ConfigError(f"{path}: metric_actors is 'others' or 'same' (got {data['metric_actors']!r})")
    return Protocol(
        path.stem,
        str(data["source"]),
        tuple(data["main_actors"] or ()),
        {str(k): tuple(v) for k, v in data["levels"].items()},
        tuple(data["test_actors"] or ()),
        data["metric_actors"],
        float(data["val_fraction"]),
        float(data["test_fraction"]),
    )


def held_out(n: int, fraction: float) -> int:
    """How many of n clips a fraction holds out: at least one when the fraction is positive and n >= 3."""
    if fraction <= 0 or n < 3:
        return 0
    return max(1, round(fraction * n))


def sentence_splits(clip_ids: list[str], val_fraction: float, test_fraction: float) -> dict[str, str]:
    """clip id -> train / val / test: the last ones by number are test, the ones before them validation."""
    ids = sorted(clip_ids)
    n_test, n_val = held_out(len(ids), test_fraction), held_out(len(ids), val_fraction)
    n_train = len(ids) - n_test - n_val
    return {c: "train" if i < n_train else "val" if i < n_train + n_val else "test" for i, c in enumerate(ids)}


def assign(protocol: Protocol, clips: list[dict]) -> list[dict]:
    """`split` and `metric_split` (and `protocol`) for clip entries with actor, emotion, level, clip_id."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for clip in clips:
        if protocol.level_ok(clip["emotion"], clip.get("level")):
            groups[(clip["actor"], clip["emotion"], clip.get("level"))].append(clip)
    by_sentence: dict[int, str] = {}
    for (actor, _, _), group in groups.items():
        test_fraction = protocol.test_fraction if protocol.is_main(actor) else 0.0  # metric-only actors: no test
        splits = sentence_splits([c["clip_id"] for c in group], protocol.val_fraction, test_fraction)
        by_sentence.update({id(c): splits[c["clip_id"]] for c in group})
    out = []
    for clip in clips:
        actor, sentence = clip["actor"], by_sentence.get(id(clip))
        split = metric = UNUSED
        if sentence is not None and protocol.is_main(actor):
            split = "test" if actor in protocol.test_actors else sentence
        if sentence is not None and protocol.metric_actors == "others":
            metric = UNUSED if protocol.is_main(actor) else sentence
        elif sentence is not None:
            metric = split if split in ("train", "val") else UNUSED
        out.append({**clip, "split": split, "metric_split": metric, "protocol": protocol.name})
    return out


def with_protocol(index: dict, protocol: Protocol) -> dict:
    """A clips.json index with the protocol's splits (in memory; the file is left as it is)."""
    check_mead_labels(index["clips"], "clips.json")
    clips = [{**c, "level": c.get("level") or level_of(c["dir"])} for c in index["clips"]]
    return {**index, "clips": assign(protocol, clips)}


def split_counts(clips: list[dict]) -> dict[str, dict[str, int]]:
    """{split or metric_split: {name: number of clips}} for a report."""
    counts: dict[str, dict[str, int]] = {"split": defaultdict(int), "metric_split": defaultdict(int)}
    for clip in clips:
        for key in counts:
            counts[key][clip_split(clip, key)] += 1
    return {k: dict(sorted(v.items())) for k, v in counts.items()}


def check_mead_labels(clips: list[dict], where: str) -> None:
    unlabeled = [c["dir"] for c in clips if not (c.get("actor") and c.get("emotion") and c.get("clip_id"))]
    if unlabeled:
        raise UserError(
            f"{where}: a protocol needs MEAD-layout clips (actor, emotion, clip number); "
            f"{len(unlabeled)} clip(s) have none, e.g. {unlabeled[0]}"
        )


@dataclass
class ProtocolConfig:
    data_dir: str = arg(help="processed root (with clips.json)")
    protocol: str = arg(help="a protocol name (configs/protocols/) or a YAML path")


@cli_entry
def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(
        ProtocolConfig, argv, prog="python -m preprocessing.protocols", doc=__doc__, positional=["data_dir"]
    )
    protocol = load_protocol(cfg.protocol)
    index = read_clip_index(cfg.data_dir)
    clips = with_protocol(index, protocol)["clips"]
    write_clip_index(cfg.data_dir, index["mode"], index["face_model"], index["basis_file"], clips)
    print(f"protocol {protocol.name} ({protocol.source}) applied to {cfg.data_dir}/clips.json")
    for key, counts in split_counts(clips).items():
        print(f"  {key}: " + ", ".join(f"{name} {n}" for name, n in counts.items()))


def level_of(rel_dir: str) -> int | None:
    """The MEAD level of a clip dir `<actor>/<emotion>/level_<k>/<NNN>` (None for other layouts)."""
    parts = Path(rel_dir).parts
    return int(parts[-2].split("_")[-1]) if len(parts) >= 2 and parts[-2].startswith("level_") else None


if __name__ == "__main__":
    main()
