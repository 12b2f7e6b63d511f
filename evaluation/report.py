"""The evaluation's report: metric names, the per-emotion summary over clips and runs (seeds), and the
markdown tables (docs/formats.md, "Evaluation output")."""

from __future__ import annotations

import numpy as np

from evaluation.metrics import mean_std

ROW_METRICS = (
    "expr_err",
    "face_found",
    "lip_r",
    "lip_r_params",
    "m_lmd",
    "emo_acc",
    "emo_acc_params",
    "fer_acc",
    "fer_src",
    "fer_real",
    "psnr",
    "ssim",
    "lpips",
    "csim",
    "lse_d",
    "lse_c",
)
DIST_METRICS = ("fad", "fid", "csim_emo")  # over all outputs of one emotion, not per clip
METRICS = ROW_METRICS + DIST_METRICS
LOWER_IS_BETTER = {"expr_err", "m_lmd", "lpips", "lse_d", "fad", "fid"}
REFERENCE = {"fer_src", "fer_real"}  # the judge on real clips (the source; the true target): not a method's score


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
            values = {m: _nanmean([r.get(m, float("nan")) for r in sel]) for m in ROW_METRICS}
            for m in DIST_METRICS:
                per_emotion = [d.get(m, float("nan")) for e, d in dists.items() if emotion in ("average", e)]
                values[m] = _nanmean(per_emotion)
            per_run.append(values)
        out[emotion] = {m: mean_std([x[m] for x in per_run]) for m in METRICS} | {"runs": len(per_run)}
    return out


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def markdown(report: dict) -> str:
    """Rows = methods, columns = the available metrics, one table per emotion and the average, per setting."""
    gone = report.get("not_available", {})
    shown = [m for m in METRICS if m not in gone]
    lines = [
        "# Evaluation report",
        "",
        f"Split {report.get('split', 'test')} of {report.get('protocol', 'clips.json')}.",
        "",
    ]
    for setting, methods in report["settings"].items():
        if setting in report.get("skipped", {}):
            lines += [f"## Setting: {setting}", "", f"Skipped: {report['skipped'][setting]}.", ""]
            continue
        emotions = sorted({e for s in methods.values() for e in s if e != "average"}) + ["average"]
        lines += [f"## Setting: {setting}", "", "Metrics: " + ", ".join(f"{m} ({_direction(m)})" for m in shown), ""]
        for emotion in emotions:
            lines += [f"### {emotion}", "", "| method | " + " | ".join(shown) + " |", "|---|" + "---|" * len(shown)]
            for name, summary in methods.items():
                if emotion not in summary:
                    continue
                cells = []
                for m in shown:
                    mean, std = summary[emotion][m]
                    cells.append("n/a" if not np.isfinite(mean) else f"{mean:.3f} ± {std:.3f}")
                lines.append(f"| {name} (runs: {summary[emotion]['runs']}) | " + " | ".join(cells) + " |")
            lines.append("")
    for name, why in gone.items():
        lines.append(f"- {name}: not available ({why})")
    lines.append("")
    return "\n".join(lines)


def _direction(metric: str) -> str:
    if metric in REFERENCE:
        return "reference: the judge on real clips"
    return f"{'lower' if metric in LOWER_IS_BETTER else 'higher'} is better"
