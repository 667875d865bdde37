"""Samples that are not images — feature vectors, waveforms, token ids with masks — from FILE.py:FUNC
datasets: cached and fed bit for bit, keyed and fingerprinted as images are."""

import textwrap

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from softlabels import open_cache, store
from softlabels.cli import main
from softlabels.data import open_dataset
from tests.trainer.witness import Witness
from trainer import FitConfig, fit
from trainer.cli import main as trainer_main

DATA = '''
import numpy as np
import torch

class Features(torch.utils.data.Dataset):
    """12 float64 features per sample that are no image and no [0, 1] values: rounding would show."""
    classes = ["a", "b", "c"]

    def __init__(self, split):
        rng = np.random.default_rng(0 if split == "train" else 1)
        self.x = rng.normal(size=(30, 12)) * 100 + 1 / 3
        self.targets = [i % 3 for i in range(30)]
        self.keys = [f"{split}-{i:02d}" for i in range(30)]

    def __len__(self):
        return 30

    def __getitem__(self, i):
        return self.x[i], self.targets[i]


class Tokens(torch.utils.data.Dataset):
    classes = ["neg", "pos"]

    def __init__(self, split):
        rng = np.random.default_rng(2)
        self.ids = torch.from_numpy(rng.integers(1, 50, (20, 7)))
        self.mask = (torch.arange(7)[None] < torch.from_numpy(rng.integers(3, 8, (20, 1)))).long()
        self.targets = [int(i % 2) for i in range(20)]

    def __len__(self):
        return 20

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": self.mask[i]}, self.targets[i]


class Holes(Features):
    """Samples 4 and 7 hold a NaN feature (a gap in a sensor's record)."""

    def __init__(self, split):
        super().__init__(split)
        self.x[[4, 7], 3] = np.nan


class Ragged(Features):
    def __getitem__(self, i):
        return self.x[i][: 12 - (i == 5)], self.targets[i]


def features(split="train", root=None):
    return Features(split)


def tokens(split="train", root=None):
    return Tokens(split)


def holes(split="train", root=None):
    return Holes(split)


def ragged(split="train", root=None):
    return Ragged(split)
'''

MODELS = '''
import torch
from torch import nn


class Bag(nn.Module):
    """Mean of token embeddings over the mask: a dict-taking text model."""

    def __init__(self, num_classes):
        super().__init__()
        self.embed = nn.Embedding(50, 8)
        self.head = nn.Linear(8, num_classes)

    def forward(self, batch):
        mask = batch["attention_mask"].unsqueeze(-1).float()
        return self.head((self.embed(batch["input_ids"]) * mask).sum(1) / mask.sum(1))


def bag(num_classes):
    return Bag(num_classes)


def features_mlp(num_classes):
    return nn.Sequential(nn.Linear(12, 16, dtype=torch.float64), nn.ReLU(), nn.Linear(16, num_classes,
                         dtype=torch.float64))
'''


@pytest.fixture
def files(tmp_path):
    (tmp_path / "data.py").write_text(textwrap.dedent(DATA))
    (tmp_path / "models.py").write_text(textwrap.dedent(MODELS))
    return tmp_path


def build(files, dataset, teacher, out, *extra):
    torch.manual_seed(0)
    spec = f"{files / 'models.py'}:{teacher}"
    torch.save(
        __import__("importlib")
        .import_module("softlabels.models.registry")
        .create_model(spec, 3 if teacher != "bag" else 2)
        .state_dict(),
        files / f"{teacher}.pt",
    )
    result = CliRunner().invoke(
        main,
        [
            "build",
            "--dataset",
            f"{files / 'data.py'}:{dataset}",
            "--teacher",
            spec,
            "--weights",
            str(files / f"{teacher}.pt"),
            "--dtype",
            "float32",
            "--workers",
            "0",
            "--device",
            "cpu",
            "--out",
            str(out),
            *extra,
        ],
    )
    return result


def test_float_features_round_trip_bit_exactly(files, tmp_path):
    """The cached logits equal the teacher's outputs on the exact stored inputs (float64, no rounding)."""
    result = build(files, "features", "features_mlp", tmp_path / "f.h5")
    assert result.exit_code == 0, result.output
    source = open_dataset(f"{files / 'data.py'}:features")
    assert source.keys[0] == "train-00" and isinstance(source.load(0), torch.Tensor)
    assert source.load(0).dtype == torch.float64
    from softlabels.models.registry import create_model

    model = create_model(f"{files / 'models.py'}:features_mlp", 3)
    model.load_state_dict(torch.load(files / "features_mlp.pt"))
    with torch.no_grad():
        expected = model(torch.stack([source.load(i) for i in range(30)])).float().numpy()
    targets = store.CacheTargets(tmp_path / "f.h5")
    np.testing.assert_array_equal(np.stack([targets.logits(i, 0) for i in range(30)]), expected)
    info = store.read_info(tmp_path / "f.h5")
    assert info.input.sample == "tensor" and info.input.features == 12
    assert info.fingerprint == store.dataset_fingerprint(source.keys, source.labels)


