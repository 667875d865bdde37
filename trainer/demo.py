"""`make demo`: the whole product on Fashion-MNIST in a few minutes on a laptop CPU.

1. train a teacher on labels          trainer fit --dataset fashion-mnist --student small_cnn --loss ce
2. cache its logits once              softlabels build --teacher small_cnn --weights .../best.pt
3. train a small student from cache   trainer fit --cache ... --student mlp        (KD; teacher not loaded)
4. the same student on labels alone   trainer fit --dataset fashion-mnist --student mlp --loss ce
then print a table of accuracies and times. Every step is a real subprocess of the console commands,
echoed before it runs, so the printed commands are exactly what a user would type.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click

from softlabels.data.builtin import fashion_mnist_debian_dir
from softlabels.store import read_info


@dataclass(frozen=True)
class DemoConfig:
    """Sizes chosen so the four steps take a few minutes on 2 CPU cores (README: measured times)."""

    out: str = "data/demo"
    data_root: str = "data"
    teacher: str = "small_cnn"
    student: str = "mlp"
    teacher_per_class: int = 1000
    teacher_epochs: int = 3
    student_per_class: int = 500
    student_epochs: int = 5
    workers: int = 1
    seed: int = 0


def needs_download(data_root: str) -> bool:
    """Only where neither Debian's files nor an unpacked copy under the data root exist."""
    unpacked = Path(data_root) / "FashionMNIST" / "raw" / "train-images-idx3-ubyte"
    debian = fashion_mnist_debian_dir() / "train-images-idx3-ubyte.gz"
    return not (unpacked.is_file() or debian.is_file())


def commands(config: DemoConfig) -> dict[str, list[str]]:
    """The four steps, as argument lists of `python -m softlabels` / `python -m trainer`."""
    out = Path(config.out)
    common = [
        "--workers",
        str(config.workers),
        "--seed",
        str(config.seed),
        "--data-root",
        config.data_root,
        "--overwrite",
    ] + (["--download"] if needs_download(config.data_root) else [])
    trainer, softlabels = [sys.executable, "-m", "trainer", "fit"], [sys.executable, "-m", "softlabels", "build"]
    student = [
        "--student",
        config.student,
        "--subset",
        str(config.student_per_class),
        "--epochs",
        str(config.student_epochs),
    ]
    return {
        "teacher": trainer
        + [
            "--dataset",
            "fashion-mnist",
            "--student",
            config.teacher,
            "--loss",
            "ce",
            "--subset",
            str(config.teacher_per_class),
            "--epochs",
            str(config.teacher_epochs),
            *common,
            "--out",
            str(out / "teacher"),
        ],
        "cache": softlabels
        + [
            "--dataset",
            "fashion-mnist",
            "--teacher",
            config.teacher,
            "--weights",
            str(out / "teacher" / "best.pt"),
            *common,
            "--out",
            str(out / "cache.h5"),
        ],
        "student-kd": trainer + ["--cache", str(out / "cache.h5"), *student, *common, "--out", str(out / "student-kd")],
        "student-ce": trainer
        + ["--dataset", "fashion-mnist", *student, "--loss", "ce", *common, "--out", str(out / "student-ce")],
    }


def run_step(name: str, argv: list[str]) -> float:
    """Echo the command as a user would type it, run it, return its wall time; stop the demo on failure."""
    python = Path(argv[0])
    shown = [os.path.relpath(python) if python.is_relative_to(Path.cwd()) else str(python), *argv[1:]]
    click.secho(f"\n$ {shlex.join(shown)}", bold=True)
    started = time.perf_counter()
    done = subprocess.run(argv)
    if done.returncode != 0:
        raise SystemExit(f"demo step {name!r} failed (exit {done.returncode}); command: {shlex.join(argv)}")
    return time.perf_counter() - started


def results_table(config: DemoConfig, seconds: dict[str, float]) -> str:
    out = Path(config.out)

    def summary(name):
        return json.loads((out / name / "summary.json").read_text())

    cache = read_info(out / "cache.h5")
    teacher, kd, ce = summary("teacher"), summary("student-kd"), summary("student-ce")
    rows = [
        (
            f"teacher {config.teacher}, labels ({config.teacher_per_class}/class, {config.teacher_epochs} ep)",
            teacher["test_accuracy"],
            seconds["teacher"],
        ),
        (
            f"cache: teacher pass over {cache.layout.num_samples} images (train acc {cache.teacher_accuracy:.2%})",
            None,
            seconds["cache"],
        ),
        (
            f"student {config.student}, labels only (CE, {config.student_per_class}/class, {config.student_epochs} ep)",
            ce["test_accuracy"],
            seconds["student-ce"],
        ),
        (
            f"student {config.student}, from the cache (KD T={kd['config']['objective']['temperature']:g} "
            f"alpha={kd['config']['objective']['alpha']:g})",
            kd["test_accuracy"],
            seconds["student-kd"],
        ),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'run':<{width}}  test acc   time", "-" * (width + 18)]
    lines += [f"{label:<{width}}  {'' if acc is None else f'{acc:.2%}':>8}  {sec:5.0f} s" for label, acc, sec in rows]
    lines.append(f"{'total':<{width}}  {'':>8}  {sum(seconds.values()):5.0f} s")
    return "\n".join(lines)


def run_demo(config: DemoConfig) -> str:
    Path(config.out).mkdir(parents=True, exist_ok=True)
    seconds = {name: run_step(name, argv) for name, argv in commands(config).items()}
    table = results_table(config, seconds)
    (Path(config.out) / "results.txt").write_text(table + "\n")
    return table


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option(
    "--out", default=DemoConfig.out, type=click.Path(file_okay=False), help="Folder for every run and the cache."
)
@click.option("--data-root", default=DemoConfig.data_root, type=click.Path(file_okay=False), help="Dataset root.")
@click.option("--student", default=DemoConfig.student, help="Student spec.")
@click.option(
    "--teacher-per-class", default=DemoConfig.teacher_per_class, type=int, help="Teacher training images per class."
)
@click.option("--teacher-epochs", default=DemoConfig.teacher_epochs, type=int, help="Teacher epochs.")
@click.option(
    "--student-per-class", default=DemoConfig.student_per_class, type=int, help="Student training images per class."
)
@click.option("--student-epochs", default=DemoConfig.student_epochs, type=int, help="Student epochs.")
@click.option("--workers", default=DemoConfig.workers, type=int, help="DataLoader workers of every step.")
def main(**options):
    """Teacher -> cache -> students on Fashion-MNIST, then a table of accuracies and times."""
    table = run_demo(DemoConfig(**options))
    click.echo("\n" + table)


if __name__ == "__main__":  # pragma: no cover
    main()
