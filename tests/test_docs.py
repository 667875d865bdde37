"""The docs cannot drift from the code: every command that README.md and docs/*.md show runs here on
tiny data, every flag they give exists in that command's --help, and the facts they share with the
code (the install spelling, the safe number of uses per view, SLURM's signal lead time) agree.

Commands are read from the fenced ```bash blocks by running each block in bash with `trainer`,
`softlabels`, `python`, `torchrun` and `srun` replaced by recorders (loops and variables expand as
for a user; every other program is simply not found), then run in this process, in order, in a
folder that holds the user's world (WORLD) with the substitutions of MAPPING. Commands that need
more than one machine, a network or the examples' data are not run here; NOT_RUN says which test
runs them instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from softlabels.build.config import SAFE_VIEW_USES
from softlabels.cli import main as softlabels_main
from softlabels.extras import install_hint
from tests.conftest import make_image_folder
from trainer.cli import main as trainer_main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))
DOCS = [README, *PAGES]
MAINS = {"softlabels": softlabels_main, "trainer": trainer_main}

# What a user's paths and models become here: their folder is a tiny 3-class image folder, their
# ImageNet models (which need a network for their weights) the zoo's small models.
MODELS = {"timm:resnet50": "small_cnn", "timm:resnet18": "small_cnn", "timm:mobilenetv3_small_100": "mlp"}
FAST = {"--epochs": "1"}  # one epoch of each run is enough to prove the command works
ADDED = ("--workers", "0")  # no DataLoader processes: the suite runs on two shared cores


def fenced(path: Path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", path.read_text(), re.S)


# --- reading the commands a doc shows ------------------------------------------------------------

# One record is one write (O_APPEND keeps it whole), so commands a doc runs at once with `&` do not
# interleave their words in the log.
RECORDER = """#!/bin/sh
record=$(printf '%s\\037' "${0##*/}" "$@")
printf '%s\\001\\n' "$record" >> "$DOCS_LOG"
"""


def recorded_commands(path: Path, tmp_path: Path) -> list[tuple[str, list[str], str]]:
    """(program, arguments, launcher) of every softlabels/trainer command in the doc's bash blocks."""
    bin_dir, log = tmp_path / "recorders", tmp_path / "commands.log"
    bin_dir.mkdir(exist_ok=True)
    for name in ("trainer", "softlabels", "python", "torchrun", "srun"):
        (bin_dir / name).write_text(RECORDER)
        (bin_dir / name).chmod(0o755)
    log.write_bytes(b"")
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    for block in fenced(path, "bash"):
        env = {"PATH": str(bin_dir), "DOCS_LOG": str(log), "HOME": str(scratch)}
        subprocess.run(["/bin/bash", "-c", block], cwd=scratch, env=env, capture_output=True, timeout=60)
    commands = []
    for record in log.read_bytes().split(b"\x01\n"):
        argv = [a.decode() for a in record.split(b"\x1f") if a]
        if argv:
            command = as_command(argv)
            if command:
                commands.append(command)
    return commands


def as_command(argv: list[str]) -> tuple[str, list[str], str] | None:
    launcher = argv[0]
    if launcher in MAINS:
        return launcher, argv[1:], ""
    for i, word in enumerate(argv[:-1]):
        if word == "-m" and argv[i + 1] in MAINS:
            return argv[i + 1], argv[i + 2 :], launcher
    return None


@pytest.fixture(scope="module")
def commands_of(tmp_path_factory):
    cache: dict[Path, list] = {}

    def read(path: Path):
        if path not in cache:
            cache[path] = recorded_commands(path, tmp_path_factory.mktemp(path.stem))
        return cache[path]

    return read


# --- every flag exists ---------------------------------------------------------------------------


def help_text(program: str, command: str) -> str:
    result = CliRunner().invoke(MAINS[program], [command, "--help"])
    assert result.exit_code == 0, f"{program} {command} is not a command: {result.output}"
    return result.output


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_flag_a_doc_gives_exists_in_the_commands_help(path, commands_of):
    commands = commands_of(path)
    helps: dict[tuple[str, str], set[str]] = {}
    unknown = []
    for program, args, _ in commands:
        key = (program, args[0])
        if key not in helps:
            helps[key] = set(re.findall(r"--[a-z0-9][a-z0-9-]*", help_text(*key)))
        flags = {a.split("=", 1)[0] for a in args if a.startswith("--")}
        unknown += [f"{program} {args[0]} {flag}" for flag in sorted(flags - helps[key])]
    assert unknown == []


def test_the_docs_show_commands_at_all(commands_of):
    """A parser that found nothing would pass every other test here."""
    counts = {path.name: len(commands_of(path)) for path in DOCS}
    assert counts["README.md"] >= 15 and counts["building.md"] >= 8 and counts["examples.md"] >= 10
    assert sum(counts.values()) >= 60


# --- every command runs --------------------------------------------------------------------------