def test_non_finite_inputs_are_named_as_the_cause(files, tmp_path):
    result = build(files, "holes", "features_mlp", tmp_path / "h.h5")
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert "the inputs of 2 sample(s) in a batch hold NaN/inf values, first keys: train-04, train-07" in result.output
    assert "--no-amp" not in result.output and "fp16" not in result.output  # a CPU run: AMP was off
    assert not (tmp_path / "h.h5").exists()


@pytest.mark.parametrize("batch, named", [(30, "train-04, train-07"), (6, "train-04"), (6, "train-07")])
def test_the_trainers_nan_stop_names_the_samples(files, tmp_path, batch, named):
    """In batches of 6 (shuffled by --seed) the first batch with a hole stops the run: it names only its own."""
    seed = {"train-04": "0", "train-07": "1"}.get(named, "0")
    args = ["fit", "--dataset", f"{files / 'data.py'}:holes", "--student", "linear", "--batch-size", str(batch)]
    run = CliRunner().invoke(
        trainer_main,
        [*args, "--seed", seed, "--workers", "0", "--eval-dataset", "none", "--out", str(tmp_path / "run")],
    )
    assert run.exit_code == 1 and "Traceback" not in run.output, run.output
    assert f"the inputs or targets of sample(s) {named} hold NaN/inf values" in run.output
    assert "Fix or leave out those samples" in run.output and "Lower --lr" not in run.output


@pytest.mark.parametrize("dataset, teacher", [("features", "features_mlp"), ("tokens", "bag")])
def test_verify_recompute_reruns_the_teacher_on_tensor_samples(files, tmp_path, dataset, teacher):
    assert build(files, dataset, teacher, tmp_path / "c.h5").exit_code == 0
    result = CliRunner().invoke(main, ["verify", str(tmp_path / "c.h5"), "--recompute", "6", "--device", "cpu"])
    assert result.exit_code == 0 and "reproduces 6 samples" in result.output, result.output


def test_dict_samples_to_a_text_model_and_classic_students(files, tmp_path):
    result = build(files, "tokens", "bag", tmp_path / "t.h5", "--views", "1")
    assert result.exit_code == 0, result.output
    witness = Witness()  # what each step fed the loss: the dict batches and the cache's targets
    summary = fit(
        FitConfig.from_options(
            cache=str(tmp_path / "t.h5"),
            student=f"{files / 'models.py'}:bag",
            epochs=2,
            batch_size=5,
            workers=0,
            device="cpu",
            eval_dataset="none",
            progress=False,
            out=str(tmp_path / "bag"),
        ),
        hooks=[witness],
    )
    assert summary["finished"] and np.isfinite(summary["train_loss"])
    cache = open_cache(tmp_path / "t.h5")
    stored = cache.logits(list(range(len(cache))))  # (N, C): one view
    assert len(witness.steps) == 2 * -(-len(cache) // 5)
    for step in witness.steps:
        assert isinstance(step.images, dict) and {"input_ids", "attention_mask"} <= set(step.images)
        assert step.images["input_ids"].dtype == torch.int64 and step.images["input_ids"].ndim == 2
        for row in step.targets.numpy():  # every target is some sample's stored row
            assert np.isclose(stored, row, atol=1e-6).all(axis=1).any()
    refused = CliRunner().invoke(
        trainer_main,
        [
            "fit",
            "--cache",
            str(tmp_path / "t.h5"),
            "--student",
            "small_cnn",
            "--workers",
            "0",
            "--out",
            str(tmp_path / "cnn"),
        ],
    )
    assert refused.exit_code == 1 and "student small_cnn cannot take these samples" in refused.output
    refused = CliRunner().invoke(
        trainer_main,
        [
            "fit",
            "--cache",
            str(tmp_path / "t.h5"),
            "--student",
            "linear",
            "--workers",
            "0",
            "--out",
            str(tmp_path / "lin"),
        ],
    )
    assert (
        refused.exit_code == 1
        and "student linear cannot run on samples {input_ids: (2, 7) torch.int64, attention_mask" in refused.output
    )


def test_feature_students_linear_and_sklearn(files, tmp_path):
    assert build(files, "features", "features_mlp", tmp_path / "f.h5").exit_code == 0
    for student in ("linear", "mlp", "sklearn:logistic"):
        run = CliRunner().invoke(
            trainer_main,
            [
                "fit",
                "--cache",
                str(tmp_path / "f.h5"),
                "--student",
                student,
                "--epochs",
                "20" if student == "linear" else "2",  # 20 uses of one view: past the image threshold
                "--batch-size",
                "6",
                "--workers",
                "0",
                "--device",
                "cpu",
                "--out",
                str(tmp_path / student.replace(":", "-")),
            ],
        )
        assert run.exit_code == 0, run.output
        assert "overfits fixed targets" not in run.output  # measured on images, where augmentation is the way out


def test_ragged_samples_and_image_augments_are_refused(files, tmp_path):
    result = build(files, "ragged", "features_mlp", tmp_path / "r.h5")
    assert result.exit_code == 1 and "sample 5 is (11,) torch.float64 but the first is (12,)" in result.output
    result = build(files, "features", "features_mlp", tmp_path / "a.h5", "--views", "2", "--augment", "flip")
    assert result.exit_code == 1 and "augment flip works on images" in result.output
