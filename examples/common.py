"""What the three examples share: their steps are real commands, echoed and run one after another.

Each example (`examples/speech`, `examples/text`, `examples/tabular`) lists its steps as argument
lists of `python -m ...` commands (`steps(config)`): make the data, train the teacher(s) on labels
with `trainer fit`, cache their logits with `softlabels build`, train students from the cache and
from labels alone. `python -m examples.NAME` runs them and prints a table of test accuracies; the
printed commands are exactly what a user would type from the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

HERE = Path(__file__).resolve().parent


def spec(path: Path, func: str) -> str:
    """`FILE.py:FUNC` for a file of the examples, relative to the working directory where it lies below it."""
    path = Path(path).resolve()
    shown = os.path.relpath(path) if path.is_relative_to(Path.cwd()) else str(path)
    return f"{shown}:{func}"


def python_m(module: str, *args) -> list[str]:
    return [sys.executable, "-m", module, *map(str, args)]


def distill_steps(
    out: Path,
    dataset: str,
    teacher: str,
    student: str,
    epochs: tuple[int, int],
    common: list,
    teacher_extra: tuple = (),
    student_extra: tuple = (),
) -> dict[str, list[str]]:
    """The path every example walks after its data: a teacher trained on labels, its logits cached, and
    the student trained from the cache and from labels alone (steps `teacher`, `cache`, `student-kd`,
    `student-ce`); `epochs` are (teacher, student)."""
    fit = ["--student", student, "--epochs", epochs[1], *student_extra, *common]
    return {
        "teacher": python_m(
            "trainer", "fit", "--dataset", dataset, "--student", teacher, "--loss", "ce", "--epochs", epochs[0],
            *teacher_extra, *common, "--out", out / "teacher",
        ),
        "cache": python_m(
            "softlabels", "build", "--dataset", dataset, "--weights", out / "teacher" / "best.pt", *common,
            "--out", out / "cache.h5",
        ),
        "student-kd": python_m("trainer", "fit", "--cache", out / "cache.h5", *fit, "--out", out / "student-kd"),
        "student-ce": python_m(
            "trainer", "fit", "--dataset", dataset, "--loss", "ce", *fit, "--out", out / "student-ce"
        ),
    }  # fmt: skip


def shown(argv: list[str]) -> str:
    """The command as a user types it (`python -m ...`, the venv's python relative to here)."""
    python = Path(argv[0])
    head = os.path.relpath(python) if python.is_absolute() and python.is_relative_to(Path.cwd()) else str(python)
    return shlex.join([head, *argv[1:]])


def run_steps(steps: dict[str, list[str]]) -> dict[str, float]:
    """Echo and run every step in its own process; stop at the first failure. Returns wall seconds."""
    seconds = {}
    for name, argv in steps.items():
        print(f"\n$ {shown(argv)}", flush=True)
        started = time.perf_counter()
        done = subprocess.run(argv)
        if done.returncode != 0:
            raise SystemExit(f"step {name!r} failed (exit {done.returncode}): {shown(argv)}")
        seconds[name] = time.perf_counter() - started
    return seconds


def parse_config(cls, doc: str, argv=None):
    """A config dataclass from `--field-name VALUE` options (one per field, its default shown)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    for f in fields(cls):
        parser.add_argument(
            "--" + f.name.replace("_", "-"), type=type(f.default), default=f.default, help=f"{f.default!r}"
        )
    return cls(**vars(parser.parse_args(argv)))


def summary(out: Path, name: str) -> dict:
    return json.loads((Path(out) / name / "summary.json").read_text())


def results(out: Path, runs: dict[str, str], seconds: dict[str, float] | None = None) -> str:
    """A table: one line per run folder under `out` (label -> folder), its test accuracy and time."""
    rows = []
    for label, folder in runs.items():
        accuracy = summary(out, folder)["test_accuracy"]
        rows.append((label, f"{accuracy:.2%}", f"{seconds[folder]:.0f} s" if seconds and folder in seconds else ""))
    width = max(len(r[0]) for r in rows)
    lines = [f"{'run':<{width}}  test acc   time", "-" * (width + 18)]
    lines += [f"{label:<{width}}  {acc:>8}  {sec:>6}" for label, acc, sec in rows]
    return "\n".join(lines)
