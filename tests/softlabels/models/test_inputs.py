"""One resolver decides a model's input: flags, then what the weights record, then the model, then the data."""

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from softlabels import store
from softlabels.cli import main as softlabels_cli
from softlabels.models.inputs import data_input, resolve_input
from softlabels.models.preprocessing import Preprocessing, input_text
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


def test_an_explicit_size_keeps_the_models_crop_fraction_as_timm_does():
    """Issue 22: `timm:resnet18 --image-size 160` resized to the 224 px transform's 235 and cropped the
    central 68%; timm resizes to floor(160 / crop_pct 0.95) = 168 for a 160 px input."""
    timm = pytest.importorskip("timm")
    from timm.data import create_transform, resolve_data_config

    config = resolve_data_config({"input_size": (3, 160, 160)}, model=timm.create_model("resnet18", pretrained=False))
    resize = next(t for t in create_transform(**config).transforms if type(t).__name__ == "Resize")
    timm_resize = resize.size if isinstance(resize.size, int) else resize.size[0]
    prep = resolve_input("timm:resnet18", RGB_DATA, image_size=160)
    assert (prep.image_size, prep.resize, prep.interpolation) == (160, timm_resize, "bicubic") == (160, 168, "bicubic")
    published = resolve_input("timm:resnet18", RGB_DATA)
    assert (published.image_size, published.resize) == (224, 235)  # the model's own size: as published
    assert resolve_input("timm:resnet18", RGB_DATA, image_size=224) == published
    assert "resized to 168 (bicubic), centre crop 160" in input_text(prep.to_dict())  # what `info` shows


def test_an_explicit_size_on_weights_trained_at_another_input_keeps_their_crop_fraction():
    """Weights recording their own size and resize (a fine-tuned timm model): another --image-size keeps
    THEIR crop fraction (size / resize), not the published model's 0.95."""
    pytest.importorskip("timm")
    trained = Preprocessing(ZOO_STATS, (0.229, 0.224, 0.225), 128, resize=146, interpolation="bicubic")
    prep = resolve_input("timm:resnet18", RGB_DATA, trained=trained, image_size=96)
    assert (prep.image_size, prep.resize) == (96, 109)  # floor(96 / (128 / 146)); the published rule gives 101


def test_given_views_keep_their_geometry_and_take_the_datas_statistics_fitted_to_them():
    """A cache's views and an online teacher's are one case: the student's statistics are its own
    where they fit, else the dataset's fitted to the views' channels (grey data, RGB teacher views)."""
    views = Preprocessing(ZOO_STATS, (0.2, 0.2, 0.2), 24, resize=27, interpolation="bicubic", pixels="uint8")
    student = resolve_input("small_cnn", GREY_DATA, views=views)
    assert student == views.with_statistics((0.3,) * 3, (0.3,) * 3)
    assert student.geometry == views.geometry and student.geometry["channels"] == 3
    assert resolve_input("cifar_resnet20", GREY_DATA, views=views).mean == ZOO_STATS  # the model's own
    with pytest.raises(ValueError, match="channel"):
        resolve_input("small_cnn", GREY_DATA, views=views, mean=(0.1,), std=(0.2,))


def test_a_recorded_input_is_taken_whole_and_mean_names_the_channel_count():
    recorded = Preprocessing((0.1,), (0.2,), 12, resize=14, interpolation="bicubic")
    assert resolve_input("timm:resnet18", RGB_DATA, recorded=recorded) == recorded
    grey = resolve_input("cifar_resnet56", RGB_DATA, mean=(0.5,), std=(0.25,))
    assert grey.channels == 1 and grey.image_size == RGB_DATA.image_size  # RGB zoo statistics do not apply
