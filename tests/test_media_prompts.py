"""
Tests for L{callback_tw.media.prompts}: which WAV files the catalogue accepts,
converts or rejects, and what the encoded frames sound like once decoded.
"""

from __future__ import annotations

import math
import os
import struct
import warnings
import wave
from array import array
from itertools import pairwise

from rtpsynth.RtpUtils import ulaw2linear
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from callback_tw.config.values import PACKAGED_PROMPTS
from callback_tw.media.prompts import (
    FRAME_BYTES,
    PromptCatalogue,
    PromptError,
    alawToLinear,
    linearToAlaw,
)

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tone(
    frequency: float, seconds: float, rate: int = 8000, amplitude: float = 8000.0
) -> list[int]:
    return [
        round(amplitude * math.sin(2 * math.pi * frequency * n / rate))
        for n in range(round(seconds * rate))
    ]


def writeWav(
    path: str, samples: list[int], rate: int = 8000, channels: int = 1
) -> None:
    """Write interleaved 16-bit samples as a PCM WAV file."""
    with wave.open(path, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(array("h", samples).tobytes())


def writeRawWav(
    path: str, formatCode: int, channels: int, rate: int, bits: int, data: bytes
) -> None:
    """Write a WAV with any header, for formats the wave module cannot write."""
    blockAlign = channels * bits // 8
    fmt = struct.pack(
        "<HHIIHH", formatCode, channels, rate, rate * blockAlign, blockAlign, bits
    )
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(data)) + data
    with open(path, "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", len(body)) + body)


def within(original: int, decoded: int) -> bool:
    """G.711 quantisation error: a few LSBs near zero, ~1/16 of the value above."""
    return abs(original - decoded) <= max(32, abs(original) >> 4)


class CatalogueTestMixin:
    def makeFolder(self, announcements: dict[str, list[int]] | None = None) -> str:
        """A prompts folder: ten digits (short tones) and C{announcements}."""
        folder = self.mktemp()
        os.makedirs(os.path.join(folder, "digits"))
        for d in range(10):
            writeWav(
                os.path.join(folder, "digits", f"{d}.wav"), tone(300 + 100 * d, 0.105)
            )
        for annId, samples in (announcements or {}).items():
            writeWav(os.path.join(folder, f"{annId}.wav"), samples)
        return folder


