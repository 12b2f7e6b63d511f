"""Data of the toy MEAD set: sentences, emotions (facial action + prosody), visemes, actors and voices."""

from __future__ import annotations

from dataclasses import dataclass

from common.emotions import ANGRY, DEFAULT_EMOTIONS, DISGUSTED, FEAR, HAPPY, NEUTRAL, SAD, SURPRISED
from preprocessing.toy_mead.speech import Voice

# Our own sentences, chosen to cover bilabials (closure), rounded and spread vowels, labiodentals,
# dentals, sibilants and open vowels. Sentence k is clip number k (001, 002, ...) in every emotion.
SENTENCES = (
    "Bob bought a big blue map of the bay.",
    "Why would you choose the room by the pool?",
    "She sees three green trees near the sea.",
    "Father calls the army to march far out.",
    "Five vivid violins filled the old valley.",
    "Think of the thin path through the thicket.",
    "My mother made warm plum pie in May.",
    "Show the shy sheep the short shady road.",
    "Open all the windows before the storm comes.",
    "A quiet owl watched us from the oak tree.",
    "Pack up the purple boxes and move them back.",
    "Judge the huge yellow jar on the edge.",
)

EMOTIONS = DEFAULT_EMOTIONS  # the 7 of MEAD the manipulator trains on (NED's), in that order (clip seeds use it)

# Facial action per emotion at full intensity (level 3; scaled by level / 3): EMFACS-style prototypes as rig
# action units (rig.RIG_NAMES: AU1 brow_inner_raise, AU2 brow_outer_raise, AU4 brow_lower, AU5 upper_lid_raise,
# AU6 cheek_raise, AU7 lid_tighten, AU9 nose_wrinkle, AU10 upper_lip_raise, AU12 lip_corner_pull,
# AU15 lip_corner_depress, AU17 chin_raise, AU20 lip_stretch, AU23 lip_tighten, AU24 lip_press, AU25/26 jaw,
# AU41 lid_droop).
EMOTION_ACTIONS: dict[str, dict[str, float]] = {
    NEUTRAL: {},
    HAPPY: {"cheek_raise": 1.2, "lip_corner_pull": 1.6, "jaw": 0.45},  # 6+12+25
    SAD: {  # 1+4+15(+17) and heavy lids (AU41): the oblique brow, drooping eyes, the lip corners down
        "brow_inner_raise": 2.0,
        "brow_lower": 0.5,
        "lid_tighten": 0.8,
        "lid_droop": 1.8,
        "lip_corner_depress": 1.0,
        "lip_stretch": 0.2,
        "chin_raise": 0.3,
    },
    SURPRISED: {  # 1+2+5+26: brows and upper lids raised, the jaw dropped into a rounded opening
        "brow_inner_raise": 1.2,
        "brow_outer_raise": 1.8,
        "upper_lid_raise": 1.3,
        "jaw": 0.6,
        "lip_round": 0.5,
    },
    FEAR: {  # 1+2+4+5+7+20+26
        "brow_inner_raise": 1.2,
        "brow_outer_raise": 0.6,
        "brow_lower": 0.5,
        "upper_lid_raise": 0.7,
        "lid_tighten": 0.3,
        "lip_stretch": 1.3,
        "jaw": 0.6,
    },
    ANGRY: {  # 4+5+7+9+23+24+17: lowered brows over glaring lids, the lips pressed thin, the chin pushed up
        "brow_lower": 2.4,
        "lid_tighten": 1.2,
        "upper_lid_raise": 0.6,
        "nose_wrinkle": 1.0,
        "lip_tighten": 1.0,
        "lip_press": 0.6,
        "chin_raise": 0.8,
    },
    DISGUSTED: {  # 9+10+17
        "nose_wrinkle": 1.5,
        "upper_lip_raise": 0.7,
        "chin_raise": 0.6,
        "lid_tighten": 0.5,
        "brow_lower": 0.5,
    },
}

# Speech prosody per emotion at full intensity, relative to the actor's voice (scaled by level / 3):
# rate factor, pitch offset, pitch-range offset, volume factor. Also how much the jaw moves when speaking.
EMOTION_PROSODY: dict[str, dict[str, float]] = {
    NEUTRAL: {"rate": 1.0, "pitch": 0, "range": 0, "volume": 1.0, "articulation": 1.0},
    ANGRY: {"rate": 1.12, "pitch": 6, "range": 20, "volume": 1.3, "articulation": 1.15},
    DISGUSTED: {"rate": 0.86, "pitch": -6, "range": -10, "volume": 0.95, "articulation": 0.85},
    FEAR: {"rate": 1.18, "pitch": 16, "range": -15, "volume": 0.9, "articulation": 0.9},
    HAPPY: {"rate": 1.08, "pitch": 12, "range": 30, "volume": 1.1, "articulation": 1.1},
    SAD: {"rate": 0.8, "pitch": -10, "range": -25, "volume": 0.8, "articulation": 0.8},
    SURPRISED: {"rate": 0.94, "pitch": 18, "range": 40, "volume": 1.15, "articulation": 1.2},
}

