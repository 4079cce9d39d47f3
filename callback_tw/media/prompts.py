# -*- test-case-name: tests.test_media_prompts -*-
"""
The prompt catalogue: announcement ids and digit strings turned into G.711
frames, ready to be put on the wire.

Every prompt is read, checked, converted and encoded once, at start-up, so a
bad file stops the server with an error naming it instead of failing a call
hours later, and a call costs no encoding work: the player only copies
ready-made 20 ms payloads into packets.

Layout of the prompts folder::

    <folder>/<8-digit ann id>.wav     e.g. 00080002.wav (ann_id1 / ann_id2)
    <folder>/digits/0.wav .. 9.wav    spoken digits (ann_digit2)

Files are WAV, linear PCM, 16-bit. Mono 8 kHz is used as is; more channels
are mixed down (average) and other rates of at least 8 kHz are low-pass
filtered and resampled to 8 kHz. Everything else (8-, 24- or 32-bit samples,
float, A-law/u-law WAV, rates below 8 kHz, empty or unreadable files) is
rejected with a L{PromptError} naming the file.

This module imports nothing else of callback_tw but the codec facts
(L{callback_tw.media.codecs}).
"""

from __future__ import annotations

import math
import os
import re
import sys
import wave
from array import array
from collections.abc import Iterable, Mapping, Sequence

from rtpsynth.RtpUtils import linear2ulaw, resample_linear
from twisted.logger import Logger

from callback_tw.media.codecs import SAMPLE_RATE, SILENCE, VOICE_CODECS

__all__ = [
    "CODECS",
    "FRAME_BYTES",
    "PromptCatalogue",
    "PromptError",
    "alawToLinear",
    "linearToAlaw",
]

FRAME_BYTES = 160
"""One 20 ms G.711 frame."""

CODECS = tuple(c.name for c in VOICE_CODECS)
"""The codecs every prompt is encoded to."""

DIGIT_PAUSE = 0.15
"""Seconds of silence between two spoken digits, so "1 1" is not "11"."""

RINGBACK_LEVEL_DBM0 = -10.0
"""Total level of a ringback tone (ITU-T E.180 suggests -10 dBm0 +/- 5 dB)."""

# Peak amplitude (16-bit scale) of a 0 dBm0 sine in G.711: the decoded
# "digital milliwatt" has a 14-bit peak of ~5645, i.e. 22580 in 16 bits.
_ZERO_DBM0_PEAK = 22580.0

_RAMP_SECONDS = 0.005
_ANN_NAME = re.compile(r"^([0-9]{8})\.wav$")
_DIGITS = "0123456789"


class PromptError(Exception):
    """
    A prompt file is missing, unreadable or in a format we cannot play.

    The message always names the file, so an operator can fix it from the
    start-up error alone.
    """


# --- G.711 A-law ---------------------------------------------------------
# rtpsynth has u-law only and audioop is gone in Python 3.13, so A-law is done
# here, following the ITU-T G.711 reference (as in Sun's g711.c). The
# encoder works on the top 13 bits of a 16-bit sample.

_SEG_END = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)


def linearToAlaw(sample: int) -> int:
    """
    Encode one signed 16-bit sample to an A-law byte (ITU-T G.711).

    @param sample: -32768..32767.
    @return: the A-law code, with even bits inverted as sent on the wire.
    """
    pcm = sample >> 3
    if pcm >= 0:
        mask = 0xD5
    else:
        mask = 0x55
        pcm = -pcm - 1
    seg = next((s for s, end in enumerate(_SEG_END) if pcm <= end), None)
    if seg is None:
        return 0x7F ^ mask
    code = seg << 4
    if seg < 2:
        code |= (pcm >> 1) & 0x0F
    else:
        code |= (pcm >> seg) & 0x0F
    return code ^ mask


def alawToLinear(code: int) -> int:
    """
    Decode one A-law byte to a signed 16-bit sample (ITU-T G.711).
    """
    code ^= 0x55
    t = (code & 0x0F) << 4
    seg = (code & 0x70) >> 4
    if seg == 0:
        t += 8
    elif seg == 1:
        t += 0x108
    else:
        t = (t + 0x108) << (seg - 1)
    return t if code & 0x80 else -t


# Indexed by the sample's bits read as unsigned 16-bit (two's complement).
_ALAW_TABLE = bytes(
    linearToAlaw(u - 0x10000 if u & 0x8000 else u) for u in range(0x10000)
)