class LoadTests(CatalogueTestMixin, SynchronousTestCase):
    def test_monoAt8kHzPlaysAsRecorded(self) -> None:
        """
        A mono 8 kHz 16-bit file is split into 160-byte frames whose PCMU
        decodes back to the recorded samples within G.711 quantisation; the
        last frame is padded with PCMU silence.
        """
        samples = tone(440, 0.51)  # 4080 samples: 25 frames + 80
        catalogue = PromptCatalogue.load(self.makeFolder({"00080002": samples}))
        frames = catalogue.announcement("00080002", "PCMU")
        self.assertEqual(len(frames), 26)
        self.assertEqual({len(f) for f in frames}, {FRAME_BYTES})
        decoded = ulaw2linear(b"".join(frames))
        self.assertTrue(
            all(
                within(s, d)
                for s, d in zip(samples, decoded[: len(samples)], strict=True)
            )
        )
        self.assertEqual(frames[-1][80:], b"\xff" * 80)

    def test_pcmaDecodesToThePrompt(self) -> None:
        """
        The PCMA frames decode back to the recorded samples within A-law
        quantisation and pad with A-law silence (0xD5).
        """
        samples = tone(1000, 0.01, amplitude=20000)  # 80 samples
        catalogue = PromptCatalogue.load(self.makeFolder({"12345678": samples}))
        (frame,) = catalogue.announcement("12345678", "PCMA")
        decoded = [alawToLinear(c) for c in frame[:80]]
        self.assertTrue(
            all(
                within(s, d)
                for s, d in zip(samples, decoded[: len(samples)], strict=True)
            )
        )
        self.assertEqual(frame[80:], b"\xd5" * 80)

    def test_stereoIsMixedDown(self) -> None:
        """Stereo is converted to mono by averaging the two channels."""
        folder = self.makeFolder()
        writeWav(os.path.join(folder, "00000001.wav"), [1000, 3000] * 160, channels=2)
        catalogue = PromptCatalogue.load(folder)
        decoded = ulaw2linear(catalogue.announcement("00000001", "PCMU")[0])
        self.assertTrue(all(within(2000, d) for d in decoded), decoded)

    def test_higherRateIsResampled(self) -> None:
        """
        A 16 kHz file is resampled to 8 kHz: one second stays one second (50
        frames), a 1 kHz tone keeps its pitch and level, and a 6 kHz tone
        (which would fold back to 2 kHz without filtering) is removed.
        """
        folder = self.makeFolder()
        writeWav(
            os.path.join(folder, "00000001.wav"),
            tone(1000, 1.0, rate=16000),
            rate=16000,
        )
        writeWav(
            os.path.join(folder, "00000002.wav"),
            tone(6000, 1.0, rate=16000),
            rate=16000,
        )
        catalogue = PromptCatalogue.load(folder)

        frames = catalogue.announcement("00000001", "PCMU")
        self.assertEqual(len(frames), 50)
        decoded = ulaw2linear(b"".join(frames))[800:]  # past the filter's start
        crossings = sum(1 for a, b in pairwise(decoded) if (a < 0) != (b < 0))
        self.assertApproximates(crossings / (len(decoded) / 8000), 2000, 20)
        rms = math.sqrt(sum(v * v for v in decoded) / len(decoded))
        self.assertApproximates(rms, 8000 / math.sqrt(2), 300)

        aliased = ulaw2linear(b"".join(catalogue.announcement("00000002", "PCMU")))[
            800:
        ]
        self.assertLess(max(abs(v) for v in aliased), 8000 / 100)  # < -40 dB

    def test_shippedPrompts(self) -> None:
        """
        The prompts shipped in the package load: the default ann_id1
        00080002, the example 00080003 and all ten digits, each at least a
        third of a second of audio.
        """
        catalogue = PromptCatalogue.load(PACKAGED_PROMPTS, required=["00080002"])
        self.assertTrue(catalogue.hasAnnouncement("00080002"))
        self.assertTrue(catalogue.hasAnnouncement("00080003"))
        self.assertGreater(catalogue.duration("00080002"), 1.5)
        for d in "0123456789":
            self.assertGreaterEqual(len(catalogue.digits(d, "PCMA")), 16)

    def test_oddlyNamedWavIsIgnoredWithWarning(self) -> None:
        """
        A C{.wav} whose name is not 8 digits can never be requested: it is
        skipped with a warning naming it, and other files are ignored.
        """
        folder = self.makeFolder({"00080002": tone(440, 0.1)})
        writeWav(os.path.join(folder, "welcome.wav"), tone(440, 0.1))
        with open(os.path.join(folder, "README"), "w") as f:
            f.write("notes\n")
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        catalogue = PromptCatalogue.load(folder)
        self.assertEqual(catalogue.annIds(), frozenset({"00080002"}))
        warnings = [e for e in events if e["log_level"].name == "warn"]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["path"], os.path.join(folder, "welcome.wav"))

    def test_unknownAnnouncement(self) -> None:
        """An ann id without a file is reported absent and cannot be fetched."""
        catalogue = PromptCatalogue.load(self.makeFolder({"00080002": tone(440, 0.1)}))
        self.assertFalse(catalogue.hasAnnouncement("00080009"))
        self.assertRaises(KeyError, catalogue.announcement, "00080009", "PCMU")

    def test_unknownCodec(self) -> None:
        """Only PCMU and PCMA are offered."""
        catalogue = PromptCatalogue.load(self.makeFolder({"00080002": tone(440, 0.1)}))
        self.assertRaises(ValueError, catalogue.announcement, "00080002", "G722")


