"""The commands docs/examples.md shows for the speech and text examples are the steps `python -m examples.NAME` runs
(less `--seed 0 --overwrite`, as console commands); the text encoder's are `encoder_steps` (with one loss)."""

import re
import shlex
from pathlib import Path

import pytest

from examples.speech.__main__ import SpeechConfig
from examples.speech.__main__ import steps as speech_steps
from examples.text.__main__ import TextConfig, encoder_steps
from examples.text.__main__ import steps as text_steps

PAGE = Path(__file__).resolve().parents[2] / "docs" / "examples.md"


def readme_commands(heading: str) -> list[list[str]]:
    section = PAGE.read_text().split(heading, 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")
    commands = []
    for line in block.splitlines():
        argv = shlex.split(line, comments=True)
        if argv[:1] in (["trainer"], ["softlabels"]):
            commands.append(argv)
        elif argv[:2] == ["python", "-m"] and argv[2].startswith("examples."):
            commands.append(argv[2:])
    return commands


def as_options(argv: list[str]) -> tuple:
    """(command words, sorted (option, value) pairs) with --seed 0 and --overwrite left out."""
    words, options, i = [], [], 0
    while i < len(argv):
        if argv[i].startswith("--"):
            if argv[i] == "--overwrite":
                i += 1
                continue
            if argv[i] != "--seed":
                options.append((argv[i], argv[i + 1]))
            i += 2
        else:
            words.append(argv[i])
            i += 1
    return tuple(words), tuple(sorted(options))


@pytest.mark.parametrize(
    "heading, steps, config",
    [
        ("### Speech: spoken digits", speech_steps, SpeechConfig()),
        ("### Text: Debian package sections", text_steps, TextConfig()),
        (
            "### Text: the sentence encoder alone",
            lambda config: encoder_steps(config, losses=("embed-cosine",)),
            TextConfig(),
        ),
    ],
)
def test_readme_commands_are_the_example_steps(heading, steps, config, monkeypatch):
    monkeypatch.chdir(PAGE.parents[1])  # the page's paths are relative to the repository root
    expected = [as_options([str(a) for a in argv[2:]]) for argv in steps(config).values()]
    assert [as_options(argv) for argv in readme_commands(heading)] == expected
