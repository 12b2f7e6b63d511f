"""Split protocols for MEAD-layout data: which clips each role uses, from the protocol files in configs/protocols."""

from __future__ import annotations

import json

import pytest
from conftest import run_module

from common.errors import ConfigError, UserError
from common.formats import read_clip_index, select_clips
from preprocessing.protocols import (
    assign,
    load_protocol,
    protocol_names,
    sentence_splits,
    split_counts,
    with_protocol,
)

MAIN = ["M003", "M009", "W029", "M012", "M030", "W015"]
EMOTIONS = ["neutral", "angry", "disgusted", "fear", "happy", "sad", "surprised"]


def mead_clips(actors, levels=(1, 3), n=10):
    """Clip entries as a MEAD root gives them: neutral at level 1 only, the other emotions at every level."""
    return [
        {
            "dir": f"{a}/{e}/level_{k}/{i:03d}",
            "actor": a,
            "emotion": e,
            "level": k,
            "clip_id": f"{i:03d}",
            "split": "train",
        }
        for a in actors
        for e in EMOTIONS
        for k in ((1,) if e == "neutral" else levels)
        for i in range(1, n + 1)
    ]


def by(clips, **want):
    return [c for c in clips if all(c[k] == v for k, v in want.items())]


def test_named_protocols_exist_and_say_where_they_come_from():
    assert protocol_names() == ["eat", "scmcl", "sentence", "toy_holdout_w001_w002"]
    for name in protocol_names():
        assert load_protocol(name).source


def test_sentence_split_holds_out_the_last_clips():
    assert sentence_splits([f"{i:03d}" for i in range(10, 0, -1)], 0.1, 0.1) == {
        **{f"{i:03d}": "train" for i in range(1, 9)},
        "009": "val",
        "010": "test",
    }
    assert set(sentence_splits(["001", "002", "003"], 0.1, 0.1).values()) == {"train", "val", "test"}
    assert set(sentence_splits(["001", "002"], 0.1, 0.1).values()) == {"train"}  # too few to hold any out


def test_scmcl_protocol():
    clips = assign(load_protocol("scmcl"), mead_clips(MAIN + ["W009", "M023"]))
    # manipulator / renderer / evaluation: the six actors, neutral level 1, the emotions at level 3
    used = [c for c in clips if c["split"] != "unused"]
    assert {c["actor"] for c in used} == set(MAIN)
    assert {(c["emotion"] == "neutral", c["level"]) for c in used} == {(True, 1), (False, 3)}
    assert {c["split"] for c in by(clips, actor="M003", emotion="happy", level=3)} == {"train", "val", "test"}
    assert by(clips, actor="M003", emotion="happy", clip_id="010")[-1]["split"] == "test"
    # the metric: only the other actors, train and validation
    metric = [c for c in clips if c["metric_split"] != "unused"]
    assert {c["actor"] for c in metric} == {"W009", "M023"} and {c["metric_split"] for c in metric} == {"train", "val"}
    assert all(c["split"] == "unused" for c in metric) and all(c["protocol"] == "scmcl" for c in clips)
    counts = split_counts(clips)
    # 8 actors x (10 neutral + 6 emotions x 2 levels x 10) clips; 6 x 7 groups of 10 used: 8 train, 1 val, 1 test
    assert counts["split"] == {"test": 42, "train": 336, "unused": 1040 - 420, "val": 42}
    assert counts["metric_split"] == {"train": 2 * 7 * 9, "unused": 1040 - 140, "val": 2 * 7}


def test_eat_and_sentence_protocols():
    clips = assign(load_protocol("eat"), mead_clips(["M003", "W009", "M012"]))
    assert {c["split"] for c in by(clips, actor="M003")} == {"test"}
    assert {c["metric_split"] for c in by(clips, actor="W009")} == {"unused"}  # test actors never train anything
    assert {c["split"] for c in by(clips, actor="M012")} == {"train", "val"}
    assert by(clips, actor="M012", emotion="sad", level=1)[-1]["split"] == "val"  # every level
    clips = assign(load_protocol("sentence"), mead_clips(["M003"]))
    assert {c["split"] for c in clips} == {"train", "val", "test"}
    assert all(c["metric_split"] == (c["split"] if c["split"] != "test" else "unused") for c in clips)


def test_bad_protocols_are_one_line(tmp_path):
    with pytest.raises(UserError, match="named protocols: eat, scmcl, sentence"):
        load_protocol("nope")
    bad = tmp_path / "mine.yaml"
    bad.write_text("main_actors: []\n")
    with pytest.raises(ConfigError, match="mine.yaml: a protocol has exactly the keys"):
        load_protocol(str(bad))


def test_protocol_applied_to_a_processed_root(processed_tiny, tmp_path, python_exe, python_env):
    """The command rewrites clips.json's splits; the metric's role reads metric_split."""
    root = tmp_path / "copy"
    root.mkdir()
    index = read_clip_index(processed_tiny)
    (root / "clips.json").write_text(json.dumps(index))
    out = run_module(python_exe, python_env, "preprocessing.protocols", root, "protocol=sentence").stdout
    assert "protocol sentence" in out and "split: test" in out
    new = read_clip_index(root)
    assert {c["protocol"] for c in new["clips"]} == {"sentence"}
    assert select_clips(new, "test") and not select_clips(new, "test", key="metric_split")
    assert len(select_clips(new, "train", key="metric_split")) == len(select_clips(new, "train"))


def test_evaluation_takes_a_protocols_splits_in_memory():
    index = {"mode": "train", "face_model": "mesh", "basis_file": "x", "clips": mead_clips(["M003", "M023"], (3,), 5)}
    new = with_protocol(index, load_protocol("scmcl"))
    assert {c["split"] for c in index["clips"]} == {"train"}  # the input is left as it is
    assert {c["actor"] for c in select_clips(new, "test")} == {"M003"}
    assert [c["clip_id"] for c in select_clips(new, "test", emotion="neutral")] == ["005"]
    with pytest.raises(UserError, match="needs MEAD-layout clips"):
        with_protocol(
            {
                **index,
                "clips": [{"dir": "video1", "actor": "video1", "emotion": None, "clip_id": None, "split": "train"}],
            },
            load_protocol("scmcl"),
        )


def test_the_toy_fold_trains_on_two_actors_and_holds_the_panels_two_faces_out():
    """configs/protocols/toy_holdout_w001_w002.yaml on a 4-actor toy set (10 sentences, level 3): M003 and W004
    split as toy MEAD splits itself (6 train, 2 val, 2 test sentences per emotion), W001 and W002 unused."""
    from preprocessing.toy_mead.build import dataset_split

    out = assign(load_protocol("toy_holdout_w001_w002"), mead_clips(["W001", "W002", "M003", "W004"], levels=(3,)))
    assert {c["split"] for c in out if c["actor"] in ("W001", "W002")} == {"unused"}
    toy = dataset_split(10)
    for clip in (c for c in out if c["actor"] in ("M003", "W004")):
        assert clip["clip_id"] in toy[clip["split"]] and clip["metric_split"] in (clip["split"], "unused")
