"""The seams hold: only the store knows HDF5, one resolver decides a model's input, one pipeline makes views."""

import ast
import subprocess
import sys
from pathlib import Path

from softlabels.store import files, modes
from softlabels.store.rows import DIGESTS, PARAMS

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = [ROOT / "softlabels", ROOT / "trainer"]
STORE = ROOT / "softlabels" / "store"


def sources(outside_store=True):
    for package in PACKAGES:
        for path in sorted(package.rglob("*.py")):
            if not (outside_store and STORE in path.parents):
                yield path, ast.parse(path.read_text(), str(path))


def imported_modules(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def test_only_the_store_imports_h5py():
    offenders = [
        str(path.relative_to(ROOT))
        for path, tree in sources()
        if any(name.split(".")[0] == "h5py" for name in imported_modules(tree))
    ]
    assert offenders == []


def dataset_paths():
    paths = {files.DONE, files.BLOCK_SHA256, files.DIGESTS_SHA256, PARAMS, DIGESTS}
    for mode in modes.MODES.values():
        paths |= set(mode(10, "float16", 2).datasets((1, 1)))
    return {p for p in paths if "/" in p}  # `keys`, `labels`, `logits` are also plain words (npz names)


def test_no_module_outside_the_store_names_an_hdf5_dataset_path():
    paths = dataset_paths()
    assert "topk/values" in paths and "views/params" in paths
    offenders = [
        (str(path.relative_to(ROOT)), node.value)
        for path, tree in sources()
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in paths
    ]
    assert offenders == []


def calls_to(name):
    return [
        str(path.relative_to(ROOT))
        for path, tree in sources(outside_store=False)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == name
    ]


def test_one_resolver_and_one_normalisation():
    callers = set(calls_to("resolve_input"))
    assert callers == {"softlabels/models/teachers.py", "trainer/students.py"}  # teachers: build, recompute, online KD
    normalisers = {
        str(path.relative_to(ROOT))
        for path, tree in sources(outside_store=False)
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef) and node.name == "Normalize"
    }
    assert normalisers == {"softlabels/views/pipeline.py"}


def test_views_are_made_only_by_the_pipeline():
    augmentation_modules = {"softlabels/views/user.py"}  # a user augmentation's wrapper calls the inner one
    users = {path for path in calls_to("apply") if path not in augmentation_modules}
    assert users <= {"softlabels/views/pipeline.py"}


def definitions_of(name):
    return {
        str(path.relative_to(ROOT))
        for path, tree in sources(outside_store=False)
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name
    }


def test_one_function_replays_a_stored_view():
    """The trainer's dataset, `Cache.replay` and `verify --recompute` remake a stored view the same way."""
    assert definitions_of("replay_view") == {"softlabels/views/replay.py"}
    callers = {"softlabels/replay.py", "softlabels/cache.py", "softlabels/audit/teacher.py"}
    assert set(calls_to("replay_view")) == callers
    assert set(calls_to("replay_pipeline")) == callers  # each with the cache's recorded input and augmentation


def test_augment_text_becomes_an_object_at_the_edges_only():
    assert definitions_of("parse_augment") == {"softlabels/views/specs.py"}
    edges = {"softlabels/build/teacher_pass.py", "trainer/config.py", "trainer/setup.py", "softlabels/views/specs.py"}
    assert set(calls_to("parse_augment")) <= edges  # the options; specs.py: a cache's record read back
    assert set(calls_to("parse_mixed")) == {"softlabels/views/specs.py"}  # the kinds of text parse_augment reads
    assert set(calls_to("load_user_augment")) == {"softlabels/views/specs.py"}


def test_the_trainers_path_schedules_views_and_checks_the_samples_once():
    assert set(calls_to("ViewSchedule")) == {"softlabels/replay.py"}
    assert set(calls_to("check_same_samples")) == {"softlabels/replay.py"}


def test_importing_and_plotting_leave_the_users_matplotlib_backend_alone(tmp_path):
    """Library hygiene (issue 16): no `matplotlib.use(...)` at import; figures never go through pyplot."""
    code = f"""
import matplotlib
matplotlib.use("svg")
import softlabels.report.plots, trainer.curves, trainer.loop, softlabels.report.inspect
trainer.curves.plot_curves([{{"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.5}}], {str(tmp_path)!r} + "/c.png")
assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
import sys
assert "matplotlib.pyplot" not in sys.modules, "pyplot was imported"
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
