"""The evaluation report's pictures (evaluation/figures.py) from a report of known values."""

from __future__ import annotations

import re

import matplotlib.image as mpimg

from evaluation.figures import emotions_of, methods_of, write_figures


def _summary(value: float) -> dict:
    return {"angry": {"fer_acc": [value, 0.0], "expr_err": [1 - value, 0.0], "lip_r": [0.9, 0.0]}, "runs": 1}


def test_plots_and_the_comparison_page(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    row = {"clip": "W001/neutral/level_1/009", "emotion": "angry"}
    report = {
        "settings": {
            "same_id": {
                "ref: source": _summary(0.0),
                "ref: target": _summary(0.6),
                "ned": _summary(0.1),
                "scmcl": _summary(0.3),
            }
        },
        "rows": {
            "same_id/ref: source": [row | {"video": str(videos / "src.mp4")}],
            "same_id/ref: target": [row | {"video": str(videos / "tgt.mp4")}],
            "same_id/ned": [
                [row | {"video": str(videos / "ned_s1.mp4")}],
                [row | {"video": str(videos / "ned_s2.mp4")}],
            ],
            "same_id/scmcl": [[row | {"video": str(videos / "scmcl_s1.mp4")}]],
        },
    }
    table = report["settings"]["same_id"]
    assert methods_of(table) == ["ned", "scmcl"] and emotions_of(table) == ["angry"]
    paths = write_figures(report, tmp_path)
    assert [p.name for p in paths] == ["fer_acc_same_id.png", "lip_r_vs_expr_err_same_id.png", "compare.html"]
    for png in paths[:2]:
        image = mpimg.imread(png)
        assert image.shape[0] > 300 and image.std() > 0.05  # a drawn figure, not a blank canvas
    page = paths[2].read_text()
    order = re.findall(r"<video src='([^']+)'", page)
    assert order == ["videos/src.mp4", "videos/ned_s1.mp4", "videos/scmcl_s1.mp4", "videos/tgt.mp4"]
    assert "<th>source</th><th>ned</th><th>scmcl</th><th>target</th>" in page