class RejectTests(CatalogueTestMixin, SynchronousTestCase):
    def assertRejected(self, folder: str, path: str, *words: str) -> None:
        """Loading C{folder} fails with an error naming C{path} and C{words}."""
        error = self.assertRaises(PromptError, PromptCatalogue.load, folder)
        self.assertIn(path, str(error))
        for word in words:
            self.assertIn(word, str(error))

    def test_eightBit(self) -> None:
        """8-bit samples are rejected, naming the file and the sample size."""
        folder = self.makeFolder()
        path = os.path.join(folder, "00000001.wav")
        with wave.open(path, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(1)
            w.setframerate(8000)
            w.writeframes(bytes(range(256)))
        self.assertRejected(folder, path, "8-bit", "16-bit")

    def test_floatFormat(self) -> None:
        """An IEEE-float WAV (format 3) is rejected as not linear PCM."""
        folder = self.makeFolder()
        path = os.path.join(folder, "00000001.wav")
        writeRawWav(path, 3, 1, 8000, 32, bytes(3200))
        self.assertRejected(folder, path, "linear PCM")

    def test_alawWav(self) -> None:
        """An A-law WAV (format 6) is rejected as not linear PCM."""
        folder = self.makeFolder()
        path = os.path.join(folder, "00000001.wav")
        writeRawWav(path, 6, 1, 8000, 8, bytes(800))
        self.assertRejected(folder, path, "linear PCM")

    def test_rateBelow8kHz(self) -> None:
        """A rate below 8 kHz would sound muffled: rejected, naming the rate."""
        folder = self.makeFolder()
        path = os.path.join(folder, "00000001.wav")
        writeWav(path, tone(440, 0.5, rate=6000), rate=6000)
        self.assertRejected(folder, path, "6000 Hz")

    def test_notAWav(self) -> None:
        """A file that is not WAV at all is rejected, naming it."""
        folder = self.makeFolder()
        path = os.path.join(folder, "00000001.wav")
        with open(path, "wb") as f:
            f.write(b"ID3\x03\x00 this is an mp3, honest" * 10)
        self.assertRejected(folder, path, "not a usable WAV")

    def test_empty(self) -> None:
        """A WAV with no samples is rejected."""
        folder = self.makeFolder()
        path = os.path.join(folder, "00000001.wav")
        writeWav(path, [])
        self.assertRejected(folder, path, "no audio")

    def test_zeroBytes(self) -> None:
        """A zero-byte file (an interrupted copy) is rejected."""
        folder = self.makeFolder()
        path = os.path.join(folder, "00000001.wav")
        open(path, "wb").close()
        self.assertRejected(folder, path)

    def test_badDigitFile(self) -> None:
        """A broken digit prompt is named like an announcement."""
        folder = self.makeFolder()
        path = os.path.join(folder, "digits", "4.wav")
        writeWav(path, [], rate=8000)
        self.assertRejected(folder, path, "no audio")

    def test_missingDigit(self) -> None:
        """A missing digit file stops the load, naming the missing file."""
        folder = self.makeFolder()
        path = os.path.join(folder, "digits", "7.wav")
        os.remove(path)
        self.assertRejected(folder, path, "missing")

    def test_missingFolder(self) -> None:
        """A prompts folder that does not exist is named in the error."""
        folder = self.mktemp()
        error = self.assertRaises(PromptError, PromptCatalogue.load, folder)
        self.assertIn(folder, str(error))

    def test_requiredAnnouncementMissing(self) -> None:
        """
        An ann id that must exist (the configured default ann_id1) but has no
        file stops the load, naming the file expected.
        """
        folder = self.makeFolder({"00080003": tone(440, 0.1)})
        error = self.assertRaises(
            PromptError, PromptCatalogue.load, folder, required=["00080002"]
        )
        self.assertIn(os.path.join(folder, "00080002.wav"), str(error))


class DigitsTests(CatalogueTestMixin, SynchronousTestCase):
    def test_spokenDigitByDigitWithPauses(self) -> None:
        """
        A digit string is the digit prompts in order with 150 ms of silence
        between them (none before or after), cut into padded 20 ms frames.
        """
        folder = self.makeFolder()
        catalogue = PromptCatalogue.load(folder)
        one = b"".join(catalogue.digits("1", "PCMU"))[:840]
        two = b"".join(catalogue.digits("2", "PCMU"))[:840]
        audio = b"".join(catalogue.digits("121", "PCMU"))
        pause = b"\xff" * 1200
        expected = one + pause + two + pause + one
        self.assertEqual(audio[: len(expected)], expected)
        self.assertEqual(len(audio), 4960)  # 4920 rounded up to 31 frames
        self.assertEqual(audio[len(expected) :], b"\xff" * 40)

    def test_onlyDigits(self) -> None:
        """Anything but 0-9 cannot be spoken."""
        catalogue = PromptCatalogue.load(self.makeFolder())
        self.assertRaises(ValueError, catalogue.digits, "12#", "PCMU")
        self.assertRaises(ValueError, catalogue.digits, "\u0663", "PCMU")


class RingbackTests(CatalogueTestMixin, SynchronousTestCase):
    def test_cadence(self) -> None:
        """
        The default ringback (425 Hz, 1 s on, 4 s off) is one 5 s cycle: 50
        frames of a 425 Hz tone at about -10 dBm0, then 200 silent frames.
        """
        catalogue = PromptCatalogue.load(self.makeFolder())
        frames = catalogue.ringback(425, 1.0, 4.0, "PCMU")
        self.assertEqual(len(frames), 250)
        self.assertEqual(b"".join(frames[50:]), b"\xff" * 32000)
        on = ulaw2linear(b"".join(frames[:50]))
        crossings = sum(1 for a, b in pairwise(on) if (a < 0) != (b < 0))
        self.assertApproximates(crossings, 850, 4)
        middle = on[400:7600]
        rms = math.sqrt(sum(v * v for v in middle) / len(middle))
        dBm0 = 20 * math.log10(rms / (22580 / math.sqrt(2)))
        self.assertApproximates(dBm0, -10, 0.5)
        self.assertLess(abs(on[0]), 50)  # ramped in: no click
        self.assertLess(abs(on[-1]), 50)

    def test_dualToneAndRounding(self) -> None:
        """
        A dual tone (440+480 Hz) keeps the same total level; a cadence that
        is not whole frames is rounded up by lengthening the silence; the
        result is cached per parameters and codec.
        """
        catalogue = PromptCatalogue.load(self.makeFolder())
        frames = catalogue.ringback((440, 480), 0.5, 0.31, "PCMA")
        self.assertEqual(len(frames), 41)  # 0.81 s -> 0.82 s
        on = [alawToLinear(c) for c in b"".join(frames[:25])][400:3600]
        rms = math.sqrt(sum(v * v for v in on) / len(on))
        self.assertApproximates(20 * math.log10(rms / (22580 / math.sqrt(2))), -10, 0.5)
        self.assertIs(catalogue.ringback((440, 480), 0.5, 0.31, "PCMA"), frames)
        self.assertIsNot(catalogue.ringback((440, 480), 0.5, 0.31, "PCMU"), frames)

    def test_badCadence(self) -> None:
        """A cadence without tone, or a tone outside the band, is refused."""
        catalogue = PromptCatalogue.load(self.makeFolder())
        self.assertRaises(ValueError, catalogue.ringback, 425, 0, 4, "PCMU")
        self.assertRaises(ValueError, catalogue.ringback, 5000, 1, 4, "PCMU")


class AlawTests(SynchronousTestCase):
    def test_knownValues(self) -> None:
        """
        The A-law codec matches G.711: zero is 0xD5 (decoding to 8), -1 is
        0x55, full scale is 0xAA / 0x2A (decoding to +-32256).
        """
        self.assertEqual(linearToAlaw(0), 0xD5)
        self.assertEqual(linearToAlaw(-1), 0x55)
        self.assertEqual(linearToAlaw(32767), 0xAA)
        self.assertEqual(linearToAlaw(-32768), 0x2A)
        self.assertEqual(alawToLinear(0xD5), 8)
        self.assertEqual(alawToLinear(0xAA), 32256)
        self.assertEqual(alawToLinear(0x2A), -32256)
        self.assertEqual(alawToLinear(linearToAlaw(1000)), 1008)

    def test_roundTripWithinQuantisation(self) -> None:
        """Every 16-bit value survives encode/decode within quantisation error."""
        for sample in range(-32768, 32768, 7):
            self.assertTrue(within(sample, alawToLinear(linearToAlaw(sample))), sample)

    def test_matchesAudioop(self) -> None:
        """Where the old stdlib audioop exists, every code agrees with it."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                import audioop
            except ImportError:
                raise SkipTest("no audioop (Python >= 3.13)") from None
        samples = array("h", range(-32768, 32768))
        ours = bytes(linearToAlaw(s) for s in samples)
        self.assertEqual(ours, audioop.lin2alaw(samples.tobytes(), 2))
        decoded = array("h", (alawToLinear(c) for c in range(256))).tobytes()
        self.assertEqual(decoded, audioop.alaw2lin(bytes(range(256)), 2))