# Viseme targets (jaw, lip_round, lip_spread, lip_close) for IPA phonemes, stress marks removed.
VISEMES: dict[str, tuple[float, float, float, float]] = {}
for _labels, _target in (
    ("a aː ɑ ɑː æ aɪ aʊ ɑɹ", (0.95, 0.0, 0.15, 0.0)),
    ("ɛ e eɪ ɛɹ ɛə", (0.6, 0.0, 0.4, 0.0)),
    ("i iː ɪ ɪɹ iə j", (0.25, 0.0, 0.85, 0.0)),
    ("ə ʌ ɜ ɜː ɚ ᵻ ɐ", (0.45, 0.0, 0.1, 0.0)),
    ("o oʊ əʊ ɔ ɔː ɔɪ ɔɹ ɒ", (0.6, 0.75, 0.0, 0.0)),
    ("u uː ʊ ʊɹ w", (0.22, 1.0, 0.0, 0.0)),
    ("p b m", (0.04, 0.0, 0.0, 1.0)),
    ("f v", (0.12, 0.0, 0.15, 0.55)),
    ("θ ð", (0.2, 0.0, 0.2, 0.0)),
    ("s z t d n l ɾ t̬ ʔ", (0.18, 0.0, 0.35, 0.0)),
    ("ʃ ʒ tʃ dʒ", (0.22, 0.55, 0.0, 0.0)),
    ("k ɡ g ŋ h x", (0.32, 0.0, 0.1, 0.0)),
    ("ɹ r", (0.25, 0.4, 0.0, 0.0)),
    ("sil", (0.0, 0.0, 0.0, 0.0)),
):
    for _label in _labels.split():
        VISEMES[_label] = _target
DEFAULT_VISEME = (0.3, 0.0, 0.1, 0.0)  # unknown phoneme: a neutral, half-open shape


def clean_phoneme(label: str) -> str:
    """IPA label without stress marks, as stored in the ground truth."""
    return label.replace("ˈ", "").replace("ˌ", "").strip()


def viseme(label: str) -> tuple[float, float, float, float]:
    label = clean_phoneme(label)
    return VISEMES.get(label, VISEMES.get(label.rstrip("ː"), DEFAULT_VISEME))


@dataclass(frozen=True)
class ActorProfile:
    actor_id: str
    portrait: str  # a portrait.BUILTIN_PORTRAITS name or a file path
    voice: Voice
    mirror: bool = False  # a mirrored portrait makes a further identity


# Only voice variants whose output is reproducible: eSpeak's f2, f3 and f5 add breath noise seeded from the
# clock, which would make the dataset differ from run to run. MEAD-style ids: W = woman, M = man. The first two
# are public domain and make the default set; M003 and W004 are CC BY-SA 3.0 photos from the thumbor wheel
# (licences and attribution in portrait.BUILTIN_PORTRAITS).
BUILTIN_ACTORS = (
    ActorProfile("W001", "astronaut", Voice("en-us+f1", rate=165, pitch=62, pitch_range=55)),
    ActorProfile("W002", "grace_hopper", Voice("en+f4", rate=150, pitch=45, pitch_range=45)),
    ActorProfile("M003", "giunchedi", Voice("en-us+m3", rate=158, pitch=38, pitch_range=48)),
    ActorProfile("W004", "maher", Voice("en-us+f4", rate=168, pitch=58, pitch_range=58)),
)
DEFAULT_ACTORS = 2  # the built-ins that need no optional package
EXTRA_VOICES = (
    Voice("en-us+f4", rate=175, pitch=55, pitch_range=60),
    Voice("en+f1", rate=158, pitch=50, pitch_range=40),
    Voice("en-us+m3", rate=160, pitch=40, pitch_range=50),
    Voice("en+m2", rate=150, pitch=35, pitch_range=45),
)


def emotion_voice(base: Voice, emotion: str, intensity: float) -> Voice:
    """The actor's voice with the emotion's prosody applied at `intensity` in [0, 1]."""
    p = EMOTION_PROSODY[emotion]
    return Voice(
        name=base.name,
        rate=round(base.rate * (1 + (p["rate"] - 1) * intensity)),
        pitch=int(min(99, max(0, base.pitch + p["pitch"] * intensity))),
        pitch_range=int(min(99, max(0, base.pitch_range + p["range"] * intensity))),
        volume=round(base.volume * (1 + (p["volume"] - 1) * intensity)),
    )
