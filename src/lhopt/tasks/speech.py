"""Speech recognition of spoken digit strings: synthesised speech, log-mel features, a
Deep-Speech-2-shaped model (2-D convolutions, bidirectional GRU, CTC), greedy decoding.

The corpus is synthesised with eSpeak NG (the library inside the `espeakng-loader` wheel, called
through ctypes): each utterance is 3-5 digits ("three one four") spoken by one speaker — an
English accent and a voice variant — at a random rate and pitch, with white noise added at a random
signal-to-noise ratio. The voice variants of the train, validation and test speakers are
disjoint, so the test measures recognition of unseen voices. Everything lhopt draws comes from
fixed seeds; eSpeak NG's own output varies by up to a few hundred samples between calls, so the
features are computed once per cache folder and every run reads that file (`corpus_path`,
docs/data.md). Test metric: the digit error rate (edit distance over reference length, greedy
CTC decoding).
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import math
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lhopt.extras import require
from lhopt.tasks.base import Task, TaskConfig
from lhopt.tasks.data import cache_dir
from lhopt.tasks.schema import Param, Schema

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
BLANK = 0  # CTC blank; digit d is label d + 1
NUM_LABELS = len(DIGITS) + 1
ACCENTS = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc")
VARIANTS = {
    "train": (
        "m1",
        "m2",
        "m3",
        "m4",
        "f1",
        "f2",
        "f3",
        "klatt",
        "klatt3",
        "adam",
        "benjamin",
        "david",
        "linda",
        "john",
        "max",
        "michel",
    ),
    "val": ("m5", "f4", "klatt2"),
    "test": ("m6", "m7", "f5", "klatt4", "edward", "grandma"),
}
SIZES = {"train": 4000, "val": 300, "test": 600}
SEEDS = {"train": 11, "val": 12, "test": 13}
RATE_WPM = (130, 230)
PITCH = (25, 75)
SNR_DB = (0.0, 20.0)
N_MELS, N_FFT, HOP = 40, 512, 256  # at eSpeak's 22,050 Hz: 23 ms windows, 11.6 ms hop

SCHEMA = Schema(
    "speech",
    {
        "channels": Param("int", 4, 32, log=True, doc="channels of both 2-D convolutions"),
        "hidden": Param("int", 16, 256, log=True, doc="GRU units per direction"),
        "layers": Param("int", 1, 3, doc="bidirectional GRU layers"),
        "batch": Param("int", 8, 64, log=True),
        "budget": Param("int", 300, 2000, log=True, limits=(20, 100_000)),
    },
)


# -- synthesis --------------------------------------------------------------------------------

_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class ESpeak:
    """eSpeak NG in synchronous mode: `say(text)` returns int16 samples at `sample_rate`."""

    RATE, PITCH_PARAM = 1, 3  # espeak_PARAMETER values

    def __init__(self) -> None:
        espeakng_loader = require("espeakng_loader", "bench")
        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.lib.espeak_Initialize.restype = ctypes.c_int
        data = espeakng_loader.get_data_path().encode()
        self.sample_rate = self.lib.espeak_Initialize(2, 0, data, 0)  # 2 = synchronous output
        if self.sample_rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed ({self.sample_rate})")
        self._chunks: list[np.ndarray] = []

        def collect(wav, n, events):
            if n > 0:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        self._callback = _SYNTH_CALLBACK(collect)  # kept alive as long as the library uses it
        self.lib.espeak_SetSynthCallback(self._callback)

    def say(self, text: str, voice: str, rate: int, pitch: int) -> np.ndarray:
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"eSpeak NG has no voice {voice!r}")
        self.lib.espeak_SetParameter(self.RATE, rate, 0)
        self.lib.espeak_SetParameter(self.PITCH_PARAM, pitch, 0)
        self._chunks = []
        data = text.encode() + b"\0"
        err = self.lib.espeak_Synth(data, len(data), 0, 1, 0, 1, None, None)  # 1 = UTF-8 chars
        if err != 0:
            raise RuntimeError(f"espeak_Synth failed ({err}) on {text!r}")
        self.lib.espeak_Synchronize()
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)


@dataclass(frozen=True)
class Utterance:
    digits: tuple[int, ...]
    voice: str
    rate: int
    pitch: int
    snr_db: float

    def text(self) -> str:
        return " ".join(DIGITS[d] for d in self.digits)


def plan_split(split: str, n: int | None = None) -> list[Utterance]:
    """The utterances of a split, drawn from its fixed seed."""
    rng = np.random.default_rng(SEEDS[split])
    out = []
    for _ in range(SIZES[split] if n is None else n):
        accent = ACCENTS[rng.integers(len(ACCENTS))]
        variant = VARIANTS[split][rng.integers(len(VARIANTS[split]))]
        digits = tuple(int(d) for d in rng.integers(0, 10, int(rng.integers(3, 6))))
        out.append(
            Utterance(
                digits,
                f"{accent}+{variant}",
                int(rng.integers(*RATE_WPM)),
                int(rng.integers(*PITCH)),
                float(rng.uniform(*SNR_DB)),
            )
        )
    return out


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """float32 audio in [-1, 1] with white noise at `snr_db` relative to the signal's power."""
    x = audio.astype(np.float32) / 32768.0
    power = float(np.mean(x**2)) if len(x) else 0.0
    noise = rng.standard_normal(len(x)).astype(np.float32)
    return x + noise * math.sqrt(power / 10 ** (snr_db / 10))