NOT_RUN = {
    "torchrun and srun launches": "tests/softlabels/test_distributed.py and tests/trainer/test_distributed.py "
    "run the same commands under a real torchrun on CPU",
    "cache URLs": "need a bucket; tests/softlabels/test_reader.py reads caches from memory:// URLs",
    "the examples' data": "tests/examples run these steps (test_example_commands checks they are the ones shown)",
    "the demo's Fashion-MNIST": "tests/trainer/test_demo.py runs the demo's steps (test_demo_commands checks them)",
}


def not_run_because(args: list[str], launcher: str) -> str | None:
    if launcher in ("torchrun", "srun") or launcher.endswith("torchrun"):
        return "torchrun and srun launches"
    if any("://" in a for a in args):
        return "cache URLs"
    if any(a.startswith("examples/") for a in args):
        return "the examples' data"
    if "fashion-mnist" in args or any(a.startswith("data/demo/") for a in args):
        return "the demo's Fashion-MNIST"
    return None


def mapped(args: list[str]) -> list[str]:
    out, i = [], 0
    while i < len(args):
        word = args[i]
        if word == "--student" and args[i + 1] in MODELS and args[i + 2 : i + 4] == ["--weights", "pretrained"]:
            out += [word, MODELS[args[i + 1]]]  # a pretrained ImageNet model needs a network: the zoo's
            i += 4
            continue
        if word in FAST:
            out += [word, FAST[word]]
            i += 2
            continue
        out.append(MODELS.get(word, word))
        i += 1
    if out[0] in ("build", "fit", "sweep") and ADDED[0] not in out:
        out += ADDED
    return out


def make_world(folder: Path) -> Path:
    """What the docs assume a user has: photos/ (train/, test/) and a teacher's weights file."""
    make_image_folder(folder / "photos")
    torch.manual_seed(0)
    from softlabels.models.registry import create_model

    model = create_model("small_cnn", num_classes=3, in_channels=3, image_size=8)
    torch.save({"state_dict": model.state_dict()}, folder / "my_resnet50.pt")
    return folder


def run(program: str, args: list[str]) -> None:
    result = CliRunner().invoke(MAINS[program], args)
    assert result.exit_code == 0, f"{program} {' '.join(args)}\n{result.output}\n{result.exception!r}"


def run_python_blocks(path: Path, capsys) -> None:
    for i, code in enumerate(fenced(path, "python")):
        exec(compile(code, f"{path.name}, python block {i + 1}", "exec"), {"__name__": "__main__"})
        assert capsys.readouterr().out.strip(), f"{path.name} block {i + 1} printed nothing"


@pytest.fixture(scope="module")
def quick_start_world(tmp_path_factory, commands_of):
    """The world after the README's quick start: runs/teacher/ and photos.h5 beside photos/."""
    folder = make_world(tmp_path_factory.mktemp("quick-start"))
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        for program, args, _ in commands_of(README)[:3]:  # fine-tune a teacher, build, info
            run(program, mapped(args))
    finally:
        os.chdir(cwd)
    assert (folder / "photos.h5").is_file() and (folder / "runs" / "teacher" / "best.pt").is_file()
    return folder


def run_doc(path: Path, folder: Path, commands, monkeypatch, capsys) -> list[str]:
    monkeypatch.chdir(folder)
    ran = []
    for program, args, launcher in commands:
        if not_run_because(args, launcher) is None:
            run(program, mapped(args))
            ran.append(f"{program} {args[0]}")
    if path.name != "FORMAT.md":  # tests/softlabels/test_format.py runs FORMAT.md's reader on every storage mode
        run_python_blocks(path, capsys)
    return ran


@pytest.mark.slow  # its sweeps train a dozen students (about 30 s alone, minutes on a busy machine)
def test_every_readme_command_runs(tmp_path, commands_of, monkeypatch, capsys):
    folder = make_world(tmp_path)
    ran = run_doc(README, folder, commands_of(README), monkeypatch, capsys)
    assert len(ran) == len(commands_of(README))  # the README shows nothing that only runs elsewhere
    assert (folder / "runs" / "sweep-s0" / "leaderboard.md").is_file()
    assert (folder / "runs" / "sweep-s0" / "small_cnn-ce" / "summary.json").is_file()


@pytest.mark.parametrize("name", ["building.md", "training.md", "cli.md", "reliability.md", "clusters.md"])
def test_every_command_of_a_reference_page_runs(name, quick_start_world, tmp_path, commands_of, monkeypatch, capsys):
    folder = tmp_path / "world"
    shutil.copytree(quick_start_world, folder)
    path = ROOT / "docs" / name
    ran = run_doc(path, folder, commands_of(path), monkeypatch, capsys)
    assert ran or name == "clusters.md"


