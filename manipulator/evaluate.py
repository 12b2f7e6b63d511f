"""Evaluate manipulator runs on held-out sentences where the true target-emotion rendition exists:

  python -m manipulator.evaluate --runs runs/manipulator/ned_baseline runs/manipulator/scmcl [--split test]

For every neutral clip of the split and every other emotion with the same sentence (pairs.npz), the clip is
edited to that emotion (label-driven) and compared, along the DTW path, with the true rendition:
- mouth: Pearson correlation of the mouth-opening channel, source vs edited (speech preserved);
- err_edit / err_source: mean squared distance of the other channels (normalised) to the target,
  for the edited and for the unedited source;
- intensity sweep: err at intensity 0, 0.25, ..., 1 and the deviation of intensity 0 from the source.

The edits are the manipulator's own output (`--edit-from none`, NED's edit: these numbers describe the network,
as its training validation does); `--edit-from neutral` scores the edits the pipeline makes (the source plus the
change from the neutral style; intensity 0 is then the source by construction).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.cli import parse_cli
from common.config import arg, choice
from common.errors import UserError, cli_entry
from common.formats import Clip, expression_channels, mouth_channel, read_clip_index
from common.fsutil import atomic_write_text
from manipulator.edit import EDIT_FROM, Editor
from preprocessing.pairs import load_pairs, pair_path

INTENSITIES = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass
class EvaluateConfig:
    runs: list[str] = arg(help="manipulator run dirs (--runs A B …)")
    data: str = arg("", "preprocessed root (default: each run's data_dir)")
    split: str = arg("test", "split of the neutral source clips")
    out: str = arg("", "write the report as JSON here")
    edit_from: str = choice("none", EDIT_FROM, "the edits' starting style (manipulator.edit --edit-from)")


def _err(a: np.ndarray, b: np.ndarray) -> float:
    return float(((expression_channels(a) - expression_channels(b)) ** 2).mean())


def evaluate_run(run: str, data_dir: Path | None, split: str, edit_from: str = "none") -> dict:
    editor = Editor.load(run)
    return paired_scores(editor, data_dir or editor.data_dir, split, edit_from=edit_from)


def paired_scores(
    editor: Editor, root: Path, split: str, intensities: tuple[float, ...] = INTENSITIES, edit_from: str = "none"
) -> dict:
    """Per emotion and on average: mouth r, err_edit, err_source, the error at each of `intensities` (sweep) and
    the deviation at intensity 0 (zero_dev, when 0 is among them) of `editor`'s edits of the split's neutral
    clips against their same-sentence renditions (see the module doc). Also what training validates with."""
    intensities = tuple(sorted({*intensities, 1.0}))
    index = read_clip_index(root)
    split_of = {c["dir"]: c["split"] for c in index["clips"]}
    pairs = load_pairs(root / "pairs.npz")
    per_emotion: dict[str, list[dict]] = {}
    for p in range(len(pairs["src"])):
        src_dir, dst_dir, emotion = str(pairs["src"][p]), str(pairs["dst"][p]), str(pairs["emotion"][p])
        if split_of.get(src_dir) != split or emotion not in editor.emotions:
            continue
        source = Clip(root / src_dir).face()["expr"]
        target = Clip(root / dst_dir).face()["expr"]
        a, b = pair_path(pairs, p)
        norm = editor.norm.forward
        style = editor.target_style(emotion)
        sweep = {alpha: editor.edit(source, style, alpha, edit_from) for alpha in intensities}
        edited = sweep[1.0]
        per_emotion.setdefault(emotion, []).append(
            {
                "mouth": float(np.corrcoef(mouth_channel(source), mouth_channel(edited))[0, 1]),
                "err_edit": _err(norm(edited)[a], norm(target)[b]),
                "err_source": _err(norm(source)[a], norm(target)[b]),
                "sweep": [_err(norm(sweep[alpha])[a], norm(target)[b]) for alpha in intensities],
                "zero_dev": float(np.abs(norm(sweep[0.0]) - norm(source)).mean()) if 0.0 in sweep else float("nan"),
            }
        )
    if not per_emotion:
        raise UserError(f"{root}: no neutral clip of split {split!r} with same-sentence pairs")
    summary = {}
    for emotion, rows in sorted(per_emotion.items()):
        summary[emotion] = {
            "n": len(rows),
            "mouth": float(np.mean([r["mouth"] for r in rows])),
            "err_edit": float(np.mean([r["err_edit"] for r in rows])),
            "err_source": float(np.mean([r["err_source"] for r in rows])),
            "sweep": np.mean([r["sweep"] for r in rows], axis=0).round(4).tolist(),
            "zero_dev": float(np.mean([r["zero_dev"] for r in rows])),
        }
    keys = ("mouth", "err_edit", "err_source", "zero_dev")
    summary["average"] = {k: float(np.mean([v[k] for v in summary.values()])) for k in keys}
    summary["average"]["sweep"] = (
        np.mean([v["sweep"] for k, v in summary.items() if k != "average"], axis=0).round(4).tolist()
    )
    return summary


@cli_entry
def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(EvaluateConfig, argv, prog="python -m manipulator.evaluate", doc=__doc__)
    data = Path(cfg.data) if cfg.data else None
    report = {run: evaluate_run(run, data, cfg.split, cfg.edit_from) for run in cfg.runs}
    for run, summary in report.items():
        print(f"\n{run}")
        print(f"  {'emotion':<10} {'mouth r':>8} {'err edit':>9} {'err src':>9} {'int0 dev':>9}  sweep err (0 .. 1)")
        for emotion, s in summary.items():
            sweep = " ".join(f"{v:.3f}" for v in s["sweep"])
            row = f"{s['mouth']:8.3f} {s['err_edit']:9.4f} {s['err_source']:9.4f} {s['zero_dev']:9.4f}"
            print(f"  {emotion:<10} {row}  {sweep}")
    if cfg.out:
        atomic_write_text(cfg.out, json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
