"""The fault battery of the build and verify side (issue 5): real kills, signals, file-size limits,
damaged files and broken teachers, each followed by what a user does next (verify, resume), and the
result compared bit for bit with an uninterrupted build.

Tests that start `python -m softlabels` processes are marked slow (each start costs seconds); CI runs
them too. Every build here: 18 images, batches and blocks of 2 rows (9 blocks), float32 storage.
"""

import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from softlabels import store
from softlabels.audit import compare_samples
from softlabels.cli import main

NUM_BLOCKS = 9
PROGRESS = "teacher pass:"  # the progress bar's lines, written before any error
DELAY = 0.15  # seconds per teacher forward in the processes we stop: a pass of ~1.5 s

# One small_cnn teacher with faults switched on by environment variables, counted in forward calls
# (call 1 is the shape probe, call b + 1 computes batch b).
FAULTY_TEACHER = """
import os, signal, time
from softlabels.models.zoo import SmallCNN

class Faulty(SmallCNN):
    calls = 0

    def forward(self, x):
        Faulty.calls += 1
        if Faulty.calls == int(os.environ.get("FAULT_SIGINT_AT", 0)):
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C in the middle of the pass
        time.sleep(float(os.environ.get("FAULT_DELAY", 0)))
        out = super().forward(x)
        if Faulty.calls == int(os.environ.get("FAULT_NAN_AT", 0)):
            out[1, 0] = float("nan")
        return out

def make(num_classes, in_channels=3, image_size=8):
    return Faulty(num_classes, in_channels=in_channels, image_size=image_size)
"""


@pytest.fixture
def argv(image_folder, teacher_weights, tmp_path):
    """`softlabels build` arguments for the faulty teacher writing to `out`."""
    teacher = tmp_path / "faulty.py"
    teacher.write_text(FAULTY_TEACHER)

    def make(out, *extra):
        options = {
            "--dataset": f"imagefolder:{image_folder}",
            "--teacher": f"{teacher}:make",
            "--weights": str(teacher_weights),
            "--batch-size": "2",
            "--block-rows": "2",
            "--workers": "0",
            "--device": "cpu",
            "--dtype": "float32",
            "--out": str(out),
        }
        given = set(extra[i] for i in range(len(extra) - 1) if extra[i + 1 : i + 2] and str(extra[i]).startswith("--"))
        base = [part for flag, value in options.items() if flag not in given for part in (flag, value)]
        return ["build", *base, *extra]  # an option in `extra` replaces the default one

    return make


@pytest.fixture
def out(tmp_path):
    return tmp_path / "cache.h5"


def run(*args, **env):
    """`softlabels ARGS` in this process, with fault switches set for the call."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update({name: str(value) for name, value in env.items()})
    try:
        return CliRunner().invoke(main, [str(a) for a in args])
    finally:
        for name, value in saved.items():
            os.environ.pop(name) if value is None else os.environ.__setitem__(name, value)


def start(args, delay=0.0, limit_kib=None) -> subprocess.Popen:
    """`python -m softlabels ARGS` as a real process, optionally under `ulimit -f` (in KiB)."""
    env = dict(os.environ, FAULT_DELAY=str(delay), OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "softlabels", *map(str, args)]
    if limit_kib is not None:  # Python ignores SIGXFSZ, so writes past the limit fail with EFBIG
        command = ["bash", "-c", f'ulimit -f {limit_kib} && exec "$@"', "ulimit", *command]
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_interruptible
    )


def _interruptible():
    """A test run from a background job (nohup, some CI runners) inherits SIGINT ignored, and Python
    then never raises KeyboardInterrupt: give the child the default disposition, as a terminal would."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def finish(process, timeout=120) -> tuple[int, str]:
    """Exit status and last line of stderr (the progress bar writes the lines before it), else stdout."""
    output, err = process.communicate(timeout=timeout)
    assert "Traceback" not in err, err
    lines = err.strip().splitlines() or output.strip().splitlines()
    return process.returncode, lines[-1] if lines else ""


def done_mask(partial):
    """The partial's integrity/done flags as the writer left them (None until it can be read).
    The writer holds HDF5's lock, so poll without locking."""
    try:
        with h5py.File(partial, "r", locking=False) as file:
            return file["integrity/done"][:]
    except (OSError, KeyError):
        return None


