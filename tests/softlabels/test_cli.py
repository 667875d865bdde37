"""`softlabels` on the command line: results, and one clear line for every bad input."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from softlabels import store
from softlabels.build.config import SAFE_VIEW_USES
from softlabels.cli import main


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result


@pytest.fixture
def build_args(image_folder, teacher_weights, tmp_path):
    return [
        "build",
        "--dataset",
        f"imagefolder:{image_folder}",
        "--teacher",
        "small_cnn",
        "--weights",
        teacher_weights,
        "--batch-size",
        "4",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--out",
        tmp_path / "cache.h5",
    ]


def test_build_info_verify(build_args, tmp_path):
    result = run(*build_args)
    assert result.exit_code == 0, result.output
    assert "18 samples x 1 view(s)" in result.output
    cache = tmp_path / "cache.h5"
    result = run("verify", cache)
    assert result.exit_code == 0 and result.output.startswith("ok:")
    result = run("info", cache)
    assert result.exit_code == 0
    assert "small_cnn with teacher.pt" in result.output and "18 x 1 view(s), 3 classes" in result.output
    summary = json.loads(run("info", cache, "--json").output)
    assert summary["num_samples"] == 18 and summary["storage"]["dtype"] == "float16"
    assert summary["complete"] is True and summary["fingerprint"].startswith("sha256:")


def test_python_dash_m_works(tmp_path):
    done = subprocess.run([sys.executable, "-m", "softlabels", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "build" in done.stdout


def test_build_help_documents_augmentations():
    output = run("build", "--help").output
    for name in ("none", "flip", "cifar", "imagenet"):
        assert f"  {name}:" in output


BAD_INPUTS = [
    (["--dataset", "nope"], "unknown dataset 'nope'; choose one of: cifar10"),
    (["--teacher", "resnet9000"], "unknown model 'resnet9000'"),
    (["--weights", "/does/not/exist.pt"], "does not exist"),
    (["--dataset", "imagefolder:/does/not/exist"], "/does/not/exist"),
    (["--num-classes", "10", "--weights", ""], "outputs 10 classes"),
    (["--views", "0"], "--views"),
    (["--views", "3"], "needs an augmentation"),
    (["--augment", "rotate", "--views", "2"], "unknown augment 'rotate'; choose one of"),
    (["--topk", "4"], "between 1 and the number of classes (3)"),
    (["--topk", "0"], "--topk"),
    (["--mean", "a,b,c"], "not a comma-separated list"),
    (["--mean", "0.1,0.2"], "1 or 3 values"),
    (["--device", "cuda:7"], "cuda"),
    (["--device", "tpu"], "device"),
    (["--dtype", "int8"], "--dtype"),
    (["--shard", "3/2"], "I/N"),
    (["--out", "/dev/null/cache.h5"], "/dev/null is a file, not a folder"),
]


@pytest.mark.parametrize("extra, message", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_gives_one_clear_line(build_args, extra, message):
    args = list(build_args)
    for flag, value in zip(extra[::2], extra[1::2]):
        if flag in args:
            index = args.index(flag)
            if value == "":
                del args[index : index + 2]
                continue
            args[index + 1] = value
        elif value != "":
            args += [flag, value]
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert message in result.output, result.output
    assert len(result.output.strip().splitlines()) <= 4  # click usage errors add usage lines


def test_build_creates_its_output_folder_once_the_inputs_pass(build_args, tmp_path):
    args = [str(a) for a in build_args]
    out = tmp_path / "new" / "deeper" / "cache.h5"
    args[args.index("--out") + 1] = str(out)
    refused = CliRunner().invoke(main, [*args, "--topk", "9"])
    assert refused.exit_code != 0 and not (tmp_path / "new").exists()  # bad input: nothing written
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert out.is_file() and not store.partial_path(out).exists()


def test_verify_bad_files(tmp_path):
    (tmp_path / "junk.h5").write_bytes(b"not hdf5 at all")
    for path, message in ((tmp_path / "missing.h5", "cache not found"), (tmp_path / "junk.h5", "not a readable HDF5")):
        result = CliRunner().invoke(main, ["verify", str(path)])
        assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output


def test_existing_partial_needs_resume_or_overwrite(build_args, tmp_path):
    (tmp_path / "cache.h5.partial").write_bytes(b"")
    result = CliRunner().invoke(main, [str(a) for a in build_args])
    assert result.exit_code == 1 and "--resume" in result.output and "--overwrite" in result.output
    result = CliRunner().invoke(main, [str(a) for a in build_args] + ["--resume"])
    assert result.exit_code == 1 and "cannot resume from" in result.output and "--overwrite" in result.output
    result = CliRunner().invoke(main, [str(a) for a in build_args] + ["--overwrite"])
    assert result.exit_code == 0, result.output


@pytest.mark.filterwarnings("default::softlabels.models.teachers.RandomTeacherWarning")  # pyproject ignores it
def test_a_teacher_without_weights_is_built_with_a_loud_warning(image_folder, tmp_path):
    result = CliRunner().invoke(
        main,
        [
            "build",
            "--dataset",
            f"imagefolder:{image_folder}",
            "--teacher",
            "small_cnn",
            "--workers",
            "0",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "random.h5"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "warning: teacher small_cnn has no --weights: it is randomly initialised" in result.output


@pytest.mark.filterwarnings("error::softlabels.models.teachers.RandomTeacherWarning")
def test_a_model_that_loads_its_own_weights_is_no_random_teacher(tmp_path):
    from softlabels.models.teachers import RandomTeacherWarning, load_teacher

    source = "from torch import nn\n\nclass Own(nn.Linear):\n    pretrained = True\n\n"
    source += "def own(num_classes):\n    return Own(4, num_classes)\n\n"
    source += "def plain(num_classes):\n    return nn.Linear(4, num_classes)\n"
    (tmp_path / "models.py").write_text(source)
    load_teacher(f"{tmp_path / 'models.py'}:own", num_classes=3)  # says it is pretrained: no warning
    with pytest.warns(RandomTeacherWarning, match="randomly initialised"):
        load_teacher(f"{tmp_path / 'models.py'}:plain", num_classes=3)


def test_quant8_caches_build_verify_and_recompute(build_args, tmp_path):
    result = run(*build_args, "--storage", "quant8", "--views", "2", "--augment", "flip")
    assert result.exit_code == 0, result.output
    cache = tmp_path / "cache.h5"
    assert "8-bit logits (all classes)" in run("info", cache).output
    result = run("verify", cache, "--recompute", "6", "--device", "cpu")
    assert result.exit_code == 0 and "reproduces 6 samples" in result.output, result.output


V1_CACHE = Path(__file__).resolve().parents[1] / "data" / "v1-logits-flip2.h5"


def test_every_command_takes_the_common_options(tmp_path):
    """The README: every command takes --quiet, --no-progress and --debug (info and ls refused --no-progress)."""
    (tmp_path / "caches").mkdir()
    shutil.copy(V1_CACHE, tmp_path / "caches" / "a.h5")
    assert run("info", V1_CACHE, "--no-progress", "--debug").exit_code == 0
    result = run("ls", tmp_path / "caches", "--no-progress", "--quiet")
    assert result.exit_code == 0 and result.output == ""
    for command in main.commands.values():
        flags = {opt for param in command.params for opt in param.opts + param.secondary_opts}
        assert {"--quiet", "--debug"} <= flags and ("--no-progress" in flags or "--progress" in flags), command.name


def test_views_help_gives_the_number_of_uses_the_trainer_warns_at():
    output = " ".join(run("build", "--help").output.split())
    assert f"views seen more than {SAFE_VIEW_USES} times overfit" in output


def test_help_and_metadata_commands_start_without_torch():
    """`--help`, `info` and `ls` answer without importing torch (or torchvision, timm, matplotlib)."""
    code = f"""
import sys
from click.testing import CliRunner
from softlabels.cli import main
from trainer.cli import main as trainer_main

runner = CliRunner()
for cli, args in ((main, ["--help"]), (trainer_main, ["--help"]), (main, ["info", {str(V1_CACHE)!r}]),
                  (main, ["ls", {str(V1_CACHE.parent)!r}]), (main, ["info", "--json", {str(V1_CACHE)!r}])):
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, (args, result.output)
heavy = [name for name in ("torch", "torchvision", "timm", "matplotlib") if name in sys.modules]
assert not heavy, heavy
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr


def test_output_into_a_closed_pipe_is_one_line_and_the_shells_exit_code(build_args, tmp_path):
    """`softlabels info CACHE | head -0`: the reader is gone before the first line is printed."""
    assert CliRunner().invoke(main, [str(arg) for arg in build_args]).exit_code == 0
    process = subprocess.Popen(
        [sys.executable, "-m", "softlabels", "info", str(tmp_path / "cache.h5")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    process.stdout.close()
    error = process.stderr.read()
    assert process.wait() == 141
    assert error.splitlines() == [
        "error: standard output was closed by the program reading it (a pipe into head?): stopped printing there; "
        "the files written so far are kept"
    ]
