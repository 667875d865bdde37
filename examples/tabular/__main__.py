"""scikit-learn's digits table end to end: three MLP teachers -> one cache -> linear and scikit-learn students.

    python -m examples.tabular [--out data/examples/tabular]

Runs (and prints) `steps(TabularConfig())`; see docs/examples.md, "Tabular: scikit-learn's digits".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from examples.common import HERE, parse_config, python_m, results, run_steps, spec

FOLDER = HERE / "tabular"
STUDENTS = ("linear", "sklearn:logistic", "sklearn:linear_svm")


@dataclass(frozen=True)
class TabularConfig:
    out: str = "data/examples/tabular"
    teachers: int = 3  # zoo mlp, seeds 0..N-1: one cache, mixed with --ensemble mean-prob
    teacher_epochs: int = 30
    student_epochs: int = 30  # the torch linear student; scikit-learn students fit once
    workers: int = 0
    seed: int = 0


def dataset() -> str:
    return spec(FOLDER / "data.py", "digits")


def run_name(student: str, loss: str) -> str:
    return f"{student.replace('sklearn:', 'sklearn-')}-{loss}"


def steps(c: TabularConfig) -> dict[str, list[str]]:
    out = Path(c.out)
    common = ["--workers", c.workers, "--overwrite"]
    result = {}
    members = []
    for i in range(c.teachers):
        result[f"teacher-{i}"] = python_m(
            "trainer", "fit", "--dataset", dataset(), "--student", "mlp", "--loss", "ce", "--epochs",
            c.teacher_epochs, "--seed", c.seed + i, *common, "--out", out / f"teacher-{i}",
        )  # fmt: skip
        members += ["--teacher", "mlp", "--weights", out / f"teacher-{i}" / "best.pt"]
    result["cache"] = python_m(
        "softlabels", "build", "--dataset", dataset(), *members, *common, "--out", out / "cache.h5"
    )
    for student in STUDENTS:
        fit = ["--student", student, "--epochs", c.student_epochs, "--seed", c.seed, *common]
        result[run_name(student, "kd")] = python_m(
            "trainer", "fit", "--cache", out / "cache.h5", "--ensemble", "mean-prob", *fit,
            "--out", out / run_name(student, "kd"),
        )  # fmt: skip
        result[run_name(student, "ce")] = python_m(
            "trainer", "fit", "--dataset", dataset(), "--loss", "ce", *fit, "--out", out / run_name(student, "ce")
        )
    return result


def runs(c: TabularConfig) -> dict[str, str]:
    table = {f"teacher {i}: mlp, seed {c.seed + i}, labels": f"teacher-{i}" for i in range(c.teachers)}
    for student in STUDENTS:
        table[f"student {student}, labels only (CE)"] = run_name(student, "ce")
        table[f"student {student}, from the ensemble cache (KD T=4, alpha=0.9)"] = run_name(student, "kd")
    return table


def main(argv=None) -> None:
    config = parse_config(TabularConfig, __doc__, argv)
    seconds = run_steps(steps(config))
    print("\n" + results(Path(config.out), runs(config), seconds))


if __name__ == "__main__":
    main()
