"""Spoken digits end to end: espeak-ng clips -> CNN teacher -> cache -> tiny CNN student.

    python -m examples.speech [--root data] [--out data/examples/speech]

Runs (and prints) `steps(SpeechConfig())`; see docs/examples.md, "Speech: spoken digits".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from examples.common import HERE, distill_steps, parse_config, python_m, results, run_steps, spec

FOLDER = HERE / "speech"


@dataclass(frozen=True)
class SpeechConfig:
    root: str = "data"  # the clips go to ROOT/spoken-digits
    out: str = "data/examples/speech"
    train_per_word: int = 200
    test_per_word: int = 60
    teacher_epochs: int = 12
    student_epochs: int = 12
    workers: int = 0
    seed: int = 0


def dataset() -> str:
    return spec(FOLDER / "data.py", "digits")


def teacher() -> str:
    return spec(FOLDER / "models.py", "cnn")


def student() -> str:
    return spec(FOLDER / "models.py", "tiny_cnn")


def steps(c: SpeechConfig) -> dict[str, list[str]]:
    common = ["--data-root", c.root, "--workers", c.workers, "--seed", c.seed, "--overwrite"]
    sizes = ["--train-per-word", c.train_per_word, "--test-per-word", c.test_per_word]
    return {
        "data": python_m("examples.speech.make_data", "--root", c.root, *sizes),
        **distill_steps(Path(c.out), dataset(), teacher(), student(), (c.teacher_epochs, c.student_epochs), common),
    }


RUNS = {
    "teacher cnn, labels": "teacher",
    "student tiny_cnn, labels only (CE)": "student-ce",
    "student tiny_cnn, from the cache (KD T=4, alpha=0.9)": "student-kd",
}


def main(argv=None) -> None:
    config = parse_config(SpeechConfig, __doc__, argv)
    seconds = run_steps(steps(config))
    print("\n" + results(Path(config.out), RUNS, seconds))


if __name__ == "__main__":
    main()
