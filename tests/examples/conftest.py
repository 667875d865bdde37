"""The examples' steps, run in this process (the same argument lists the examples run as commands)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner


def run_in_process(argv: list[str]) -> None:
    """Run `python -m MODULE ARGS...` here: the console commands through click, the data makers' main()."""
    module, args = argv[2], [str(a) for a in argv[3:]]
    if module in ("trainer", "softlabels"):
        main = importlib.import_module(f"{module}.cli").main
        result = CliRunner().invoke(main, [*args, *(["--no-progress"] if args[0] == "fit" else [])])
        assert result.exit_code == 0, f"{' '.join(argv[2:])}\n{result.output}\n{result.exception!r}"
    else:
        importlib.import_module(module).main(args)


@pytest.fixture
def run_steps():
    def run(steps: dict[str, list[str]]) -> None:
        for argv in steps.values():
            run_in_process(argv)

    return run


def summary(out: Path, name: str) -> dict:
    return json.loads((out / name / "summary.json").read_text())


def teacher_reproduces(out: Path, root: str, samples: int) -> dict:
    """`softlabels verify CACHE --recompute N`: the teacher's saved weights, run again on `samples` of the
    cache's samples, give the targets the cache stores (within its dtype's tolerance). Returns the report."""
    from softlabels.cli import main

    args = ["verify", str(out / "cache.h5"), "--recompute", str(samples), "--data-root", root, "--device", "cpu"]
    result = CliRunner().invoke(main, [*args, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    teacher = next(check for check in report["checks"] if check["check"] == "teacher")
    assert teacher["ok"] and teacher["samples"] == samples
    return report
