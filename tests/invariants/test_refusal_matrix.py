"""Promise (c): a bad value is refused with one clear line naming the option and the value, no
traceback, and nothing written, whether it comes as a flag or from a --config file (JSON or YAML).

Cells: every bad value below x every channel that can carry it (a flag carries text only: lists and
booleans come from config files). Each command gets a real cache or dataset, so the refusal is the
value's and not a missing file's.
"""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from softlabels.cli import main as softlabels_main
from tests.invariants.world import Kind
from trainer.cli import main as trainer_main

BAD = {
    "fit": [
        ("epochs", "ten"),
        ("epochs", 0),
        ("epochs", 1.7),
        ("epochs", True),
        ("epochs", [16]),
        ("batch_size", 0),
        ("batch_size", [16]),
        ("lr", "fast"),
        ("lr", -0.1),
        ("temperature", -1),
        ("temperature", "hot"),
        ("alpha", 1.5),
        ("loss", "nope"),
        ("views_per_decode", 2),  # the cache holds one view per sample
        ("ensemble", "nan,1"),
        ("ensemble", "inf,1"),
        ("ensemble", "1e400,1"),
        ("ensemble", "teacher:7"),
    ],
    "build": [
        ("views", "ten"),
        ("views", 0),
        ("views", True),
        ("batch_size", [16]),
        ("storage", "nope"),
        ("topk", 0),
        ("augment", "nope"),
        ("dtype", "float8"),
        ("seed", 1.5),
        ("targets", "logits,nope"),
        ("targets", ["pixels"]),
        ("embedding_dtype", "int4"),
    ],
    "sweep": [
        ("temperature", -1),
        ("alpha", 2),
        ("epochs", "ten"),
    ],
}


def cells():
    for command, values in BAD.items():
        for option, value in values:
            for channel in ("flag", "json", "yaml"):
                if channel == "flag" and isinstance(value, (bool, list)):
                    continue  # a flag carries text
                yield pytest.param(command, option, value, channel, id=f"{command}-{option}={value}-{channel}")


def base_args(command: str, world, cache_for, tmp_path) -> list[str]:
    if command == "build":
        (spec, weights), *_ = world.teachers("rgb")
        return ["build", "--dataset", world.dataset("rgb"), "--teacher", spec, "--weights", weights, "--workers", "0"]
    cache = str(cache_for(Kind("rgb", "none", "logits", 2)))
    return [command, "--cache", cache, "--student", "small_cnn", "--workers", "0", "--device", "cpu"]


@pytest.mark.parametrize("command, option, value, channel", list(cells()))
def test_a_bad_value_is_one_line_and_nothing_is_written(command, option, value, channel, world, cache_for, tmp_path):
    args = base_args(command, world, cache_for, tmp_path)
    out = tmp_path / ("cache.h5" if command == "build" else "run")
    args += ["--out", str(out)]
    if channel == "flag":
        args += [f"--{option.replace('_', '-')}", str(value)]
    else:
        config = tmp_path / f"config.{channel}"
        if channel == "json":
            config.write_text(json.dumps({option: value}))
        else:
            yaml = pytest.importorskip("yaml")
            config.write_text(yaml.safe_dump({option: value}))
        args += ["--config", str(config)]
    main = softlabels_main if command == "build" else trainer_main
    result = CliRunner().invoke(main, args)
    output = result.output
    assert result.exit_code in (1, 2), output  # 2: click's usage error for a flag
    assert "Traceback" not in output and not isinstance(result.exception, (TypeError, AttributeError)), output
    lines = [line for line in output.strip().splitlines() if line.strip()]
    error = lines[-1]
    if result.exit_code == 1:
        assert len(lines) == 1 and error.startswith("error: "), output
    assert option in error.replace("-", "_").lower() or option.replace("_", " ") in error.lower(), output
    shown = str(value).lower() if not isinstance(value, float) or math.isfinite(value) else ""
    assert shown.strip("[]") in error.lower(), output
    assert not list(tmp_path.glob(f"{out.name}*")), "a refused command wrote files"
