"""One resolver decides a model's input: flags, then what the weights record, then the model, then the data."""

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from softlabels import store
from softlabels.cli import main as softlabels_cli
from softlabels.inputs import Preprocessing, data_input, resolve_input
from trainer.cli import main as trainer_cli

RGB_DATA = Preprocessing((0.5,) * 3, (0.25,) * 3, 16)
GREY_DATA = Preprocessing((0.3,), (0.3,), 28)
ZOO_STATS = (0.485, 0.456, 0.406)


def test_preprocessing_round_trips_through_a_dict():
    prep = Preprocessing((0.5, 0.4, 0.3), (0.2, 0.25, 0.3), 8)
    assert prep.channels == 3 and Preprocessing.from_dict(prep.to_dict()) == prep
    assert prep.to_dict() == {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3], "image_size": 8}
    with pytest.raises(ValueError, match="1 or 3 values"):
        Preprocessing((0.5, 0.5), (0.2, 0.2), 8)


def test_precedence_flags_then_weights_then_model_then_data():
    assert resolve_input("small_cnn", RGB_DATA) == RGB_DATA  # nothing declared: the data's
    declared = resolve_input("cifar_resnet56", RGB_DATA)
    assert declared.mean == ZOO_STATS and declared.image_size == 32  # the published weights' input
    trained = Preprocessing((0.1,), (0.2,), 12)
    assert resolve_input("cifar_resnet56", RGB_DATA, trained=trained) == trained  # what the weights record
    flags = resolve_input("cifar_resnet56", RGB_DATA, trained=trained, mean=(0.7,), std=(0.1,), image_size=9)
    assert flags == Preprocessing((0.7,), (0.1,), 9)
    assert resolve_input("cifar_resnet56", GREY_DATA) == GREY_DATA  # RGB statistics do not fit grey data
    with pytest.raises(ValueError, match="--mean and --std"):
        resolve_input("small_cnn", GREY_DATA, mean=(0.1, 0.2, 0.3))


def test_data_input_fits_statistics_to_a_channel_count():
    defaults = {"mean": (0.2, 0.4, 0.6), "std": (0.1, 0.2, 0.3), "image_size": 32}
    assert data_input(defaults) == Preprocessing((0.2, 0.4, 0.6), (0.1, 0.2, 0.3), 32, pixels="uint8")
    assert data_input(defaults, channels=1, image_size=8).mean == pytest.approx((0.4,))
    assert data_input({"mean": (0.5,), "std": (0.2,), "image_size": 28}, channels=3).mean == (0.5,) * 3


def make_grey_folder(root, per_class=6, size=12):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label, name in enumerate(("a", "b", "c")):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 200, (size, size), dtype=np.uint8) + 20 * label
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return root


def test_a_teacher_trained_by_the_trainer_builds_with_no_extra_flags(tmp_path):
    """The issue's reproducer: a grey dataset, a zoo architecture whose published weights are RGB."""
    data = make_grey_folder(tmp_path / "grey")
    quick = ["--workers", "0", "--device", "cpu", "--no-progress"]
    done = CliRunner().invoke(
        trainer_cli,
        [
            "fit",
            "--dataset",
            f"imagefolder:{data}",
            "--student",
            "cifar_resnet20",
            "--loss",
            "ce",
            "--epochs",
            "1",
            "--batch-size",
            "6",
            *quick,
            "--out",
            str(tmp_path / "t"),
        ],
    )
    assert done.exit_code == 0, done.output
    done = CliRunner().invoke(
        softlabels_cli,
        [
            "build",
            "--dataset",
            f"imagefolder:{data}",
            "--teacher",
            "cifar_resnet20",
            "--weights",
            str(tmp_path / "t" / "best.pt"),
            "--workers",
            "0",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "c.h5"),
        ],
    )
    assert done.exit_code == 0, done.output
    info = store.read_info(tmp_path / "c.h5")
    assert info.preprocessing.channels == 1 and info.preprocessing.image_size == 12
    done = CliRunner().invoke(softlabels_cli, ["verify", str(tmp_path / "c.h5"), "--recompute", "6", "--device", "cpu"])
    assert done.exit_code == 0 and "reproduces 6 samples" in done.output, done.output
