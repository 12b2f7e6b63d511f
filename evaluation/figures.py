"""The evaluation report's pictures: plots of its tables and a page of its videos side by side.

Written next to `report.md` by `python -m evaluation.run` (and so by `make compare`), from `report.json` alone:

- `fer_acc_<setting>.png`: the real-face judge's accuracy per emotion and method (bars; the reference rows
  `ref: source` and `ref: target` drawn as the floor and the ceiling);
- `lip_r_vs_expr_err_<setting>.png`: lip sync against expression error, one point per method and emotion
  (up and to the left is better: the lips kept, the target expression reached);
- `compare.html`: per setting, one row per edited clip and emotion: the source | each method (first run) |
  the target clip (the same sentence spoken in that emotion), as looping videos (paths relative to the page).
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from common.fsutil import atomic_write_text  # noqa: E402

REFERENCES = ("ref: source", "ref: target")  # the floor and the ceiling drawn with the methods


def methods_of(table: dict) -> list[str]:
    """A setting's methods (its rows that are not reference rows), in report order."""
    return [m for m in table if not m.startswith("ref: ")]


def _mean(table: dict, method: str, emotion: str, metric: str) -> float:
    value = table.get(method, {}).get(emotion, {}).get(metric, [np.nan])[0]
    return float(value) if value is not None else np.nan


def emotions_of(table: dict) -> list[str]:
    """The emotions of a setting's table (every row's keys but the run count), in report order."""
    seen: list[str] = []
    for rows in table.values():
        seen += [e for e in rows if isinstance(rows[e], dict) and e not in seen]
    return seen


def fer_plot(setting: str, table: dict, out: Path) -> Path:
    """Bars of fer_acc per emotion (groups) and method (bars), the reference rows as lines."""
    emotions, methods = emotions_of(table), methods_of(table)
    x, width = np.arange(len(emotions)), 0.8 / max(1, len(methods))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(emotions) + 2), 3.6), dpi=110)
    for k, method in enumerate(methods):
        means = [_mean(table, method, e, "fer_acc") for e in emotions]
        ax.bar(x - 0.4 + width * (k + 0.5), means, width, label=method)
    for ref, style in zip(REFERENCES, (":", "--"), strict=True):
        if ref in table:
            values = [_mean(table, ref, e, "fer_acc") for e in emotions]
            ax.hlines(values, x - 0.45, x + 0.45, colors="black", linestyles=style, label=ref.replace("ref: ", ""))
    ax.set_xticks(x, emotions)
    ax.set_ylim(0, 1)
    ax.set_ylabel("fer_acc (judge: share of frames)")
    ax.set_title(f"{setting}: the real-face judge names the target emotion")
    ax.legend(fontsize=7, ncols=2)
    fig.tight_layout()
    path = out / f"fer_acc_{setting}.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def lip_plot(setting: str, table: dict, out: Path) -> Path:
    """Scatter of lip_r (y) against expr_err (x), one marker per method, one point per emotion."""
    fig, ax = plt.subplots(figsize=(5.2, 4.0), dpi=110)
    for method in [*methods_of(table), *[r for r in REFERENCES if r in table]]:
        points = [(_mean(table, method, e, "expr_err"), _mean(table, method, e, "lip_r")) for e in emotions_of(table)]
        points = [p for p in points if np.isfinite(p).all()]
        if points:
            xs, ys = zip(*points, strict=True)
            marker = "x" if method.startswith("ref: ") else "o"
            ax.scatter(xs, ys, label=method.replace("ref: ", ""), marker=marker, s=28)
    ax.set_xlabel("expr_err (to the target clip; lower is better)")
    ax.set_ylabel("lip_r (lips kept; higher is better)")
    ax.set_title(f"{setting}: lip sync against the edit")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / f"lip_r_vs_expr_err_{setting}.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def compare_page(report: dict, out: Path) -> Path:
    """compare.html: per setting, source | methods | target videos of every edited clip and emotion."""
    parts = [
        "<!doctype html><meta charset='utf-8'><title>Method comparison</title>",
        "<style>body{font-family:sans-serif}td{vertical-align:top;padding:2px}video{width:220px}"
        "th{font-weight:normal;text-align:left}</style>",
        "<h1>Method comparison</h1><p>Each row: the source clip, every method's edit (its first run) and the "
        "target clip (the same sentence spoken in the target emotion). Videos loop, muted; right-click to unmute.</p>",
    ]
    for setting, table in report["settings"].items():
        methods = methods_of(table)
        columns = ["ref: source", *methods, "ref: target"]
        videos: dict[tuple[str, str], dict[str, str]] = {}
        for column in columns:
            rows = report["rows"].get(f"{setting}/{column}", [])
            rows = rows[0] if rows and isinstance(rows[0], list) else rows  # a method: its runs' rows; the first
            for row in rows:
                rel = os.path.relpath(Path(row["video"]).resolve(), out.resolve())
                videos.setdefault((row["clip"], row["emotion"]), {})[column] = rel
        head = "".join(f"<th>{html.escape(c.replace('ref: ', ''))}</th>" for c in columns)
        parts.append(f"<h2>{html.escape(setting)}</h2><table><tr><th>clip → emotion</th>{head}</tr>")
        for (clip, emotion), cells in sorted(videos.items()):
            row = "".join(
                f"<td><video src='{html.escape(cells[c])}' autoplay loop muted playsinline></video></td>"
                if c in cells
                else "<td>—</td>"
                for c in columns
            )
            parts.append(f"<tr><td>{html.escape(clip)}<br>→ {html.escape(emotion)}</td>{row}</tr>")
        parts.append("</table>")
    path = out / "compare.html"
    atomic_write_text(path, "\n".join(parts) + "\n")
    return path


def write_figures(report: dict, out: Path) -> list[Path]:
    """Every picture of the report (plots per setting, the comparison page); their paths."""
    paths = []
    for setting, table in report["settings"].items():
        if methods_of(table) and emotions_of(table):
            paths += [fer_plot(setting, table, out), lip_plot(setting, table, out)]
    return [*paths, compare_page(report, out)]