def _encodeAlaw(pcm: array) -> bytes:
    unsigned = array("H")
    unsigned.frombytes(pcm.tobytes())
    return bytes(map(_ALAW_TABLE.__getitem__, unsigned))


def _encode(pcm: array, codec: str) -> bytes:
    if codec == "PCMU":
        return linear2ulaw(pcm)
    return _encodeAlaw(pcm)


def _checkCodec(codec: str) -> None:
    if codec not in CODECS:
        raise ValueError(
            f"unknown codec {codec!r}; expected one of {', '.join(CODECS)}"
        )


def _frames(encoded: bytes, codec: str) -> tuple[bytes, ...]:
    """Split into 20 ms payloads, padding the last one with silence."""
    short = -len(encoded) % FRAME_BYTES
    if short:
        encoded += bytes([SILENCE[codec]]) * short
    return tuple(
        encoded[i : i + FRAME_BYTES] for i in range(0, len(encoded), FRAME_BYTES)
    )


# --- WAV loading ---------------------------------------------------------


def _lowPass(samples: array, rate: int, cutoff: float) -> list[float]:
    """
    6th-order Butterworth low-pass (three biquads, RBJ cookbook).

    rtpsynth's C{resample_linear} interpolates without an anti-alias filter,
    so energy above 4 kHz in a 16 or 44.1 kHz file would fold back into the
    telephone band as a hiss; this removes it first. Pure Python (~1 s per
    minute of 16 kHz audio), which is fine once at start-up.
    """
    out: list[float] = list(map(float, samples))
    w0 = 2.0 * math.pi * cutoff / rate
    cosw, sinw = math.cos(w0), math.sin(w0)
    # Q of each section of a 6th-order Butterworth.
    for q in (0.5176380902, 0.7071067812, 1.9318516526):
        alpha = sinw / (2.0 * q)
        a0 = 1.0 + alpha
        b0 = b2 = (1.0 - cosw) / 2.0 / a0
        b1 = (1.0 - cosw) / a0
        a1 = -2.0 * cosw / a0
        a2 = (1.0 - alpha) / a0
        x1 = x2 = y1 = y2 = 0.0
        for i, x in enumerate(out):
            y = b0 * x + b1 * x1 + b2 * x2 - a1 * y1 - a2 * y2
            x2, x1, y2, y1 = x1, x, y1, y
            out[i] = y
    return out


def _clip16(values: Iterable[float]) -> array:
    return array("h", (max(-32768, min(32767, round(v))) for v in values))


def _readWav(path: str) -> array:
    """
    Read one prompt file and return it as 8 kHz mono signed 16-bit samples.

    @raise PromptError: naming C{path} and what is wrong with it.
    """
    try:
        with wave.open(path, "rb") as w:
            channels = w.getnchannels()
            width = w.getsampwidth()
            rate = w.getframerate()
            data = w.readframes(w.getnframes())
    except wave.Error as e:
        detail = str(e)
        if detail.startswith("unknown format"):
            detail = (
                f"{detail}: only linear PCM WAV is accepted (not float, A-law, "
                f"u-law or WAVE_FORMAT_EXTENSIBLE)"
            )
        raise PromptError(
            f"{path}: not a usable WAV file ({detail}); {_HOW_TO_CONVERT}"
        ) from e
    except EOFError as e:
        raise PromptError(f"{path}: truncated or empty WAV file") from e
    except OSError as e:
        raise PromptError(f"{path}: cannot read ({e.strerror or e})") from e

    if width != 2:
        raise PromptError(
            f"{path}: {8 * width}-bit samples; 16-bit linear PCM is required; "
            + _HOW_TO_CONVERT
        )
    if rate < SAMPLE_RATE:
        raise PromptError(
            f"{path}: sample rate {rate} Hz is below {SAMPLE_RATE} Hz; "
            + _HOW_TO_CONVERT
        )
    frameBytes = width * channels
    data = data[: len(data) - len(data) % frameBytes]
    if not data:
        raise PromptError(f"{path}: contains no audio")

    pcm = array("h")
    pcm.frombytes(data)
    if sys.byteorder == "big":
        pcm.byteswap()  # WAV is little-endian
    if channels > 1:
        pcm = array(
            "h",
            (
                sum(frame) // channels
                for frame in zip(
                    *(pcm[c::channels] for c in range(channels)), strict=True
                )
            ),
        )
    if rate != SAMPLE_RATE:
        filtered = _clip16(_lowPass(pcm, rate, 3400.0))
        pcm = resample_linear(filtered, rate, SAMPLE_RATE)
    return pcm


