"""List clips of a processed root, one value per line: `python -m preprocessing.list_clips <data_dir> [key=value]`.

Selects the clips of `<data_dir>/clips.json` by split, emotion and actor (all when unset), keeps all of
them or, per actor, the first or last in sorted order of their dirs, and prints the distinct values of
`field` (unset ones left out), sorted. For scripts, e.g. the demo's held-out neutral clip per actor:

  python -m preprocessing.list_clips data/processed/toy_mead split=test emotion=neutral field=actor
  python -m preprocessing.list_clips data/processed/toy_mead split=test emotion=neutral actor=W001 per_actor=last
"""

from __future__ import annotations

from dataclasses import dataclass

from common.cli import parse_cli
from common.config import arg, choice
from common.errors import cli_entry
from common.formats import read_clip_index, select_clips

FIELDS = ("dir", "actor", "emotion", "clip_id", "split")


@dataclass
class ListClipsConfig:
    data_dir: str = arg(help="processed root (with clips.json)")
    split: str = arg("", "only clips of this split (default: every split)")
    emotion: str = arg("", "only clips of this emotion (default: every emotion)")
    actor: str = arg("", "only clips of this actor (default: every actor)")
    per_actor: str = choice("all", ["all", "first", "last"], "all clips, or per actor the first / last by dir")
    field: str = choice("dir", FIELDS, "what to print of each clip")


def list_clips(index: dict, cfg: ListClipsConfig) -> list[str]:
    """The sorted distinct values of `cfg.field` over the clips of a clips.json that `cfg` selects."""
    clips = sorted(
        select_clips(index, cfg.split or None, cfg.emotion or None, cfg.actor or None), key=lambda c: c["dir"]
    )
    if cfg.per_actor != "all":
        by_actor: dict[str, dict] = {}
        for clip in clips if cfg.per_actor == "last" else reversed(clips):
            by_actor[clip["actor"]] = clip  # the last one written wins
        clips = list(by_actor.values())
    return sorted({str(clip[cfg.field]) for clip in clips if clip[cfg.field] is not None})


@cli_entry
def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(
        ListClipsConfig, argv, prog="python -m preprocessing.list_clips", doc=__doc__, positional=["data_dir"]
    )
    for value in list_clips(read_clip_index(cfg.data_dir), cfg):
        print(value)


if __name__ == "__main__":
    main()
