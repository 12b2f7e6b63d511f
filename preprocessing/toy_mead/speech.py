"""eSpeak NG speech synthesis with phoneme timings, through the `espeakng-loader` wheel and ctypes.

`synthesize(text, voice)` returns 16 kHz mono audio and the phoneme events (start time in seconds, IPA
label). The library keeps state between utterances, so each utterance is synthesised in a fresh fork.
"""

from __future__ import annotations

import ctypes
import json
import os
from dataclasses import dataclass

import numpy as np
from scipy.signal import resample_poly

from common.errors import UserError
from common.formats import AUDIO_SR

_AUDIO_OUTPUT_RETRIEVAL = 1
_INIT_PHONEME_EVENTS = 0x0001
_INIT_PHONEME_IPA = 0x0002
_EVENT_LIST_TERMINATED, _EVENT_WORD, _EVENT_END, _EVENT_PHONEME = 0, 1, 5, 7
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH, _PARAM_RANGE = 1, 2, 3, 4


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # milliseconds from the start of the synthesis
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass(frozen=True)
class Voice:
    """eSpeak voice and prosody: rate in words/min, pitch and range 0-100, volume 0-200."""

    name: str = "en-us"
    rate: int = 165
    pitch: int = 50
    pitch_range: int = 50
    volume: int = 100


@dataclass
class Utterance:
    audio: np.ndarray  # (N,) float32 at AUDIO_SR
    phonemes: list[tuple[float, str]]  # (start seconds, IPA label), in order
    duration_s: float


class Synthesizer:
    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError:
            raise UserError("espeakng-loader is not installed; run `make setup`") from None
        self.lib = ctypes.cdll.LoadLibrary(espeakng_loader.get_library_path())
        self.lib.espeak_Initialize.restype = ctypes.c_int
        data_path = espeakng_loader.get_data_path().encode()
        self.native_sr = self.lib.espeak_Initialize(
            _AUDIO_OUTPUT_RETRIEVAL, 0, data_path, _INIT_PHONEME_EVENTS | _INIT_PHONEME_IPA
        )
        if self.native_sr <= 0:
            raise UserError(f"eSpeak NG failed to initialise with data at {data_path.decode()}")
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, str]] = []
        self._callback = _CALLBACK(self._on_audio)  # keep a reference: ctypes does not
        self.lib.espeak_SetSynthCallback(self._callback)

    def _on_audio(self, wav, n_samples, events) -> int:
        if n_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n_samples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            event = events[i]
            if event.type == _EVENT_PHONEME:
                label = event.id.string.decode("utf-8", errors="replace")
                self._events.append((event.audio_position, label))
            i += 1
        return 0

    def synthesize(self, text: str, voice: Voice) -> Utterance:
        if self.lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
            raise UserError(f"eSpeak NG has no voice {voice.name!r}")
        for param, value in (
            (_PARAM_RATE, voice.rate),
            (_PARAM_PITCH, voice.pitch),
            (_PARAM_RANGE, voice.pitch_range),
            (_PARAM_VOLUME, voice.volume),
        ):
            self.lib.espeak_SetParameter(param, int(value), 0)
        self._chunks, self._events = [], []
        data = text.encode("utf-8") + b"\0"
        status = self.lib.espeak_Synth(data, len(data), 0, 0, 0, 0, None, None)
        self.lib.espeak_Synchronize()
        if status != 0 or not self._chunks:
            raise UserError(f"eSpeak NG could not synthesise {text!r} (status {status})")
        native = np.concatenate(self._chunks).astype(np.float32) / 32768.0
        audio = resample_poly(native, AUDIO_SR, self.native_sr).astype(np.float32)
        phonemes = [(ms / 1000.0, label) for ms, label in self._events if label.strip()]
        return Utterance(audio, phonemes, len(audio) / AUDIO_SR)


def synthesize(text: str, voice: Voice) -> Utterance:
    """Synthesise `text` in a freshly forked process.

    eSpeak NG keeps internal state from one utterance to the next, so the same text and voice come out
    slightly different (audio, timing) depending on what the process said before. A fresh engine per
    utterance (a fork costs a few milliseconds) makes every clip a pure function of (text, voice), so the
    dataset is reproducible whatever order the workers take the clips in. (os.fork, not multiprocessing:
    the generator's pool workers are daemonic and may not start multiprocessing children.)
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: synthesise, send JSON header + float32 samples, exit without cleanup handlers
        os.close(read_fd)
        try:
            utt = Synthesizer().synthesize(text, voice)
            header = {"ok": True, "phonemes": utt.phonemes, "duration_s": utt.duration_s}
            body = utt.audio.astype(np.float32).tobytes()
        except BaseException as exc:  # noqa: BLE001 - reported to the parent as a message
            header, body = {"ok": False, "error": str(exc)}, b""
        with os.fdopen(write_fd, "wb") as out:
            out.write(json.dumps(header).encode() + b"\n" + body)
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as inp:
        data = inp.read()
    os.waitpid(pid, 0)
    line, _, body = data.partition(b"\n")
    if not line:
        raise UserError("eSpeak NG synthesis process died without a result")
    header = json.loads(line)
    if not header["ok"]:
        raise UserError(header["error"])
    phonemes = [(float(t), str(p)) for t, p in header["phonemes"]]
    return Utterance(np.frombuffer(body, np.float32).copy(), phonemes, float(header["duration_s"]))
