"""A tiny evaluation run in-process (a manipulator that keeps the expression, the warp renderer, the tiny
classifier) on processed_tiny: the resume cache recomputes what a replaced file changes and nothing else, and
an output whose face is destroyed counts as failed instead of dropping out of the averages."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from common.checkpoint import imported_state, save_imported_run
from common.formats import Clip
from common.video import probe_video, write_video
from evaluation import output as evaluation_output
from evaluation import reference as evaluation_reference
from evaluation import run as evaluation_run
from evaluation.classifier import EmotionClassifier, train
from evaluation.jobs import parse_methods
from evaluation.output import Output, measure
from evaluation.registry import BY_NAME, ROW_METRICS
from evaluation.report import markdown, summarise
from evaluation.run import Evaluator, evaluate
from manipulator.expr_norm import Normaliser
from manipulator.models import build_manipulator

CLASSIFIER_METRICS = {m for m in ROW_METRICS if "classifier" in BY_NAME[m].nets}


def identity_run(data: Path, out: Path) -> Path:
    """An untrained tiny manipulator whose residual generator outputs nothing: the edit keeps the expression
    (an honest method that never loses the face)."""
    norm = Normaliser.from_index(data)
    emotions = ["happy", "neutral"]
    nets = build_manipulator(len(norm.mean), len(emotions), "tiny", residual=True)
    last = nets["generator"].post[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    config = {"data_dir": str(data), "size": "tiny", "residual_generator": True, "seq_len_frames": 10}
    extra = {"expr_mean": norm.mean.tolist(), "expr_std": norm.std.tolist(), "emotions": emotions}
    save_imported_run(out, imported_state({k: v.state_dict() for k, v in nets.items()}, config, extra))
    return out


@pytest.fixture(scope="module")
def tiny_eval(processed_tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_eval")
    train(processed_tiny, root / "clf", steps=50)
    return root, identity_run(processed_tiny, root / "identity")


def _evaluate(
    root: Path, run: Path, monkeypatch, symmetric: bool = True, edit_from: str = "neutral"
) -> tuple[dict, Counter, Evaluator]:
    """One evaluation (label setting, one output) into root/out; counts renders and re-tracks."""
    calls: Counter = Counter()

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    for module in (evaluation_run, evaluation_reference):
        monkeypatch.setattr(module, "edit_video", counted("render", module.edit_video))
    monkeypatch.setattr(evaluation_output, "retrack", counted("retrack", evaluation_output.retrack))
    clf = EmotionClassifier.load(root / "clf")
    ev = Evaluator(Path("warp"), clf, root / "out", "test", max_clips=1, symmetric=symmetric, edit_from=edit_from)
    report = evaluate(ev, parse_methods([f"identity={run}"]), ["label"])
    monkeypatch.undo()
    return report, calls, ev


def _cache_files(report: dict) -> dict[str, Path]:
    """Each row's cache file (`<video>.json`), by "<setting>/<method or ref: kind>"."""
    rows = {k: v[0] if "/ref: " in k else v[0][0] for k, v in report["rows"].items()}
    return {k: Path(r["video"]).with_suffix(".json") for k, r in rows.items()}


def test_a_replaced_classifier_recomputes_its_values_only(tiny_eval, monkeypatch):
    root, run = tiny_eval
    first, calls, _ = _evaluate(root, run, monkeypatch)
    files = _cache_files(first)
    assert set(files) == {"label/identity", "label/ref: source", "label/ref: reconstruction", "label/ref: target"}
    assert calls == {"render": 2, "retrack": 4}  # the edit and the reconstruction; every row's video re-tracked
    saved = {k: json.loads(f.read_text()) for k, f in files.items()}
    mtimes = {k: f.stat().st_mtime_ns for k, f in files.items()}
    videos = {k: Path(s["row"]["video"]).stat().st_mtime_ns for k, s in saved.items()}
    # nothing changed: every row from the cache, no file rewritten
    again, calls, _ = _evaluate(root, run, monkeypatch)
    assert calls == {} and {k: f.stat().st_mtime_ns for k, f in files.items()} == mtimes
    np.testing.assert_equal(again["rows"], first["rows"])
    # the classifier replaced in the same folder (other weights: another file content)
    _replace_weights(root / "clf" / "classifier.pt")
    third, calls, ev = _evaluate(root, run, monkeypatch)
    assert calls == {"retrack": 4}  # emo_acc reads the re-tracked video again; nothing is rendered again
    for key, f in files.items():
        now = json.loads(f.read_text())
        assert f.stat().st_mtime_ns != mtimes[key], key  # the row recomputed its classifier values
        assert Path(now["row"]["video"]).stat().st_mtime_ns == videos[key], key  # the video was kept
        changed = {n for n in now["stamps"] if now["stamps"][n] != saved[key]["stamps"][n]}
        assert changed == CLASSIFIER_METRICS, key
        for name in set(ROW_METRICS) - CLASSIFIER_METRICS:  # the others stayed cached, value for value
            np.testing.assert_equal(now["row"][name], saved[key]["row"][name], err_msg=f"{key} {name}")
    assert ev.stamps["emo_acc"] != ev.stamps["lip_r"]


