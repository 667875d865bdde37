"""Spoken digits from Debian's espeak-ng: "zero".."nine" in many voices, speeds and pitches.

    python -m examples.speech.make_data --root data            # 3,000 train + 1,000 test clips
    python -m examples.speech.make_data --root data --train-per-word 20 --test-per-word 5

Writes ROOT/spoken-digits/<split>/<word>/<name>.wav (16-bit mono, 22,050 Hz, exactly 1 s) and
ROOT/spoken-digits/<split>/manifest.tsv (one line per clip: key, word, voice, variant, speed, pitch,
SNR). A voice is an espeak-ng accent (`en-us`, `en-gb-scotland`, ...) with a speaker variant
(`+f3`, `+klatt2`, `+whisper`, ...): the test split's variants are never heard in training (held-out
speakers, every accent). Each clip is the word, trimmed of silence, placed at a random offset in the
second, with coloured noise (white, pink or brown) at a random SNR.

Deterministic and resumable: clip j of a split is a function of (seed, split, j) alone, so a larger
run extends a smaller one and an interrupted run continues where it stopped (every file is written
under a temporary name and renamed). Needs `espeak-ng` (`apt-get install espeak-ng`); about ten
seconds per thousand clips on one core.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
RATE = 22050  # espeak-ng's own sample rate
LENGTH = RATE  # one second per clip
FOLDER = "spoken-digits"
ACCENTS = ("en-gb", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd", "en-029")
# Speaker variants shipped with espeak-ng 1.51 (its voices/!v folder); every fifth is held out for test.
VARIANTS = (
    "Alex", "Alicia", "Andrea", "Andy", "Annie", "AnxiousAndy", "Demonic", "Denis", "Diogo", "Gene",
    "Gene2", "Henrique", "Hugo", "Jacky", "Lee", "Marco", "Mario", "Michael", "Mike", "Mr", "Nguyen",
    "RicishayMax", "RicishayMax2", "RicishayMax3", "Storm", "Tweaky", "UniRobot", "adam", "anika",
    "anikaRobot", "announcer", "antonio", "aunty", "belinda", "benjamin", "boris", "caleb", "croak",
    "david", "ed", "edward", "edward2", "f1", "f2", "f3", "f4", "f5", "grandma", "grandpa", "gustave",
    "iven", "iven2", "iven3", "iven4", "john", "kaukovalta", "klatt", "klatt2", "klatt3", "klatt4",
    "klatt5", "klatt6", "linda", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "marcelo", "max",
    "michel", "miguel", "norbert", "pablo", "paul", "pedro", "quincy", "rob", "robert", "robosoft",
    "robosoft2", "robosoft3", "robosoft4", "robosoft5", "robosoft6", "robosoft7", "robosoft8", "sandro",
    "shelby", "steph", "steph2", "steph3", "travis", "victor", "whisper", "whisperf", "zac",
)  # fmt: skip
TEST_VARIANTS = VARIANTS[::5]
TRAIN_VARIANTS = tuple(v for v in VARIANTS if v not in TEST_VARIANTS)
SPLIT_IDS = {"train": 0, "test": 1}
MANIFEST_COLUMNS = ("key", "word", "accent", "variant", "speed", "pitch", "snr_db", "noise")


def espeak() -> str:
    """The espeak-ng executable, or a one-line SystemExit saying how to get it."""
    found = shutil.which("espeak-ng")
    if found is None:
        raise SystemExit("espeak-ng is not installed: apt-get install espeak-ng (Debian/Ubuntu)")
    return found


def installed_variants(exe: str) -> set[str]:
    listing = subprocess.run([exe, "--voices=variant"], capture_output=True, text=True, check=True).stdout
    return {line.split()[4].split("/", 1)[1] for line in listing.splitlines()[1:] if "/" in line}


def clip_plan(split: str, index: int, seed: int) -> dict:
    """Everything about clip `index` of `split`: a function of (seed, split, index) alone."""
    rng = np.random.default_rng([seed, SPLIT_IDS[split], index])
    variants = TEST_VARIANTS if split == "test" else TRAIN_VARIANTS
    word = WORDS[index % len(WORDS)]
    plan = {
        "word": word,
        "accent": ACCENTS[int(rng.integers(len(ACCENTS)))],
        "variant": variants[int(rng.integers(len(variants)))],
        "speed": int(rng.integers(110, 231)),  # words per minute (espeak-ng's default is 175)
        "pitch": int(rng.integers(15, 86)),  # 0..99, default 50
        "snr_db": round(float(rng.uniform(0.0, 20.0)), 1),
        "noise": ("white", "pink", "brown")[int(rng.integers(3))],
        "offset": float(rng.uniform()),  # where in the free part of the second the word starts
        "noise_seed": int(rng.integers(2**31)),
    }
    plan["key"] = f"{word}/{split}-{index:05d}.wav"
    return plan


def synthesise(exe: str, plan: dict) -> np.ndarray:
    """The word as float32 samples at RATE, as espeak-ng says it."""
    with tempfile.NamedTemporaryFile(suffix=".wav") as out:
        voice = f"{plan['accent']}+{plan['variant']}"
        command = [exe, "-v", voice, "-s", str(plan["speed"]), "-p", str(plan["pitch"]), "-w", out.name, plan["word"]]
        subprocess.run(command, check=True, capture_output=True)
        return read_wav(out.name)


def read_wav(path) -> np.ndarray:
    with wave.open(str(path)) as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1 or w.getframerate() != RATE:
            raise ValueError(f"{path}: expected 16-bit mono {RATE} Hz")
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768


def write_wav(path: Path, samples: np.ndarray) -> None:
    pcm = np.clip(np.round(samples * 32767), -32768, 32767).astype("<i2")
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        with wave.open(temp, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RATE)
            w.writeframes(pcm.tobytes())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def trim(samples: np.ndarray, threshold: float = 0.01) -> np.ndarray:
    loud = np.flatnonzero(np.abs(samples) > threshold)
    return samples[loud[0] : loud[-1] + 1] if len(loud) else samples


def coloured_noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-power white, pink (1/f) or brown (1/f^2) noise."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n)
    freqs[0] = freqs[1]
    spectrum *= {"white": 1.0, "pink": freqs**-0.5, "brown": freqs**-1.0}[kind]
    noise = np.fft.irfft(spectrum, n)
    return noise / np.sqrt(np.mean(noise**2))


def render(word: np.ndarray, plan: dict) -> np.ndarray:
    """One second: the trimmed word at its offset (cut to the second if longer), plus noise at its SNR,
    peak-normalised to 0.9."""
    word = trim(word)[:LENGTH]
    start = int(plan["offset"] * (LENGTH - len(word)))
    clip = np.zeros(LENGTH, dtype=np.float64)
    clip[start : start + len(word)] = word
    signal_power = np.mean(word.astype(np.float64) ** 2)
    rng = np.random.default_rng(plan["noise_seed"])
    noise = coloured_noise(plan["noise"], LENGTH, rng) * np.sqrt(signal_power / 10 ** (plan["snr_db"] / 10))
    clip += noise
    return (clip * (0.9 / max(np.abs(clip).max(), 1e-9))).astype(np.float32)


def make_split(root: Path, split: str, per_word: int, seed: int, exe: str, progress: bool = True) -> Path:
    folder = Path(root) / FOLDER / split
    plans = [clip_plan(split, i, seed) for i in range(per_word * len(WORDS))]
    for word in WORDS:
        (folder / word).mkdir(parents=True, exist_ok=True)
    made = 0
    for i, plan in enumerate(plans):
        path = folder / plan["key"]
        if path.exists():
            continue
        write_wav(path, render(synthesise(exe, plan), plan))
        made += 1
        if progress and made % 500 == 0:
            print(f"{split}: {i + 1}/{len(plans)} clips", file=sys.stderr, flush=True)
    lines = ["\t".join(MANIFEST_COLUMNS)] + ["\t".join(str(p[c]) for c in MANIFEST_COLUMNS) for p in plans]
    manifest = folder / "manifest.tsv"
    temp = manifest.with_suffix(".tsv.tmp")
    temp.write_text("\n".join(lines) + "\n")
    os.replace(temp, manifest)
    return folder


def make_digits(root: str | Path, train_per_word: int = 300, test_per_word: int = 100, seed: int = 0) -> Path:
    """Generate (or complete) both splits under ROOT/spoken-digits and return that folder."""
    exe = espeak()
    missing = set(VARIANTS) - installed_variants(exe)
    if missing:
        raise SystemExit(f"this espeak-ng lacks the voice variants {sorted(missing)}; the example expects 1.51")
    for split, per_word in (("train", train_per_word), ("test", test_per_word)):
        make_split(Path(root), split, per_word, seed, exe)
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip()
    info = {"espeak_ng": version, "seed": seed, "train_per_word": train_per_word, "test_per_word": test_per_word}
    (Path(root) / FOLDER / "info.json").write_text(json.dumps(info, indent=1) + "\n")
    return Path(root) / FOLDER


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="data", help="data root (the clips go to ROOT/spoken-digits)")
    parser.add_argument("--train-per-word", type=int, default=300)
    parser.add_argument("--test-per-word", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    folder = make_digits(args.root, args.train_per_word, args.test_per_word, args.seed)
    print(f"spoken digits in {folder}")


if __name__ == "__main__":
    main()