def test_commands_not_run_here_are_run_elsewhere(commands_of):
    skipped = {
        not_run_because(args, launcher)
        for path in DOCS
        for _, args, launcher in commands_of(path)
        if not_run_because(args, launcher)
    }
    assert skipped <= set(NOT_RUN)
    for reason in skipped:
        for test_file in re.findall(r"tests/\S+\.py", NOT_RUN[reason]):
            assert (ROOT / test_file).is_file(), f"{reason}: {test_file} does not exist"


def test_demo_commands(commands_of):
    from trainer.demo import DemoConfig, commands

    shown = [
        args
        for _, args, launcher in commands_of(ROOT / "docs" / "examples.md")
        if not_run_because(args, launcher) == "the demo's Fashion-MNIST"
    ]
    expected = [
        [a for a in argv[3:] if a != "--download"]
        for argv in commands(DemoConfig(out="data/demo", data_root="data")).values()
    ]
    assert sorted(map(tuple, shown)) == sorted(map(tuple, expected))


# --- facts the docs share with the code ----------------------------------------------------------


def test_readme_onboards():
    text = README.read_text()
    assert len(text.splitlines()) < 250
    headings = re.findall(r"^## (.+)$", text, re.M)
    assert {"Why", "Install", "Concepts"} <= set(headings)
    assert "make demo" in text and "make test" in text  # CI runs `make test`; contributors start there
    for path_a_user_lacks in ("../", "~/", "data/cifar10", "/shared/"):
        assert path_a_user_lacks not in text


def test_the_safe_number_of_uses_per_view_is_the_code_s():
    said = [
        int(n)
        for path in (README, ROOT / "docs" / "building.md")
        for n in re.findall(r"(?:[Uu]p to|[Pp]ast)\s+(\d+)\s+uses", path.read_text())
    ]
    assert len(said) >= 4 and set(said) == {SAFE_VIEW_USES}


def extras_in_pyproject() -> set[str]:
    section = (ROOT / "pyproject.toml").read_text().split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    return set(re.findall(r"^([\w-]+) = \[", section, re.M))  # (tomllib is Python 3.11+)


def test_one_spelling_of_the_extras():
    extras = extras_in_pyproject()
    assert install_hint("timm").startswith("pip install -e '.[timm]'")
    for path in [
        *DOCS,
        *(ROOT / "examples").rglob("*.py"),
        *(ROOT / "softlabels").rglob("*.py"),
        *(ROOT / "trainer").rglob("*.py"),
    ]:
        text = path.read_text()
        assert "softlabels[" not in text, f"{path.relative_to(ROOT)} spells an extra as a registry package"
        for command in re.findall(r"pip install [^\n`]*", text):
            if "-e" in command.split():
                named = re.findall(r"\.\[([\w,-]+)\]", command)
                assert all(set(n.split(",")) <= extras for n in named), (path.name, command)
    called = re.findall(
        r"install_hint\([\"'](\w+)[\"']\)",
        "".join(
            p.read_text()
            for p in [
                *(ROOT / "softlabels").rglob("*.py"),
                *(ROOT / "trainer").rglob("*.py"),
                *(ROOT / "examples").rglob("*.py"),
            ]
        ),
    )
    assert len(called) >= 8 and set(called) <= extras


def test_no_lazy_import_error_spells_its_own_install_command():
    offenders = [
        str(path.relative_to(ROOT))
        for package in ("softlabels", "trainer", "examples")
        for path in (ROOT / package).rglob("*.py")
        if path.name != "extras.py" and "pip install" in path.read_text()
    ]
    assert offenders == []


def test_slurm_signal_lead_time_agrees_everywhere():
    files = [*DOCS, *(ROOT / "softlabels").rglob("*.py"), *(ROOT / "trainer").rglob("*.py")]
    leads = {(p.name, int(n)) for p in files for n in re.findall(r"(?:USR1|TERM)@(\d+)", p.read_text())}
    assert {"clusters.md", "cli.py", "stopping.py"} <= {name for name, _ in leads}
    seconds = {n for _, n in leads}
    assert len(seconds) == 1
    said = re.findall(r"(\d+) s before the time limit", (ROOT / "docs" / "clusters.md").read_text())
    assert said and {int(n) for n in said} == seconds


def test_the_format_spec_names_every_storage_mode_and_dataset_and_its_version():
    """docs/FORMAT.md is the spec a teammate reads with plain h5py: it must list every storage mode the
    store writes, every dataset each mode owns, and the newest format version (it once stopped at
    `logits`/`topk` and version 1)."""
    from softlabels.store import FORMAT_VERSION, modes

    spec = (ROOT / "docs" / "FORMAT.md").read_text()
    assert spec.splitlines()[0] == f"# The softlabels cache format, version {FORMAT_VERSION}"
    for name, mode in modes.MODES.items():
        assert f'`storage = "{name}"`' in spec, name
        for path in mode(10, "float16", 2).datasets((1, 1)):
            assert f"| `{path}` |" in spec, path
    assert "view 0" in (ROOT / "docs" / "cli.md").read_text()  # cache.targets() reads view 0 unless told
