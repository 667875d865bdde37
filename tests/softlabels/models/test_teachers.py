"""Teacher specs and checkpoint loading: what users bring must load exactly, or fail with a clear reason."""

import argparse
from pathlib import Path

import pytest
import torch
from torch import nn

from softlabels.build import teacher_record
from softlabels.models import weights
from softlabels.models.preprocessing import Preprocessing
from softlabels.models.registry import create_model
from softlabels.models.teachers import load_teacher
from softlabels.models.weights import load_checkpoint, load_weights, unwrap_state_dict

SHARED_TEACHERS = Path(__file__).parents[3].parent / "shared" / "teachers"
needs_shared = pytest.mark.skipif(not SHARED_TEACHERS.is_dir(), reason=f"{SHARED_TEACHERS} not present")


@pytest.fixture
def small():
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=5, in_channels=1, image_size=8)
    return model.eval()


@pytest.fixture
def images():
    return torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def fresh_small() -> nn.Module:
    return create_model("small_cnn", num_classes=5, in_channels=1, image_size=8).eval()


# --- the shared public checkpoints ---------------------------------------------------------------


@needs_shared
@pytest.mark.parametrize(
    "spec, file, millions",
    [
        ("cifar_resnet20", "resnet20-12fca82f.th", 0.27),  # {"best_prec1", "state_dict": {"module.*"}}
        ("cifar_resnet56", "cifar_resnet56-jpegft.pt", 0.85),  # {"state_dict", "arch", "note", ...}
    ],
)
def test_shared_checkpoints_load(spec, file, millions):
    teacher = load_teacher(spec, weights=SHARED_TEACHERS / file)
    assert teacher.num_params / 1e6 == pytest.approx(millions, abs=0.005)
    assert not teacher.model.training
    assert teacher.input.mean == (0.485, 0.456, 0.406)
    assert teacher.weights_name == file and len(teacher.weights_sha256) == 64
    with torch.no_grad():
        assert teacher.model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@needs_shared
def test_shared_checkpoint_refuses_the_wrong_depth():
    with pytest.raises(ValueError, match="missing keys.*unexpected keys"):
        load_teacher("cifar_resnet32", weights=SHARED_TEACHERS / "resnet20-12fca82f.th")


# --- wrappers and prefixes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"state_dict": sd, "epoch": 3},
        lambda sd: {"model": sd, "optimizer": {"lr": 0.1}},
        lambda sd: {"model_state_dict": {f"module.{k}": v for k, v in sd.items()}},
        lambda sd: {f"module.{k}": v for k, v in sd.items()},
        lambda sd: {f"_orig_mod.{k}": v for k, v in sd.items()},
        lambda sd: {"model": {"state_dict": {f"_orig_mod.module.{k}": v for k, v in sd.items()}}},
    ],
    ids=["plain", "state_dict", "model", "model_state_dict+module", "module.", "_orig_mod.", "nested"],
)
def test_wrapped_checkpoints_load_to_identical_outputs(tmp_path, small, images, wrap):
    path = tmp_path / "ckpt.pt"
    torch.save(wrap(small.state_dict()), path)
    teacher = load_teacher("small_cnn", weights=path, num_classes=5, data=Preprocessing((0.5,), (0.25,), 8))
    with torch.no_grad():
        assert torch.equal(teacher.model(images), small(images))


def test_mismatch_lists_missing_and_unexpected_keys(small):
    state = small.state_dict()
    state["extra.weight"] = state.pop("classifier.weight")
    with pytest.raises(ValueError) as error:
        load_weights(fresh_small(), state)
    message = str(error.value)
    assert "1 missing keys: classifier.weight" in message
    assert "1 unexpected keys: extra.weight" in message


def test_mismatch_lists_shapes():
    other = create_model("small_cnn", num_classes=7, in_channels=1, image_size=8)
    with pytest.raises(ValueError, match=r"classifier.weight \(checkpoint \(7, 256\), model \(5, 256\)\)"):
        load_weights(fresh_small(), other.state_dict())


def test_long_mismatch_lists_are_cut_short():
    with pytest.raises(ValueError, match=r"\+\d+ more"):
        load_weights(create_model("cifar_resnet20", 10), {"x": torch.zeros(1)})


def test_non_tensor_entries_are_refused():
    with pytest.raises(ValueError, match=r"non-tensor entries .*epoch \(int\)"):
        unwrap_state_dict({"net": {"a": torch.zeros(1)}, "epoch": 3})


