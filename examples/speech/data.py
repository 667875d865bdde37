"""The spoken digits as a dataset factory: `--dataset examples/speech/data.py:digits`.

Each sample is the clip's log-mel spectrogram, float32 (40, 101): 40 HTK mel bands of 25 ms Hann
windows every 10 ms over one second at 22,050 Hz, computed with `torch.stft` (no torchaudio) from
the clips in ROOT/spoken-digits/<split>/ (`--data-root ROOT`, default `data`; made by
`python -m examples.speech.make_data`). A (40, 101) float tensor would pass for a grey image, so the
dataset says `sample_kind = "tensor"`: its values reach the teacher and the students bit for bit.
The features of a split are computed once and kept beside its clips (logmel-<digest>.pt, named after
the manifest and the front-end's settings, so a changed split or front-end computes them anew).
Keys are the clips' paths (`seven/train-00017.wav`).
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import wave
from pathlib import Path

import numpy as np
import torch

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
FOLDER = "spoken-digits"
RATE = 22050
N_MELS, WINDOW_MS, HOP_MS = 40, 25.0, 10.0


def mel_filter_bank(n_mels: int, n_fft: int, rate: int, fmin: float = 20.0, fmax: float | None = None) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) triangular filters, equally spaced on the HTK mel scale."""
    fmax = fmax or rate / 2

    def mel(f):
        return 2595 * math.log10(1 + f / 700)

    edges = 700 * (10 ** (torch.linspace(mel(fmin), mel(fmax), n_mels + 2, dtype=torch.float64) / 2595) - 1)
    bins = torch.linspace(0, rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising, falling = (bins - lower) / (centre - lower), (upper - bins) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0).to(torch.float32)


def log_mel(waves: torch.Tensor, rate: int = RATE) -> torch.Tensor:
    """(B, N) float32 waveforms -> (B, N_MELS, frames) log mel energies."""
    win_length = round(rate * WINDOW_MS / 1000)
    n_fft = 1 << (win_length - 1).bit_length()
    spec = torch.stft(
        waves,
        n_fft,
        hop_length=round(rate * HOP_MS / 1000),
        win_length=win_length,
        window=torch.hann_window(win_length),
        center=True,
        return_complex=True,
    )
    power = spec.real**2 + spec.imag**2
    return torch.log(mel_filter_bank(N_MELS, n_fft, rate) @ power + 1e-6)


def read_clip(path: Path) -> torch.Tensor:
    with wave.open(str(path)) as clip:
        if clip.getframerate() != RATE or clip.getsampwidth() != 2 or clip.getnchannels() != 1:
            raise ValueError(f"{path}: expected 16-bit mono {RATE} Hz")
        pcm = np.frombuffer(clip.readframes(clip.getnframes()), dtype="<i2")
    return torch.from_numpy(pcm.astype(np.float32) / 32768)


class SpokenDigits(torch.utils.data.Dataset):
    classes = list(WORDS)
    sample_kind = "tensor"  # (40, 101) features, not a grey image

    def __init__(self, folder: Path):
        manifest = folder / "manifest.tsv"
        if not manifest.is_file():
            raise FileNotFoundError(
                f"{manifest} not found: make the clips first with "
                f"`python -m examples.speech.make_data --root {folder.parent.parent}`"
            )
        text = manifest.read_text()
        rows = [line.split("\t") for line in text.splitlines()[1:] if line]
        self.keys = [row[0] for row in rows]
        self.targets = [WORDS.index(row[1]) for row in rows]
        settings = f"{text}|{N_MELS}|{WINDOW_MS}|{HOP_MS}|{torch.__version__}"
        self.features = _cached(folder / f"logmel-{hashlib.sha1(settings.encode()).hexdigest()[:12]}.pt", self._compute)

    def _compute(self, folder: Path) -> torch.Tensor:
        chunks = []
        for start in range(0, len(self.keys), 256):
            waves = torch.stack([read_clip(folder / key) for key in self.keys[start : start + 256]])
            chunks.append(log_mel(waves))
        return torch.cat(chunks)

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int):
        return self.features[index], self.targets[index]


def _cached(path: Path, compute) -> torch.Tensor:
    if path.is_file():
        return torch.load(path, weights_only=True)
    features = compute(path.parent)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    try:
        torch.save(features, temp)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return features


def digits(split: str = "train", root: str = "data") -> SpokenDigits:
    return SpokenDigits(Path(root) / FOLDER / split)
