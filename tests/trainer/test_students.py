"""Every zoo model trains as a student, with the input the resolver gives it."""

import pytest
import torch

from softlabels.models.preprocessing import Preprocessing
from softlabels.models.zoo import list_models
from trainer.students import create_student
from trainer.students import student_input as model_preprocessing


@pytest.mark.parametrize("name", list_models())
def test_every_zoo_model_is_a_student(name):
    model = create_student(name, num_classes=3, in_channels=1, image_size=8)
    out = model(torch.rand(2, 1, 8, 8))
    assert out.shape == (2, 3)
    out.sum().backward()


def test_unknown_student_lists_the_valid_names():
    with pytest.raises(ValueError, match="unknown model 'resnet9000'.*small_cnn"):
        create_student("resnet9000", 10, 3, 32)


def test_archives_cannot_be_students(tmp_path):
    archive = tmp_path / "frozen.pt"
    archive.write_bytes(b"a TorchScript or .pt2 archive")  # refused by name, before anything is read
    with pytest.raises(ValueError, match="cannot be trained"):
        create_student(str(archive), 10, 3, 32)


def test_preprocessing_precedence():
    data = Preprocessing((0.5,) * 3, (0.25,) * 3, 16)
    assert model_preprocessing("small_cnn", data).mean == (0.5,) * 3  # no zoo statistics: the data's
    assert model_preprocessing("cifar_resnet20", data).mean == (0.485, 0.456, 0.406)  # the zoo entry's
    flags = model_preprocessing("cifar_resnet20", data, mean=(0.1, 0.2, 0.3), std=(1.0, 1.0, 1.0))
    assert flags.mean == (0.1, 0.2, 0.3) and flags.image_size == 16
    grey = Preprocessing((0.3,), (0.3,), 28)
    assert model_preprocessing("cifar_resnet20", grey).mean == (0.3,)  # RGB zoo statistics do not fit grey data
    with pytest.raises(ValueError, match="channel"):
        model_preprocessing("small_cnn", grey, mean=(0.1, 0.2, 0.3), std=(1.0, 1.0, 1.0))


def test_a_student_that_cannot_run_on_the_images_is_a_clear_error(tmp_path):
    from trainer.students import probe_student

    prep = Preprocessing((0.5,), (0.25,), 8)
    with pytest.raises(ValueError, match="cannot run on 1x8x8 images"):
        probe_student(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(10, 3)), "mine.py:make", prep, 3)
    with pytest.raises(ValueError, match=r"expected \(2, 3\) logits"):
        probe_student(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 5)), "mine.py:make", prep, 3)