def mel_filterbank(sample_rate: int, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters evenly spaced on the mel scale (HTK formula)."""

    def mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def hz(m):
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    edges = hz(np.linspace(mel(0.0), mel(sample_rate / 2), n_mels + 2))
    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs - lower) / (centre - lower)
    falling = (upper - freqs) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def log_mel(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """(frames, N_MELS) log-mel energies of float audio: Hann windows of N_FFT, hop HOP."""
    x = torch.as_tensor(audio, dtype=torch.float32)
    if len(x) < N_FFT:
        x = nn.functional.pad(x, (0, N_FFT - len(x)))
    spec = (
        torch.stft(
            x, N_FFT, HOP, window=torch.hann_window(N_FFT), center=False, return_complex=True
        ).abs()
        ** 2
    )
    mels = torch.as_tensor(mel_filterbank(sample_rate)) @ spec
    return torch.log(mels + 1e-6).T.numpy()


# -- the cached corpus ------------------------------------------------------------------------

CORPUS_VERSION = 1


def corpus_path():
    return cache_dir() / f"digits-speech-v{CORPUS_VERSION}.npz"


def data_fingerprint() -> str:
    """A digest of the corpus this process reads (loaded first if it has not been): runs on
    another synthesis read other features, so the curve cache keys speech runs by it."""
    load_corpus()
    return _DIGEST


def synthesise(split: str, n: int | None = None, engine: ESpeak | None = None) -> dict:
    """Features of a split: concatenated frames (float16), per-utterance offsets, labels."""
    engine = engine or ESpeak()
    rng = np.random.default_rng(SEEDS[split] + 1000)  # the noise
    feats, labels, speakers = [], [], []
    for u in plan_split(split, n):
        audio = add_noise(engine.say(u.text(), u.voice, u.rate, u.pitch), u.snr_db, rng)
        feats.append(log_mel(audio, engine.sample_rate).astype(np.float16))
        labels.append(u.digits)
        speakers.append(u.voice)
    lengths = np.array([len(f) for f in feats])
    label_lengths = np.array([len(x) for x in labels])
    return {
        "frames": np.concatenate(feats),
        "lengths": lengths,
        "labels": np.concatenate(labels).astype(np.int64),
        "label_lengths": label_lengths,
        "speakers": np.array(speakers),
    }


_CORPUS: dict | None = None
_DIGEST: str | None = None  # of the bytes `_CORPUS` was read from


def load_corpus() -> dict[str, dict]:
    """Every split's features, synthesised once (about a minute, see docs/data.md) and cached."""
    global _CORPUS, _DIGEST
    if _CORPUS is not None:
        return _CORPUS
    path = corpus_path()
    if not path.exists():
        start = time.perf_counter()
        engine = ESpeak()
        arrays = {}
        for split in SIZES:
            for k, v in synthesise(split, engine=engine).items():
                arrays[f"{split}/{k}"] = v
        arrays["seconds"] = np.array(time.perf_counter() - start)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, **arrays)
        try:  # the first build wins: two builds differ (module doc), and every run reads one
            os.link(tmp, path)
        except FileExistsError:
            pass
        except OSError:  # no hard links on this file system
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
    raw = path.read_bytes()
    with np.load(io.BytesIO(raw)) as z:
        _CORPUS = {
            s: {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith(s + "/")} for s in SIZES
        }
    _DIGEST = hashlib.sha256(raw).hexdigest()[:16]
    return _CORPUS