def test_raw_and_symmetric_edits_are_separate_outputs(tiny_eval, monkeypatch):
    """The evaluation measures the edit as the pipeline makes it (symmetric); the raw output is another output
    (its own cache key, rendered once), and the reference rows are shared."""
    root, run = tiny_eval
    sym, _, _ = _evaluate(root, run, monkeypatch)
    raw, calls, _ = _evaluate(root, run, monkeypatch, symmetric=False)
    assert calls["render"] == 1  # the method's output only
    assert _cache_files(raw)["label/identity"] != _cache_files(sym)["label/identity"]
    for ref in ("source", "reconstruction", "target"):
        assert _cache_files(raw)[f"label/ref: {ref}"] == _cache_files(sym)[f"label/ref: {ref}"]
    again, calls, _ = _evaluate(root, run, monkeypatch, symmetric=False)
    assert calls == {}
    np.testing.assert_equal(again["rows"], raw["rows"])
    # NED's raw edit (--edit-from none) is another output too
    ned, calls, _ = _evaluate(root, run, monkeypatch, edit_from="none")
    assert calls["render"] == 1
    assert len({_cache_files(r)["label/identity"] for r in (sym, raw, ned)}) == 3


def _replace_weights(path: Path) -> None:
    """The classifier's file replaced by one with other weights (the same network, slightly moved)."""
    ckpt = torch.load(path, weights_only=True)
    gen = torch.Generator().manual_seed(7)
    ckpt["state"] = {k: v + 0.01 * torch.randn(v.shape, generator=gen) for k, v in ckpt["state"].items()}
    torch.save(ckpt, path)


def test_a_face_destroying_output_never_scores_better(tiny_eval, monkeypatch, tmp_path):
    """An output whose frames are blank grey (a renderer that destroys the face) has no lip or emotion reading:
    its row says face_lost 1 and NaN, and the averages count it at the worst value, below the honest output."""
    root, run = tiny_eval
    report, _, ev = _evaluate(root, run, monkeypatch)
    honest = report["rows"]["label/identity"][0][0]
    assert honest["face_lost"] == 0.0 and honest["lip_r"] > 0.5  # the edit keeps the expression: the lips follow
    job = ev.jobs(str(run), "identity", "label")[0]
    info = probe_video(honest["video"])
    grey = tmp_path / "grey.mp4"
    frame = np.full((info.height, info.width, 3), 128, np.uint8)
    write_video(grey, (frame for _ in range(info.n_frames)), info.fps, audio_from=honest["video"])
    source = Clip(job.inputs.root / job.source)
    grey_face = np.full((source.meta.crop_size,) * 2 + (3,), 128, np.uint8)
    # the honest edit, rendered as a grey face
    destroyed = Output(ev, job, grey, lambda: source.face()["expr"], lambda: [grey_face] * source.n_frames)
    row, _, _ = measure(destroyed, ev.stamps)
    assert row["face_lost"] == 1.0 and row["face_found"] == 0.0
    assert np.isnan(row["lip_r"]) and np.isnan(row["m_lmd"]) and np.isnan(row["emo_acc"])  # not measured…
    fair, cheat = summarise([[honest]])["average"], summarise([[row]])["average"]
    assert cheat["lip_r"][0] == -1.0 and cheat["m_lmd"][0] == pytest.approx(256 * np.sqrt(2))  # …counted worst
    assert cheat["emo_acc"][0] == 0.0 and cheat["face_lost"][0] == 1.0 and fair["face_lost"][0] == 0.0
    assert cheat["lip_r"][0] < fair["lip_r"][0] and cheat["m_lmd"][0] > fair["m_lmd"][0]
    assert cheat["emo_acc"][0] <= fair["emo_acc"][0]
    # destroying the face of one output out of two never lifts the average above keeping it
    mixed = summarise([[honest, row]])["average"]
    assert mixed["lip_r"][0] == pytest.approx((honest["lip_r"] - 1.0) / 2) and mixed["face_lost"][0] == 0.5
    md = markdown({"settings": {"label": {"identity": summarise([[honest]]), "grey": summarise([[row]])}}})
    header = next(line for line in md.splitlines() if line.startswith("| method"))
    average = md.split("### average")[1].splitlines()
    column = [c.strip() for c in header.split("|")].index("face_lost")
    grey_line = next(line for line in average if line.startswith("| grey"))
    assert grey_line.split("|")[column].strip() == "1.000 ± 0.000"  # its share of lost faces, reported