def test_pickled_objects_need_trust(tmp_path, small, images):
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": small.state_dict(), "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(ValueError, match="cannot be loaded safely.*argparse.Namespace.*--trust-checkpoint"):
        load_checkpoint(path)
    with pytest.warns(UserWarning, match="runs code from the file"):
        state = load_checkpoint(path, trust=True)
    model = fresh_small()
    load_weights(model, state)
    with torch.no_grad():
        assert torch.equal(model(images), small(images))


def test_missing_and_unreadable_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable torch checkpoint"):
        load_checkpoint(junk)


# --- other spec kinds ------------------------------------------------------------------------------


FACTORY_FILE = """
import torch.nn as nn

def tiny(num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, num_classes))

def sized(num_classes, in_channels=3, image_size=32):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size ** 2, num_classes))

def not_a_model(num_classes):
    return "oops"
"""


@pytest.fixture
def factory_file(tmp_path):
    path = tmp_path / "my_nets.py"
    path.write_text(FACTORY_FILE)
    return path


def test_factory_file(factory_file, tmp_path):
    teacher = load_teacher(f"{factory_file}:tiny", num_classes=4)
    assert teacher.model(torch.randn(2, 3, 32, 32)).shape == (2, 4)
    assert teacher_record(teacher).spec == f"{factory_file}:tiny"
    sized = create_model(f"{factory_file}:sized", 4, in_channels=1, image_size=8)
    assert sized(torch.randn(2, 1, 8, 8)).shape == (2, 4)


def test_factory_file_errors(factory_file, tmp_path):
    with pytest.raises(FileNotFoundError):
        create_model(f"{tmp_path / 'absent.py'}:tiny", 10)
    with pytest.raises(ValueError, match="no function 'missing'.*not_a_model, sized, tiny"):
        create_model(f"{factory_file}:missing", 10)
    with pytest.raises(ValueError, match="returned str, not a torch.nn.Module"):
        create_model(f"{factory_file}:not_a_model", 10)
    with pytest.raises(ValueError, match="FILE.py:FUNC"):
        create_model(str(factory_file), 10)


def test_torchvision_classifier():
    teacher = load_teacher("torchvision:resnet18", num_classes=7)
    with torch.no_grad():
        assert teacher.model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    assert teacher_record(teacher).model_class == "ResNet"
    with pytest.raises(ValueError, match="unknown torchvision classifier 'resnet19'.*resnet18"):
        create_model("torchvision:resnet19", 10)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown model 'resnet57'; choose one of: .*cifar_resnet56.*torchvision:NAME"):
        create_model("resnet57", 10)
    with pytest.raises(FileNotFoundError):
        create_model("missing/model.pt2", 10)


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")
def test_torchscript_archive_round_trip(tmp_path, small, images):
    path = tmp_path / "teacher.ts"
    torch.jit.script(small).save(str(path))
    teacher = load_teacher(str(path))
    assert teacher.weights_name == "teacher.ts" and teacher.weights_sha256 == weights.sha256_file(path)
    assert teacher_record(teacher).model_class == "SmallCNN"
    with torch.no_grad():
        assert torch.equal(teacher.model(images), small(images))
    with pytest.raises(ValueError, match="carries its own weights"):
        load_teacher(str(path), weights=path)


def test_export_archive_round_trip(tmp_path, small, images):
    path = tmp_path / "teacher.pt2"
    torch.export.save(torch.export.export(small, (images,)), str(path))
    teacher = load_teacher(str(path))
    assert not teacher.model.training
    with torch.no_grad():
        assert torch.allclose(teacher.model(images), small(images))


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")
def test_a_state_dict_is_not_an_archive(tmp_path, small):
    path = tmp_path / "weights.pt"
    torch.save(small.state_dict(), path)
    with pytest.raises(ValueError, match="not a TorchScript archive.*--weights"):
        create_model(str(path), 10)


def test_describe_is_json_able_and_hash_streams(tmp_path, small):
    import json

    path = tmp_path / "w.pt"
    torch.save(small.state_dict(), path)
    teacher = load_teacher("small_cnn", weights=path, num_classes=5, data=Preprocessing((0.5,), (0.25,), 8))
    info = json.loads(json.dumps(teacher_record(teacher).to_dict()))
    assert info == {
        "spec": "small_cnn",
        "weights": str(path),
        "weights_name": "w.pt",
        "weights_sha256": weights.sha256_file(path),
        "num_params": teacher.num_params,
        "model_class": "SmallCNN",
    }
    import hashlib

    assert weights.sha256_file(path, chunk_bytes=7) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert load_teacher("small_cnn").weights_sha256 is None