def blocks_done(partial) -> int:
    mask = done_mask(partial)
    return -1 if mask is None else int(mask.sum())


def wait_for(condition, process, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition() and process.poll() is None:
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("the build never reached the point where the test stops it")
        time.sleep(0.01)


def reference(argv, tmp_path, *extra):
    """The uninterrupted build to compare with."""
    path = tmp_path / ("reference" + "-".join(extra) + ".h5")
    result = run(*argv(path, *extra))
    assert result.exit_code == 0, result.output
    return path


def assert_identical(path, expected):
    """Same datasets, bytes and attributes (but the start time and the random build id) as the uninterrupted build."""
    store.verify(path)
    with h5py.File(path, "r") as got, h5py.File(expected, "r") as want:
        names = []
        want.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        assert set(names) >= {"keys", "integrity/block_sha256", "integrity/done"}
        assert {"logits", "embeddings/values"} & set(names)
        for name in names:
            assert got[name].dtype == want[name].dtype, name
            np.testing.assert_array_equal(got[name][:], want[name][:], err_msg=name)
        attrs = [{k: v for k, v in f.attrs.items() if k not in ("created", "build_id")} for f in (got, want)]
        assert attrs[0].keys() == attrs[1].keys()
        for name, value in attrs[1].items():
            both_nan = isinstance(value, float) and math.isnan(value) and math.isnan(attrs[0][name])  # no accuracy
            assert both_nan or np.array_equal(attrs[0][name], value), name
    assert not store.partial_path(path).exists()


def assert_refused(result, *fragments):
    """A non-zero exit with one clear line and no traceback."""
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.strip().splitlines() if not line.startswith(PROGRESS)]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], result.output


def interrupted_partial(argv, out, sigint_at=5, *extra):
    """A partial left by a real Ctrl-C (the teacher signals its own process) after some batches."""
    result = run(*argv(out, *extra), FAULT_SIGINT_AT=sigint_at)
    assert_refused(result, "interrupted", "--resume")
    assert not out.exists()
    return store.partial_path(out)


# ----------------------------------------------------------------------------- killed builds


