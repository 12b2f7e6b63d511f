"""The evaluation's report: the per-emotion summary over clips and runs (seeds) and the markdown tables
(docs/formats.md, "Evaluation output"); the columns are the metrics of `evaluation.registry`.

Averages follow `common.image_metrics.mean_measured`: NaN (not measured) is skipped, and an output whose face
was lost (`face_lost`) counts at its metric's worst value (`Metric.failed`) in lip_r, m_lmd and emo_acc, so
every method is averaged over all of its outputs and destroying a face never scores better than keeping it.
"""

from __future__ import annotations

import numpy as np

from common.image_metrics import mean_measured, mean_std
from evaluation.registry import BY_NAME, DIST_METRICS, NAMES, ROW_METRICS

METRICS = NAMES  # the report's columns, in the registry's order


def run_values(rows: list[dict], metric: str) -> float:
    """One run's mean of a row metric over its outputs `rows`, failed outputs at the metric's worst value."""
    m = BY_NAME[metric]
    values = [r.get(metric, float("nan")) for r in rows]
    if m.failed is None:
        return mean_measured(values)
    return mean_measured(values, [r.get("face_lost", 0.0) > 0 for r in rows], m.failed)


def summarise(rows_per_run: list[list[dict]], dists_per_run: list[dict] | None = None) -> dict:
    """Per emotion and on average: mean over clips within a run, then mean ± std over runs (seeds).
    Distribution metrics come per run and emotion (`dists_per_run`); their average is the mean over emotions."""
    dists_per_run = dists_per_run or [{} for _ in rows_per_run]
    emotions = sorted({r["emotion"] for rows in rows_per_run for r in rows})
    out = {}
    for emotion in [*emotions, "average"]:
        per_run = []
        for rows, dists in zip(rows_per_run, dists_per_run, strict=True):
            sel = [r for r in rows if emotion == "average" or r["emotion"] == emotion]
            if not sel:
                continue
            values = {m: run_values(sel, m) for m in ROW_METRICS}
            for m in DIST_METRICS:
                per_emotion = [d.get(m, float("nan")) for e, d in dists.items() if emotion in ("average", e)]
                values[m] = mean_measured(per_emotion)
            per_run.append(values)
        out[emotion] = {m: mean_std([x[m] for x in per_run]) for m in METRICS} | {"runs": len(per_run)}
    return out


def coverage(rows_per_run: list[list[dict]], reference: list[dict]) -> str:
    """What differs between each run's outputs (source clip, target clip) and the reference rows' ("": nothing)."""
    want = {(r["clip"], r["target"]) for r in reference}
    notes = []
    for k, rows in enumerate(rows_per_run):
        got = {(r["clip"], r["target"]) for r in rows}
        if got != want:
            notes.append(f"run {k + 1}: {len(got & want)} of the reference rows' {len(want)} outputs")
    return "; ".join(notes)


def markdown(report: dict) -> str:
    """Rows = methods, columns = the available metrics, one table per emotion and the average, per setting."""
    gone = report.get("not_available", {})
    shown = [m for m in METRICS if m not in gone]
    lines = [
        "# Evaluation report",
        "",
        f"Split {report.get('split', 'test')} of {report.get('protocol', 'clips.json')}. An output whose face was "
        "lost (face_lost: their share) counts at the worst value in "
        + ", ".join(f"{m.name} ({m.failed:g})" for m in map(BY_NAME.get, METRICS) if m.failed is not None)
        + ".",
        "",
    ]
    for setting, methods in report["settings"].items():
        if setting in report.get("skipped", {}):
            lines += [f"## Setting: {setting}", "", f"Skipped: {report['skipped'][setting]}.", ""]
            continue
        emotions = sorted({e for s in methods.values() for e in s if e != "average"}) + ["average"]
        lines += [f"## Setting: {setting}", "", "Metrics: " + ", ".join(f"{m} ({BY_NAME[m].direction})" for m in shown)]
        for key, note in report.get("coverage", {}).items():
            if key.startswith(f"{setting}/"):
                lines.append(f"- {key.split('/', 1)[1]} covers other outputs than the reference rows: {note}")
        lines.append("")
        for emotion in emotions:
            lines += [f"### {emotion}", "", "| method | " + " | ".join(shown) + " |", "|---|" + "---|" * len(shown)]
            for name, summary in methods.items():
                if emotion not in summary:
                    continue
                cells = []
                for m in shown:
                    mean, std = summary[emotion][m]
                    cells.append("n/a" if np.isnan(mean) else f"{mean:.3f} ± {std:.3f}")
                lines.append(f"| {name} (runs: {summary[emotion]['runs']}) | " + " | ".join(cells) + " |")
            lines.append("")
    for name, why in gone.items():
        lines.append(f"- {name}: not available ({why})")
    lines.append("")
    return "\n".join(lines)
