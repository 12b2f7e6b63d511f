"""What one evaluation computes: the methods (`name[@settings]=runs`), the outputs of a manipulator run
(`Job`: one same-sentence pair of a neutral clip and its emotion), and the reference clip of a setting."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import ConfigError
from facemodel import FaceModel
from manipulator.edit import Editor
from manipulator.expr_norm import Normaliser

SETTINGS = ("label", "same_id", "cross_id")


@dataclass
class Method:
    name: str
    runs: list[str]
    settings: list[str] | None = None  # None: every setting of the evaluation


def parse_methods(specs: list[str]) -> list[Method]:
    """`name[@setting+setting]=dir[,dir…]` (or a bare run dir): the optional settings limit a method (an
    ablation, say) to those tables."""
    methods = []
    for spec in specs:
        name, _, dirs = spec.partition("=")
        if not dirs:
            name, dirs = Path(spec).name, spec
        name, _, only = name.partition("@")
        unknown = [s for s in only.split("+") if s and s not in SETTINGS]
        if unknown:
            raise ConfigError(f"--runs {spec}: unknown setting {', '.join(unknown)} (one of {', '.join(SETTINGS)})")
        methods.append(Method(name, [d for d in dirs.split(",") if d], only.split("+") if only else None))
    return methods


def choose_reference(index: dict, split: str, actor: str, emotion: str, sentence: str, setting: str) -> str | None:
    """A clip dir of `emotion`: same actor and another sentence (same_id), or another actor; from the evaluated
    split, else from the validation split (held out from training too: a protocol with few held-out sentences,
    as on real MEAD's per-emotion clips, may leave the test split one sentence per actor and emotion)."""
    for pool in dict.fromkeys((split, "val")):
        cands = [c for c in index["clips"] if c["split"] == pool and c.get("emotion") == emotion]
        if setting == "same_id":  # never the target's own sentence: that clip is the answer the edit is scored on
            cands = [c for c in cands if c["actor"] == actor and c.get("clip_id") != sentence]
        else:
            cands = [c for c in cands if c["actor"] != actor]
        if cands:
            return sorted(c["dir"] for c in cands)[0]
    return None


@dataclass(frozen=True)
class RunInputs:
    """What every output of one manipulator run shares."""

    method: str
    run: str
    setting: str
    editor: Editor
    model: FaceModel  # the dataset's face model
    root: Path  # the dataset the manipulator was trained on
    index: dict  # its clips.json
    clips: dict[str, dict]  # its clips.json entries by clip dir
    pairs: dict[str, np.ndarray]  # its pairs.npz
    norm: Normaliser  # the dataset's expression statistics: expr_err in the same units for every method


@dataclass(frozen=True)
class Job:
    """One output: pair `pair` of pairs.npz, a neutral clip edited to the emotion its sentence has in `target`."""

    inputs: RunInputs
    pair: int

    @property
    def source(self) -> str:
        return str(self.inputs.pairs["src"][self.pair])

    @property
    def target(self) -> str:
        return str(self.inputs.pairs["dst"][self.pair])

    @property
    def emotion(self) -> str:
        return str(self.inputs.pairs["emotion"][self.pair])
