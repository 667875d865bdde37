"""Debian descriptions by section end to end: MiniLM teacher -> cache -> bag-of-n-grams student.

    python -m examples.text [--root data] [--out data/examples/text]

Runs (and prints) `steps(TextConfig())`; see docs/examples.md, "Text: Debian package sections".
`encoder_steps(config)` are the commands of the encoder alone (no classes: its embeddings cached and
distilled into the same student with each loss from embeddings), which `bench/text_encoder.py` runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from examples.common import HERE, distill_steps, parse_config, python_m, results, run_steps, spec

FOLDER = HERE / "text"
# The bag of n-grams learns with AdamW at a high rate and no weight decay (its embeddings are sparse
# features); the teacher's last layer and head with AdamW at 5e-4.
STUDENT_OPTIM = ["--optimizer", "adamw", "--lr", "0.01", "--weight-decay", "0"]
TEACHER_OPTIM = ["--optimizer", "adamw", "--lr", "5e-4"]


@dataclass(frozen=True)
class TextConfig:
    root: str = "data"  # the corpus goes to ROOT/debian-sections
    out: str = "data/examples/text"
    train_per_class: int = 200
    test_per_class: int = 40
    sections: str = ""  # comma-separated; empty: the ten of examples.text.make_data.SECTIONS
    teacher_epochs: int = 3
    student_epochs: int = 15
    workers: int = 0
    seed: int = 0


def dataset() -> str:
    return spec(FOLDER / "data.py", "sections")


def teacher() -> str:
    return spec(FOLDER / "models.py", "minilm")


def student() -> str:
    return spec(FOLDER / "models.py", "ngrams")


def encoder() -> str:
    return spec(FOLDER / "models.py", "minilm_encoder")


EMBED_LOSSES = ("embed-cosine", "embed-cosine-l1", "embed-relational")


def encoder_steps(c: TextConfig, losses=EMBED_LOSSES) -> dict[str, list[str]]:
    """After the data step: the sentence encoder's embeddings of the training and the test split cached
    (`--targets embedding`), then the student trained from them with each loss, its features probed on
    the test split beside the teacher's (`--probe-teacher`). Steps `encoder-cache`, `encoder-test-cache`,
    `student-LOSS`."""
    out = Path(c.out)
    common = ["--data-root", c.root, "--workers", c.workers, "--seed", c.seed, "--overwrite"]
    build = ["softlabels", "build", "--dataset", dataset(), "--teacher", encoder(), "--targets", "embedding"]
    probes = ["--probe", "knn", "--probe", "linear", "--probe-teacher", out / "encoder-test.h5"]
    fit = ["--student", student(), "--epochs", c.student_epochs, *STUDENT_OPTIM, *probes, *common]
    return {
        "encoder-cache": python_m(*build, *common, "--out", out / "encoder.h5"),
        "encoder-test-cache": python_m(*build, "--split", "test", *common, "--out", out / "encoder-test.h5"),
        **{
            f"student-{loss}": python_m(
                "trainer", "fit", "--cache", out / "encoder.h5", "--loss", loss, *fit, "--out", out / f"student-{loss}"
            )
            for loss in losses
        },
    }


def steps(c: TextConfig) -> dict[str, list[str]]:
    common = ["--data-root", c.root, "--workers", c.workers, "--seed", c.seed, "--overwrite"]
    sizes = ["--train-per-class", c.train_per_class, "--test-per-class", c.test_per_class]
    return {
        "data": python_m(
            "examples.text.make_data", "--root", c.root, *sizes, *(["--sections", c.sections] * bool(c.sections))
        ),
        **distill_steps(
            Path(c.out),
            dataset(),
            teacher(),
            student(),
            (c.teacher_epochs, c.student_epochs),
            common,
            teacher_extra=tuple(TEACHER_OPTIM),
            student_extra=tuple(STUDENT_OPTIM),
        ),
    }


RUNS = {
    "teacher all-MiniLM-L6-v2 + head, labels": "teacher",
    "student ngrams, labels only (CE)": "student-ce",
    "student ngrams, from the cache (KD T=4, alpha=0.9)": "student-kd",
}


def main(argv=None) -> None:
    config = parse_config(TextConfig, __doc__, argv)
    seconds = run_steps(steps(config))
    print("\n" + results(Path(config.out), RUNS, seconds))


if __name__ == "__main__":
    main()