def as_tensors(split: dict, frames: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per-utterance feature tensors (views of `frames`, the split's frames as prepared by the
    caller) and label tensors."""
    labels = torch.as_tensor(split["labels"])
    return (
        list(torch.split(frames, split["lengths"].tolist())),
        list(torch.split(labels, split["label_lengths"].tolist())),
    )


# -- model, decoding, metric ------------------------------------------------------------------


class DeepSpeech2(nn.Module):
    """Two 2-D convolutions over (time, mel) with batch norm and clipped ReLU, a bidirectional
    GRU, and a linear layer to the labels (blank + 10 digits), as in Amodei et al. 2016."""

    def __init__(self, channels: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, (5, 11), stride=(2, 2), padding=(2, 5)),
            nn.BatchNorm2d(channels),
            nn.Hardtanh(0, 20),
            nn.Conv2d(channels, channels, (5, 11), stride=(1, 2), padding=(2, 5)),
            nn.BatchNorm2d(channels),
            nn.Hardtanh(0, 20),
        )
        self.rnn = nn.GRU(
            channels * (N_MELS // 4), hidden, layers, batch_first=True, bidirectional=True
        )
        self.out = nn.Linear(2 * hidden, NUM_LABELS)

    @staticmethod
    def output_lengths(lengths: torch.Tensor) -> torch.Tensor:
        return (lengths - 1) // 2 + 1  # the first convolution's stride 2 in time

    def forward(self, x: torch.Tensor, lengths: torch.Tensor):
        """x: (batch, frames, N_MELS) -> (log-probs (batch, frames', labels), lengths')."""
        h = self.conv(x.unsqueeze(1))  # (batch, channels, frames', mels')
        h = h.permute(0, 2, 1, 3).flatten(2)
        out_len = self.output_lengths(lengths)
        packed = nn.utils.rnn.pack_padded_sequence(
            h, out_len, batch_first=True, enforce_sorted=False
        )
        h, _ = self.rnn(packed)
        h, _ = nn.utils.rnn.pad_packed_sequence(h, batch_first=True, total_length=x.shape[1])
        h = h[:, : int(out_len.max())]
        return self.out(h).log_softmax(-1), out_len


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """Best path: the most likely label per frame, repeats merged, blanks removed (digits 0-9)."""
    best = log_probs.argmax(-1)
    out = []
    for path, n in zip(best.tolist(), lengths.tolist(), strict=True):
        seq, prev = [], BLANK
        for label in path[:n]:
            if label != prev and label != BLANK:
                seq.append(label - 1)
            prev = label
        out.append(seq)
    return out


def edit_distance(a: list[int], b: list[int]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def pad_batch(feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(f) for f in feats])
    return nn.utils.rnn.pad_sequence(feats, batch_first=True), lengths


class SpeechTask(Task):
    family = "speech"

    def __init__(self, config: TaskConfig, seed: int) -> None:
        super().__init__(config, seed)
        p = config.p
        torch.manual_seed(seed)
        self.model = DeepSpeech2(p["channels"], p["hidden"], p["layers"])
        corpus = load_corpus()
        frames = {s: torch.as_tensor(corpus[s]["frames"].astype(np.float32)) for s in SIZES}
        # one feature normalisation from the training split (mean and std per mel band), applied
        # once here rather than to every batch
        mean, std = frames["train"].mean(0), frames["train"].std(0) + 1e-5
        self.data = {s: as_tensors(corpus[s], (frames[s] - mean) / std) for s in SIZES}
        self.ctc = nn.CTCLoss(blank=BLANK, zero_infinity=True)

    def _ctc_loss(self, feats, labels) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, lengths = pad_batch(feats)
        log_probs, out_len = self.model(x, lengths)
        targets = torch.cat(labels) + 1
        target_len = torch.tensor([len(t) for t in labels])
        loss = self.ctc(log_probs.transpose(0, 1), targets, out_len, target_len)
        return loss, log_probs, out_len

    def train_loss(self) -> torch.Tensor:
        feats, labels = self.data["train"]
        idx = torch.randint(
            0, len(feats), (self.config.p["batch"],), generator=self.batch_generator
        ).tolist()
        return self._ctc_loss([feats[i] for i in idx], [labels[i] for i in idx])[0]

    def _eval_loss(self, split: str) -> float:
        return float(self._ctc_loss(*self.data[split])[0])

    def _test_metrics(self) -> dict[str, float]:
        feats, labels = self.data["test"]
        loss, log_probs, out_len = self._ctc_loss(feats, labels)
        hyps = greedy_decode(log_probs, out_len)
        errors = sum(edit_distance(h, r.tolist()) for h, r in zip(hyps, labels, strict=True))
        exact = sum(h == r.tolist() for h, r in zip(hyps, labels, strict=True))
        return {
            "error_rate": errors / sum(len(r) for r in labels),
            "string_accuracy": exact / len(labels),
            "loss": float(loss),
        }

    def descriptor_extras(self) -> list[float]:
        p = self.config.p
        return [float(p["layers"]), 0.0, math.log2(p["hidden"]) / 8]