@pytest.mark.slow
def test_kill_9_at_random_points_then_resume_is_bit_identical(argv, out, tmp_path):
    rng = random.Random(5)
    partial = store.partial_path(out)
    thirds = [range(i * NUM_BLOCKS // 3, (i + 1) * NUM_BLOCKS // 3) for i in range(3)]
    for attempt, blocks in enumerate(rng.choice(third) for third in thirds):  # early, middle, late
        process = start(argv(out, *(["--resume"] if attempt else [])), delay=DELAY)
        wait_for(lambda: blocks_done(partial) >= blocks, process)  # noqa: B023
        time.sleep(rng.uniform(0, DELAY))  # anywhere in the next batch: forward, encode, write, flush
        process.send_signal(signal.SIGKILL)
        process.wait()
        if out.exists():  # the kill came after the rename: then it is the finished cache
            break
        mask = done_mask(partial)
        assert mask is None or list(mask) == sorted(mask, reverse=True)  # blocks land in order
        assert_refused(run("verify", out), "cache not found", "--resume")
    result = run(*argv(out, "--resume"))
    assert result.exit_code == 0, result.output
    assert_identical(out, reference(argv, tmp_path))


@pytest.mark.slow
def test_sigint_to_a_build_process_then_resume(argv, out, tmp_path):
    partial = store.partial_path(out)
    process = start(argv(out), delay=2 * DELAY)
    wait_for(lambda: blocks_done(partial) >= 1, process)
    for flag in ("--resume", "--overwrite"):  # a second build of the same --out meanwhile
        assert_refused(run(*argv(out, flag)), "being written by another process")
    wait_for(lambda: blocks_done(partial) >= 3, process)
    process.send_signal(signal.SIGINT)
    status, line = finish(process)
    assert status == 130 and line.startswith("error: interrupted:") and "run the same command with --resume" in line
    saved = int(re.search(r"(\d+) of 18 samples are saved", line).group(1))
    assert saved == 2 * blocks_done(partial) >= 6  # the message tells the truth about the partial
    assert not out.exists()
    result = run(*argv(out, "--resume"))
    assert result.exit_code == 0 and f"(resumed at sample {saved})" in result.output, result.output
    assert_identical(out, reference(argv, tmp_path))
    reader = store.CacheTargets(out, memory_budget=0)  # a reader holding the cache open meanwhile
    reader.logits(0)
    status, line = finish(start(["verify", out]))
    assert status == 0 and line.startswith("ok:")
    reader.close()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_a_stop_signal_ends_a_build_at_the_next_block_then_resume(argv, out, tmp_path, signum):
    """A cluster's pre-emption (issue 16): the block in progress is finished, nothing else is computed."""
    partial = store.partial_path(out)
    four = ("--block-rows", "4")  # two batches a block: the signal lands inside a block
    process = start(argv(out, *four), delay=2 * DELAY)
    wait_for(lambda: blocks_done(partial) >= 1, process)
    time.sleep(2.5 * DELAY)  # into the next block's first batch
    process.send_signal(signum)
    status, line = finish(process)
    name = signal.Signals(signum).name
    assert status == 75 and line.startswith(f"error: stopped by {name}: "), line
    saved = int(re.search(r"(\d+) of 18 samples are saved", line).group(1))
    assert saved == 4 * blocks_done(partial) >= 8 and "--resume" in line  # the block in progress was finished
    result = run(*argv(out, *four, "--resume"))
    assert result.exit_code == 0 and f"(resumed at sample {saved})" in result.output, result.output
    assert_identical(out, reference(argv, tmp_path, *four))


@pytest.mark.parametrize("workers", ["0", "1"])
def test_a_bad_image_is_named_with_its_cause_not_called_a_write_error(argv, out, image_folder, workers):
    broken = image_folder / "train" / "dog" / "0003.png"
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    result = run(*argv(out, "--workers", workers))
    assert_refused(result, f"cannot read sample dog/0003.png ({broken}): ", "truncated", "are kept", "--resume")
    assert "writing" not in result.output and "DataLoader worker" not in result.output
    assert blocks_done(store.partial_path(out)) == 5  # the rows before it: dog/0003 is row 10 (block 5)
    debug = run(*argv(out, "--workers", workers, "--resume", "--debug"))
    assert debug.exit_code == 1 and "Traceback" in debug.output and "truncated" in debug.output
    broken.write_bytes(data)  # fixed, then resumed in the same process (a notebook, an API caller): the
    resumed = run(*argv(out, "--workers", workers, "--resume"))  # failed pass's workers no longer hold it
    assert resumed.exit_code == 0 and "resumed at sample 10" in resumed.output, resumed.output


def test_the_advice_for_a_bad_image_works_when_it_is_removed(argv, out, image_folder):
    """Removing the file changes the dataset, which --resume refuses: the line says --overwrite for that."""
    broken = image_folder / "train" / "dog" / "0003.png"
    broken.write_bytes(b"")
    result = run(*argv(out))
    assert_refused(result, "cannot read sample dog/0003.png", "not an image PIL can read (an empty file")
    assert "fix the file and rerun with --resume, or remove it" in result.output and "0x" not in result.output
    broken.unlink()
    assert run(*argv(out, "--resume")).exit_code == 1  # built with other settings (the dataset)
    result = run(*argv(out, "--overwrite"))
    assert result.exit_code == 0 and f"wrote {out}: 17 samples" in result.output, result.output


# ----------------------------------------------------------------------------- write errors


@pytest.mark.slow
def test_file_size_limit_at_start_mid_pass_and_at_finish_then_resume(argv, out, tmp_path, spans):
    partial = store.partial_path(out)
    # At the start: the whole partial is reserved at creation, so nothing is computed in vain.
    status, line = finish(start(argv(out, "--compression", "gzip"), limit_kib=4))
    assert status == 1 and line.startswith(f"error: cannot create {partial}") and "File too large" in line
    assert not out.exists() and not partial.exists()

    # Mid-pass: a Ctrl-C'd partial resumed under a limit that ends before its logits.
    interrupted_partial(argv, out, 5, "--compression", "gzip")
    before = blocks_done(partial)
    logits_start = min(start for start, _ in spans(partial, ["logits"]))
    status, line = finish(start(argv(out, "--compression", "gzip", "--resume"), limit_kib=logits_start // 1024))
    assert status == 1 and line.startswith(f"error: writing {partial} failed") and "File too large" in line
    assert f"the {2 * before} samples written are kept" in line and "--resume" in line
    assert blocks_done(partial) == before and not out.exists()

    # At the finish: every row fits under the limit, the compressed copy made at the end does not.
    expected = reference(argv, tmp_path, "--compression", "gzip")
    data_end = max(end for _, end in spans(partial, ["labels", "logits", "integrity/done", "integrity/block_sha256"]))
    limit_kib = math.ceil(data_end / 1024)
    assert limit_kib * 1024 < expected.stat().st_size
    status, line = finish(start(argv(out, "--compression", "gzip", "--resume"), limit_kib=limit_kib))
    assert status == 1 and line.startswith(f"error: finishing {out} failed") and "too large" in line
    assert f"all rows are kept in {partial}" in line and blocks_done(partial) == NUM_BLOCKS
    assert not out.exists() and sorted(p.name for p in tmp_path.glob("cache.h5*")) == ["cache.h5.partial"]

    result = run(*argv(out, "--compression", "gzip", "--resume"))
    assert result.exit_code == 0, result.output
    assert_identical(out, expected)


# ----------------------------------------------------------------------------- damaged partials


def test_resume_rewrites_a_block_whose_rows_never_reached_the_disk(argv, out, tmp_path, spans):
    """After a machine crash a done flag can be on disk without its rows: resume must not trust it."""
    partial = interrupted_partial(argv, out, 6)
    last = int(np.flatnonzero(done_mask(partial))[-1])
    start_byte = min(start for start, _ in spans(partial, ["logits"]))
    row_bytes = 3 * 4
    with open(partial, "r+b") as file:  # the rows of the last done block back to zeros
        file.seek(start_byte + 2 * last * row_bytes)
        file.write(bytes(2 * row_bytes))
    result = run(*argv(out, "--resume"))
    assert result.exit_code == 0 and f"(resumed at sample {2 * last})" in result.output, result.output
    assert_identical(out, reference(argv, tmp_path))


def test_truncated_partial_is_refused_with_the_way_out(argv, out):
    partial = interrupted_partial(argv, out)
    data = partial.read_bytes()
    partial.write_bytes(data[: len(data) * 2 // 3])
    assert_refused(run(*argv(out, "--resume")), f"cannot resume from {partial}", "--overwrite")
    assert run(*argv(out, "--overwrite")).exit_code == 0
    store.verify(out)


@pytest.mark.parametrize(
    "kind",
    [
        ("--targets", "logits,embedding", "--embedding-dtype", "int8"),
        ("--targets", "embedding", "--dataset", "FLAT", "--num-classes", "3"),
    ],
    ids=["embeddings-int8", "unlabelled-embeddings-alone"],
)
def test_an_interrupted_build_of_embeddings_resumes_bit_identical(argv, out, tmp_path, image_folder, kind):
    flat = tmp_path / "flat"
    flat.mkdir()
    for index, image in enumerate(sorted((image_folder / "train").rglob("*.png"))):
        shutil.copy(image, flat / f"{index:03d}.png")
    extra = [f"imagefolder:{flat}" if part == "FLAT" else part for part in kind]
    interrupted_partial(argv, out, 5, *extra)
    result = run(*argv(out, "--resume", *extra))
    assert result.exit_code == 0 and "resumed at sample" in result.output, result.output
    assert_identical(out, reference(argv, tmp_path, *extra))
    with h5py.File(out, "r") as file:
        assert "embeddings/values" in file and ("labels" in file) == ("FLAT" not in kind)


def test_nan_teacher_is_refused_and_the_partial_resumes_once_fixed(argv, out, tmp_path):
    result = run(*argv(out), FAULT_NAN_AT=4)  # batch 3 = rows 4, 5: row 5 is NaN
    assert_refused(result, "NaN/inf logits for 1 sample(s)", "first keys: cat/0005.png")
    assert not out.exists()
    assert_refused(run("verify", out), "cache not found")
    assert blocks_done(store.partial_path(out)) == 2  # the blocks before it are kept
    result = run(*argv(out, "--resume"))
    assert result.exit_code == 0 and "(resumed at sample 4)" in result.output, result.output
    assert_identical(out, reference(argv, tmp_path))


# ----------------------------------------------------------------------------- damaged caches


@pytest.fixture
def cache(argv, out):
    result = run(*argv(out))
    assert result.exit_code == 0, result.output
    return out


def flip_byte(path, offset):
    with open(path, "r+b") as file:
        file.seek(offset)
        byte = file.read(1)[0]
        file.seek(offset)
        file.write(bytes([byte ^ 0x5A]))


@pytest.mark.parametrize("name, row_bytes", [("logits", 12), ("labels", 8)])
def test_verify_names_the_block_of_a_flipped_byte(cache, name, row_bytes, spans):
    rng = random.Random(name)
    for _ in range(3):
        damaged = cache.with_name(f"damaged-{name}.h5")
        shutil.copy(cache, damaged)
        row = rng.randrange(18)
        ((first, _),) = spans(damaged, [name])  # contiguous: one span holds all 18 rows
        flip_byte(damaged, first + row * row_bytes + rng.randrange(row_bytes))
        assert_refused(run("verify", damaged), f"checksum mismatch in block {row // 2} ")


def test_verify_refuses_truncated_caches(cache):
    data = cache.read_bytes()
    rng = random.Random(3)
    for size in sorted({0, 100, len(data) // 2, len(data) - 1, *rng.sample(range(len(data)), 3)}):
        damaged = cache.with_name(f"cut-{size}.h5")
        damaged.write_bytes(data[:size])
        assert_refused(run("verify", damaged), str(damaged))


def test_an_incomplete_file_at_the_final_name_is_never_accepted(argv, out, tmp_path):
    partial = interrupted_partial(argv, out)
    moved = tmp_path / "moved.h5"
    shutil.copy(partial, moved)  # renamed by hand
    assert_refused(run("verify", moved), "incomplete", "--resume")
    with h5py.File(moved, "r+") as file:
        file.attrs["complete"] = True  # claimed complete, but blocks are missing
    first_missing = int(np.flatnonzero(done_mask(partial) == 0)[0])
    assert_refused(run("verify", moved), f"block {first_missing} ", "never written")


def test_compressed_cache_with_a_flipped_byte_is_refused(argv, out, spans):
    assert run(*argv(out, "--compression", "gzip")).exit_code == 0
    ((first, end),) = spans(out, ["logits"])
    flip_byte(out, (first + end) // 2)
    assert_refused(run("verify", out), "block")


# ----------------------------------------------------------------------------- the samples behind a cache


def change_images(folder, change):
    """One change a teammate might make to an image folder after the cache was built."""
    train = folder / "train"
    if change == "remove":
        (train / "cat" / "0003.png").unlink()
    elif change == "rename":
        (train / "cat" / "0003.png").rename(train / "cat" / "0003b.png")
    elif change == "relabel":
        (train / "cat" / "0006.png").rename(train / "dog" / "0006.png")
    elif change == "add":
        shutil.copy(train / "frog" / "0000.png", train / "frog" / "0099.png")
    elif change == "new class":
        (train / "ant").mkdir()
        shutil.copy(train / "frog" / "0000.png", train / "ant" / "0000.png")


@pytest.mark.parametrize(
    "change, message",
    [
        ("remove", "1 removed (e.g. cat/0003.png)"),
        ("rename", "1 renamed (e.g. cat/0003.png -> cat/0003b.png)"),
        ("relabel", "1 relabelled (e.g. cat/0006.png -> dog/0006.png: cat -> dog)"),
        ("add", "1 added (e.g. frog/0099.png)"),
        ("new class", "classes differ (cache: cat, dog, frog; dataset: ant, cat, dog, frog)"),
    ],
)
def test_verify_dataset_says_what_changed(cache, image_folder, change, message):
    result = run("verify", cache, "--dataset", f"imagefolder:{image_folder}")
    assert result.exit_code == 0 and "the same 18 samples and labels" in result.output, result.output
    change_images(image_folder, change)
    assert_refused(
        run("verify", cache, "--dataset", f"imagefolder:{image_folder}"),
        f"was not built from imagefolder:{image_folder} (train)",
        message,
    )


KEYED_FACTORY = """
import os
import numpy as np
import torch

class Keyed(torch.utils.data.Dataset):
    def __init__(self):
        names = ["plain", "two\\nlines", "tab\\there", "last"]
        drop = os.environ.get("DROP_KEY")
        self.keys = [k for k in names if k.replace("\\n", "|") != drop]
        self.targets = [i % 3 for i in range(len(self.keys))]
        self.classes = ["a", "b", "c"]

    def __len__(self):
        return len(self.keys)

    def __getitem__(self, i):
        return torch.full((3, 8, 8), 0.1 * (i + 1)), self.targets[i]

def make(split, root):
    return Keyed()
"""


def test_keys_with_control_characters_print_escaped_on_one_line(teacher_weights, tmp_path, monkeypatch):
    factory = tmp_path / "keyed.py"
    factory.write_text(KEYED_FACTORY)
    cache = tmp_path / "keyed.h5"
    build = ["build", "--dataset", f"{factory}:make", "--teacher", "small_cnn", "--weights", teacher_weights]
    result = run(*build, "--workers", 0, "--device", "cpu", "--out", cache)
    assert result.exit_code == 0, result.output
    assert store.read_keys_labels(cache)[0][1] == "two\nlines"  # stored as it is
    monkeypatch.setenv("DROP_KEY", "two|lines")
    result = run("verify", cache, "--dataset", f"{factory}:make")
    assert_refused(result, "1 removed (e.g. two\\nlines)")
    assert describe_diff(removed=["x\ny\tz"]) == "1 removed (e.g. x\\ny\\tz)"


def describe_diff(**kinds) -> str:
    from softlabels.audit import SampleDiff

    return SampleDiff(**kinds).describe()


def test_compare_samples_in_indexed_datasets():
    keys = [str(i) for i in range(6)]
    assert not compare_samples(keys, [0, 1, 2, 0, 1, 2], keys, [0, 1, 2, 0, 1, 2])
    diff = compare_samples(keys, [0, 1, 2, 0, 1, 2], keys, [0, 1, 1, 0, 1, 2])
    assert diff.relabelled == [("2", "2", 2, 1)] and diff.describe(["a", "b", "c"]) == "1 relabelled (e.g. 2: c -> b)"
    diff = compare_samples(keys, [0] * 6, keys[::-1], [0] * 6)
    assert diff.reordered == 6 and not (diff.added or diff.removed or diff.renamed)
    diff = compare_samples(keys, [0] * 6, keys[:5], [0] * 5)
    assert diff.removed == ["5"] and not diff.renamed


# ----------------------------------------------------------------------------- recomputing the teacher


def test_recompute_replays_views_and_catches_what_the_fingerprint_cannot(argv, out, image_folder, tmp_path):
    assert run(*argv(out, "--augment", "cifar", "--views", "2")).exit_code == 0
    result = run("verify", out, "--recompute", 5, "--dataset", f"imagefolder:{image_folder}")
    assert result.exit_code == 0 and "reproduces 5 samples x 2 view(s)" in result.output, result.output
    # An image replaced by another under the same name: same keys and labels, other logits. The
    # fingerprint alone cannot see it (--no-content); the sample digests (issue 16) and recompute do.
    shutil.copy(image_folder / "train" / "dog" / "0001.png", image_folder / "train" / "cat" / "0002.png")
    assert run("verify", out, "--dataset", f"imagefolder:{image_folder}", "--no-content").exit_code == 0
    assert_refused(
        run("verify", out, "--dataset", f"imagefolder:{image_folder}"),
        "1 of 18 samples of imagefolder:",
        "changed content since the build",
        "e.g. cat/0002.png",
    )
    assert_refused(
        run("verify", out, "--recompute", 18),
        "differ from the stored ones for 1 of 18 samples",
        "first: cat/0002.png view 0",
    )


@pytest.mark.filterwarnings("default::softlabels.models.teachers.RandomTeacherWarning")  # pyproject ignores it
def test_a_teacher_without_weights_warns_and_its_cache_still_recomputes(image_folder, out):
    """Issue 16, finding 6: the build warns in one line, and `verify --recompute` rebuilds the same
    randomly initialised network instead of calling the cache altered."""
    build = ["build", "--dataset", f"imagefolder:{image_folder}", "--teacher", "small_cnn", "--workers", 0]
    result = run(*build, "--device", "cpu", "--out", out)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        "warning: teacher small_cnn has no --weights: it is randomly initialised, and its outputs teach nothing"
    ]
    result = run("verify", out, "--recompute", 6)
    assert result.exit_code == 0 and "the teacher reproduces 6 samples" in result.output, result.output


def test_recompute_refuses_other_weights(argv, out, tmp_path):
    import torch

    from softlabels.models.registry import create_model

    assert run(*argv(out, "--topk", "2")).exit_code == 0
    assert run("verify", out, "--recompute", 4).exit_code == 0
    torch.manual_seed(1)
    other = tmp_path / "other.pt"
    torch.save(create_model("small_cnn", num_classes=3, in_channels=3, image_size=8).state_dict(), other)
    assert_refused(
        run("verify", out, "--recompute", 4, "--weights", other),
        "differ from the stored ones",
        "another teacher, weights or preprocessing",
    )
    assert_refused(run("verify", out, "--weights", other), "--recompute")
    (tmp_path / "teacher.pt").rename(tmp_path / "moved.pt")
    assert_refused(run("verify", out, "--recompute", 4), "teacher.pt are not here; pass --weights")


# ----------------------------------------------------------------------------- bad options

# Beyond tests/softlabels/test_cli.py's table: every other `softlabels build` option given a bad value.
BAD_OPTIONS = [
    (["--split", "nope"], "has no 'nope' split folder; it has: train, test"),
    # a folder of images without class folders is an unlabelled dataset; one with no images is refused
    (["--dataset", "imagefolder:{tmp}/no-images"], "no images"),
    (["--dataset", "/does/not/exist.py:make"], "dataset file '/does/not/exist.py' does not exist"),
    (["--dataset", "cifar10", "--data-root", "{tmp}/nowhere"], "cifar10 not found"),
    (["--teacher", "/does/not/exist.py:make"], "model file '/does/not/exist.py' does not exist"),
    (["--teacher", "{tmp}/nofunc.py:make"], "has no function 'make'"),
    (["--weights", "{tmp}/junk.pt"], "is not a readable torch checkpoint"),
    (["--weights", "{tmp}/mlp.pt"], "checkpoint does not match the SmallCNN model"),
    (["--mean", "0.5", "--std", "0.2"], "shape mismatches"),  # grey inputs for an RGB teacher
    (["--mean", "nan,nan,nan"], "mean and std must be finite"),
    (["--std", "inf,1,1"], "mean and std must be finite"),
    (["--std", "0,0,0"], "std values must be positive"),
    (["--image-size", "1"], "small_cnn needs image_size >= 4"),
    (["--image-size", "0"], "'--image-size': 0 is not in the range x>=1"),
    (["--num-classes", "-1"], "'--num-classes': -1 is not in the range x>=0"),
    (["--num-classes", "0"], "--num-classes 0 builds the teacher as an encoder without its classifier"),
    (["--batch-size", "0"], "'--batch-size': 0 is not in the range x>=1"),
    (["--workers", "-1"], "'--workers': -1 is not in the range x>=0"),
    (["--block-rows", "0"], "'--block-rows': 0 is not in the range x>=1"),
    (["--topk", "-1"], "'--topk': -1 is not in the range x>=1"),
    (["--compression", "zstd"], "'zstd' is not one of 'none', 'lzf', 'gzip'"),
    (["--dtype", "bfloat16"], "'bfloat16' is not one of 'float16', 'float32'"),
    (["--seed", "x"], "'x' is not a valid integer"),
    (["--shard", "0/0"], "--shard must look like I/N"),
    (["--shard", "abc"], "--shard must look like I/N"),
    (["--out", "{tmp}"], "is a directory"),
]


@pytest.fixture
def bad_files(tmp_path):
    import torch

    from softlabels.models.registry import create_model

    (tmp_path / "nofunc.py").write_text("def other():\n    pass\n")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "no-images").mkdir()
    (tmp_path / "no-images" / "notes.txt").write_text("not an image\n")
    torch.save(create_model("mlp", num_classes=3, in_channels=3, image_size=8).state_dict(), tmp_path / "mlp.pt")
    return tmp_path


@pytest.mark.parametrize("extra, message", BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_bad_build_option_gives_one_clear_line(image_folder, teacher_weights, bad_files, out, extra, message):
    options = {
        "--dataset": f"imagefolder:{image_folder}",
        "--teacher": "small_cnn",
        "--weights": str(teacher_weights),
        "--workers": "0",
        "--device": "cpu",
        "--out": str(out),
    }
    for flag, value in zip(extra[::2], extra[1::2]):
        options[flag] = value.format(images=image_folder, tmp=bad_files)
    result = run("build", *[item for pair in options.items() for item in pair])
    assert result.exit_code in (1, 2) and "Traceback" not in result.output, result.output
    assert message in result.output, result.output
    if result.exit_code == 1:  # our errors: one line; click's usage errors (2) add usage lines
        assert_refused(result)
    assert not out.exists() and not store.partial_path(out).exists()
