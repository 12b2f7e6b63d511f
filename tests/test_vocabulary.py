"""Emotion names and face-parameter channels have one spelling each (common.emotions, common.formats):
- no emotion-name string literal in package code outside common/emotions.py (docstrings, comments and config
  YAMLs may name emotions), read from the source with `ast`, and the check catches a planted one;
- the vocabularies agree with what uses them: NED's order (its checkpoints' heads), the FER2013 judge's
  outputs, AffectNet-7's labels, toy MEAD's emotions and the manipulator's default.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import torch
from test_structure import LAYERS

from common.emotions import AFFECTNET7, FER2013, MEAD, NED, NED_EMOTIONS, NEUTRAL, VOCABULARIES, vocabulary
from common.formats import MOUTH_CHANNEL, expression_channels, mouth_channel

REPO = Path(__file__).resolve().parents[1]
PACKAGES = LAYERS  # every layered package (tests/test_structure.py)
VOCABULARY_MODULE = Path("common/emotions.py")
# every spelling of an emotion class in any vocabulary (ours and the judges')
NAMES = {c for v in VOCABULARIES.values() for c in v.classes} | {c for v in VOCABULARIES.values() for c in v.ours}


def docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring constants of a module and its classes and functions."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def emotion_literals(root: Path) -> list[str]:
    """`path:line: 'name'` for every string literal of package code that is an emotion name (any case),
    outside the vocabulary module; docstrings are text, not names, and are left alone."""
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root)
            if rel == VOCABULARY_MODULE:
                continue
            tree = ast.parse(path.read_text(), str(path))
            skip = docstrings(tree)
            for node in ast.walk(tree):
                literal = isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
                if literal and node.value.strip().lower() in NAMES:
                    found.append((str(rel), node.lineno, node.value))
    return [f"{rel}:{line}: {value!r}" for rel, line, value in sorted(found)]


def test_no_emotion_name_literals_in_package_code():
    found = emotion_literals(REPO)
    assert not found, "spell emotions with common.emotions' names:\n  " + "\n  ".join(found)


def test_the_check_catches_a_planted_literal(tmp_path):
    for package in PACKAGES:
        (tmp_path / package).mkdir()
    (tmp_path / "common/emotions.py").write_text('HAPPY = "happy"\n')  # the vocabulary module may spell them
    (tmp_path / "manipulator/bad.py").write_text(
        '"""Edits to happy."""\n\n# neutral -> sad\n\ndef f(e):\n    """neutral"""\n    return e == "Neutral"\n'
    )
    (tmp_path / "renderer/bad.py").write_text('X = {"sad": 1, "label": "happy face"}\n')
    assert emotion_literals(tmp_path) == ["manipulator/bad.py:7: 'Neutral'", "renderer/bad.py:1: 'sad'"]


def test_vocabularies():
    assert NED_EMOTIONS == ("neutral", "angry", "disgusted", "fear", "happy", "sad", "surprised")  # NED's order
    assert set(MEAD.classes) == set(NED.classes) | {"contempt"} and MEAD.classes[0] == NEUTRAL
    assert FER2013.ours == ("angry", "disgusted", "fear", "happy", "sad", "surprised", "neutral")
    assert AFFECTNET7.ours == ("neutral", "happy", "sad", "surprised", "fear", "disgusted", "angry")
    for v in VOCABULARIES.values():
        assert vocabulary(v.kind) is v and set(v.ours) <= set(MEAD.classes)


def test_the_vocabulary_is_what_its_users_use():
    from evaluation.fer import EMOTIONS as FER_EMOTIONS
    from evaluation.fer_net import FER_CLASSES
    from manipulator.ned import NED_EMOTIONS as NED_HEADS
    from manipulator.train import ManipulatorConfig
    from preprocessing.toy_mead.profiles import EMOTION_ACTIONS, EMOTION_PROSODY, EMOTIONS

    assert tuple(FER_CLASSES) == FER2013.classes and tuple(FER_EMOTIONS) == FER2013.ours
    assert tuple(NED_HEADS) == NED.classes and ManipulatorConfig().emotions == list(NED.classes)
    assert tuple(EMOTIONS) == NED.classes and set(EMOTION_ACTIONS) == set(EMOTION_PROSODY) == set(NED.classes)


def test_mouth_channel_accessors():
    expr = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    assert MOUTH_CHANNEL == 0  # DESIGN section 4: expr[:, 0] is the mouth opening
    np.testing.assert_array_equal(mouth_channel(expr), expr[..., 0])
    np.testing.assert_array_equal(expression_channels(expr), expr[..., 1:])
    t = torch.from_numpy(expr)
    assert torch.equal(mouth_channel(t), t[..., 0]) and torch.equal(expression_channels(t), t[..., 1:])


def test_one_expression_normaliser_round_trips_and_converts(tmp_path):
    from manipulator.expr_norm import Normaliser

    rng = np.random.default_rng(0)
    dataset = Normaliser(rng.normal(size=4).astype(np.float32), rng.uniform(0.5, 2, 4).astype(np.float32))
    raw = Normaliser.identity(4)
    expr = rng.normal(size=(3, 4)).astype(np.float32)
    np.testing.assert_allclose(dataset.inverse(dataset.forward(expr)), expr, atol=1e-6)
    for norm in (dataset, raw):  # checkpoints' extra data: plain data, read back the same
        back = Normaliser.from_extra(norm.as_extra())
        assert back.mode == norm.mode and back.same_as(norm)
    # checkpoints from before the record: manipulator runs kept expr_mean/expr_std, metric runs nothing
    legacy = Normaliser.from_extra({"expr_mean": dataset.mean.tolist(), "expr_std": dataset.std.tolist()})
    assert legacy.same_as(dataset) and legacy.mode == "dataset"
    assert Normaliser.from_extra({"expr_mean": [0.0] * 4, "expr_std": [1.0] * 4}).mode == "none"
    assert Normaliser.from_extra({"expr_dim": 4}) is None
    # a manipulator on raw coefficients feeds the metric's encoder in the metric's units
    to_metric = raw.to_other(dataset)
    got = to_metric(torch.from_numpy(raw.forward(expr))).numpy()
    np.testing.assert_allclose(got, dataset.forward(expr), atol=1e-5)