_HOW_TO_CONVERT = (
    "convert with: sox IN.wav -r 8000 -c 1 -b 16 -e signed-integer OUT.wav"
)


def _readDigits(folder: str) -> list[array]:
    """C{digits/0.wav} .. C{digits/9.wav}; all ten must be there."""
    digitsFolder = os.path.join(folder, "digits")
    missing = [
        os.path.join(digitsFolder, f"{d}.wav")
        for d in _DIGITS
        if not os.path.isfile(os.path.join(digitsFolder, f"{d}.wav"))
    ]
    if missing:
        raise PromptError(
            ", ".join(missing) + ": digit prompt missing (need digits/0.wav .. 9.wav)"
        )
    return [_readWav(os.path.join(digitsFolder, f"{d}.wav")) for d in _DIGITS]


class _Prompt:
    """One prompt, encoded once per codec (whole and in frames)."""

    __slots__ = ("path", "seconds", "encoded", "frames")

    def __init__(self, path: str, pcm: array) -> None:
        self.path = path
        self.seconds = len(pcm) / SAMPLE_RATE
        self.encoded = {codec: _encode(pcm, codec) for codec in CODECS}
        self.frames = {codec: _frames(self.encoded[codec], codec) for codec in CODECS}


class PromptCatalogue:
    """
    All announcements and digits, checked and encoded.

    Build it with L{PromptCatalogue.load} at start-up; it is immutable
    afterwards (an operator adds an announcement by dropping a file in the
    folder and restarting the server).

    @ivar folder: the folder it was loaded from.
    """

    _log = Logger()

    def __init__(
        self,
        announcements: Mapping[str, array],
        digits: Sequence[array],
        folder: str = "",
    ) -> None:
        """
        @param announcements: 8-digit ann id -> 8 kHz mono 16-bit samples.
        @param digits: ten sample arrays, for "0" .. "9".
        """
        if len(digits) != 10:
            raise ValueError("need exactly ten digit prompts")
        self.folder = folder
        self._announcements = {
            annId: _Prompt(os.path.join(folder, f"{annId}.wav"), pcm)
            for annId, pcm in announcements.items()
        }
        self._digits = [
            _Prompt(os.path.join(folder, "digits", f"{d}.wav"), pcm)
            for d, pcm in enumerate(digits)
        ]
        pause = int(DIGIT_PAUSE * SAMPLE_RATE)
        self._pause = {codec: bytes([SILENCE[codec]]) * pause for codec in CODECS}
        self._ringbacks: dict[tuple, tuple[bytes, ...]] = {}

    @classmethod
    def load(cls, folder: str, required: Iterable[str] = ()) -> PromptCatalogue:
        """
        Load, check and encode every prompt in C{folder}.

        @param folder: holds C{<8-digit id>.wav} and C{digits/0.wav} ..
            C{digits/9.wav}. Other files are ignored; a C{.wav} whose name is
            not 8 digits is ignored with a warning (it could never be played).
        @param required: ann ids that must exist (e.g. the configured default
            ann_id1), so a missing one stops the start-up instead of failing
            every call.
        @raise PromptError: naming the file (or folder) that is missing, not
            readable, or not in an accepted format.
        """
        announcements = cls._readAnnouncements(folder)
        digits = _readDigits(folder)
        absent = [annId for annId in required if annId not in announcements]
        if absent:
            raise PromptError(
                ", ".join(os.path.join(folder, f"{annId}.wav") for annId in absent)
                + ": required announcement missing"
            )
        catalogue = cls(announcements, digits, folder)
        cls._log.info(
            "loaded {count} announcements and 10 digits from {folder}: {ids}",
            count=len(announcements),
            folder=folder,
            ids=" ".join(sorted(announcements)),
        )
        return catalogue

    @classmethod
    def _readAnnouncements(cls, folder: str) -> dict[str, array]:
        """Every C{<8 digits>.wav} in C{folder}, by ann id."""
        if not os.path.isdir(folder):
            raise PromptError(
                f"{folder}: prompts folder does not exist or is not a folder"
            )
        try:
            names = sorted(os.listdir(folder))
        except OSError as e:
            raise PromptError(
                f"{folder}: cannot list prompts folder ({e.strerror or e})"
            ) from e
        announcements = {}
        for name in names:
            path = os.path.join(folder, name)
            match = _ANN_NAME.match(name)
            if match is None:
                if name.lower().endswith(".wav"):
                    cls._log.warn(
                        "prompt {path} ignored: announcements are named <8 digits>.wav",
                        path=path,
                    )
                continue
            if not os.path.isfile(path):
                raise PromptError(f"{path}: not a regular file")
            announcements[match.group(1)] = _readWav(path)
        return announcements

    def annIds(self) -> frozenset[str]:
        """The ann ids that can be played."""
        return frozenset(self._announcements)

    def hasAnnouncement(self, annId: str) -> bool:
        """
        Whether C{annId} can be played: the IIF side answers a REQUEST naming
        an unknown ann id with C{code=fail} and places no call.
        """
        return annId in self._announcements

    def duration(self, annId: str) -> float:
        """Length of an announcement in seconds (before padding)."""
        return self._announcements[annId].seconds

    def announcement(self, annId: str, codec: str) -> Sequence[bytes]:
        """
        The 20 ms payloads (160 bytes each) of one announcement.

        @param codec: C{"PCMU"} or C{"PCMA"}.
        @raise KeyError: for an ann id without a file (check
            L{hasAnnouncement} when the REQUEST arrives).
        """
        _checkCodec(codec)
        return self._announcements[annId].frames[codec]

    def digits(self, digitString: str, codec: str) -> Sequence[bytes]:
        """
        C{digitString} spoken digit by digit, with L{DIGIT_PAUSE} between
        digits, as 20 ms payloads.

        @raise ValueError: if C{digitString} has anything but 0-9.
        """
        _checkCodec(codec)
        bad = [c for c in digitString if c not in _DIGITS]
        if bad:
            raise ValueError(f"cannot speak {bad[0]!r} in {digitString!r}: only 0-9")
        pause = self._pause[codec]
        return _frames(
            pause.join(self._digits[int(c)].encoded[codec] for c in digitString), codec
        )

    def ringback(
        self,
        frequency: float | Sequence[float],
        on: float,
        off: float,
        codec: str,
    ) -> Sequence[bytes]:
        """
        One cadence cycle of a ringback tone, as 20 ms payloads; loop it.

        @param frequency: Hz; a sequence of frequencies (e.g. C{(440, 480)})
            makes a dual tone. The total level is L{RINGBACK_LEVEL_DBM0}.
        @param on: seconds of tone per cycle (> 0).
        @param off: seconds of silence per cycle (>= 0); the cycle is rounded
            to whole 20 ms frames by lengthening the silence. With C{off=0}
            the tone is continuous, so C{on} should hold whole periods.
        """
        _checkCodec(codec)
        freqs = (
            (frequency,) if isinstance(frequency, (int, float)) else tuple(frequency)
        )
        key = (tuple(float(f) for f in freqs), float(on), float(off), codec)
        cached = self._ringbacks.get(key)
        if cached is not None:
            return cached
        if not freqs or any(not 0 < f < SAMPLE_RATE / 2 for f in freqs):
            raise ValueError(
                f"ringback frequencies must be between 0 and 4000 Hz, not {frequency!r}"
            )
        if on <= 0 or off < 0:
            raise ValueError(
                f"ringback cadence needs on > 0 and off >= 0, not {on}/{off}"
            )

        onSamples = round(on * SAMPLE_RATE)
        total = onSamples + round(off * SAMPLE_RATE)
        total += -total % FRAME_BYTES
        peak = (
            _ZERO_DBM0_PEAK * 10 ** (RINGBACK_LEVEL_DBM0 / 20) / math.sqrt(len(freqs))
        )
        ramp = round(_RAMP_SECONDS * SAMPLE_RATE) if off > 0 else 0
        ramp = min(ramp, onSamples // 2)
        tone = []
        for n in range(onSamples):
            value = (
                sum(math.sin(2 * math.pi * f * n / SAMPLE_RATE) for f in freqs) * peak
            )
            if n < ramp:
                value *= 0.5 - 0.5 * math.cos(math.pi * n / ramp)
            elif n >= onSamples - ramp:
                value *= 0.5 - 0.5 * math.cos(math.pi * (onSamples - 1 - n) / ramp)
            tone.append(value)
        pcm = _clip16(tone)
        pcm.extend(array("h", [0]) * (total - onSamples))
        frames = _frames(_encode(pcm, codec), codec)
        self._ringbacks[key] = frames
        return frames
