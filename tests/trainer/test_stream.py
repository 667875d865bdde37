"""Shared-stream sweeps: every run of a stream ends with the weights of the same run trained alone (bit
for bit, on CPU), also after a stop mid-epoch and --resume; a non-finite loss stops its run alone;
each batch is read once for all runs; a sweep that cannot fit is refused before any data is read."""

import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from softlabels.build import BuildConfig, build_cache
from softlabels.stopping import Stopped
from trainer import FitConfig, SweepConfig, fit, sweep
from trainer import memory as memory_module
from trainer.cli import main
from trainer.data import CachedDataset
from trainer.stream import group_streams

# A student that draws random numbers (dropout) and can raise a stop signal or a NaN on cue.
NOISY_STUDENT = """
import os, signal
from pathlib import Path
from torch import nn

class Noisy(nn.Module):
    def __init__(self, num_classes, in_channels, image_size):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.5),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes),
        )
        self.calls = 0

    def forward(self, x):
        out = self.body(x)
        if self.training:
            self.calls += 1
            if self.calls == int(os.environ.get("STOP_AT", 0)):
                os.kill(os.getpid(), signal.SIGUSR1)
            mark = os.environ.get("NAN_MARK")
            if mark and self.calls == int(os.environ["NAN_AT"]) and not Path(mark).exists():
                Path(mark).touch()  # the first run to get here, alone
                out = out * float("nan")
        return out

def make(num_classes, in_channels=3, image_size=8):
    return Noisy(num_classes, in_channels, image_size)
"""


@pytest.fixture
def noisy(tmp_path):
    path = tmp_path / "noisy.py"
    path.write_text(NOISY_STUDENT)
    return f"{path}:make"


def grid(cache, fit_options, noisy, out, **options):
    """2 students x 2 temperatures, 2 epochs of 5 steps."""
    base = FitConfig.from_options(cache=cache, **{**fit_options, "out": str(out), **options})
    return SweepConfig(base, students=(noisy, "linear"), temperatures=(1.0, 4.0), alphas=(0.5,))


def weights(out: Path) -> dict:
    return torch.load(out / "last.pt", weights_only=True)["model"]


def assert_each_run_equals_it_alone(config: SweepConfig, tmp_path: Path) -> None:
    for run in config.runs():
        alone = Path(tmp_path / "alone" / Path(run.runtime.out).name)
        fit(run.replace(out=str(alone), resume=False))
        mine, reference = weights(Path(run.runtime.out)), weights(alone)
        assert mine.keys() == reference.keys()
        for key in mine:
            assert torch.equal(mine[key], reference[key]), f"{run.runtime.out}: {key} differs"


@pytest.fixture
def reads(monkeypatch):
    """How many samples the cached datasets decode (workers=0: in this process)."""
    count = [0]
    original = CachedDataset.__getitem__

    def counted(self, item):
        count[0] += 1
        return original(self, item)

    monkeypatch.setattr(CachedDataset, "__getitem__", counted)
    return count


@pytest.mark.parametrize("per_decode", [1, 2])
def test_each_run_of_a_shared_stream_equals_the_run_alone(
    multiview_cache, fit_options, noisy, tmp_path, per_decode, reads
):
    config = grid(multiview_cache, fit_options, noisy, tmp_path / "sweep", views_per_decode=per_decode)
    assert len(group_streams(config.runs())) == 1
    rows = sweep(config)
    assert [r["status"] for r in rows] == ["ok"] * 4
    shared = reads[0]
    reads[0] = 0
    assert_each_run_equals_it_alone(config, tmp_path)
    assert reads[0] == 4 * shared  # alone, each run reads every batch again


def test_a_stop_mid_epoch_stops_every_run_at_the_same_step_and_resume_is_bit_identical(
    multiview_cache, fit_options, noisy, tmp_path, monkeypatch
):
    config = grid(multiview_cache, fit_options, noisy, tmp_path / "sweep", views_per_decode=2)
    monkeypatch.setenv("STOP_AT", "11")  # the noisy students' 11th training forward: epoch 2, step 2
    with pytest.raises(Stopped, match=r"stopped by SIGUSR1 at epoch 2, step 2 of 9: 4 run\(s\) saved"):
        sweep(config)
    saved = [torch.load(Path(run.runtime.out) / "last.pt", weights_only=True) for run in config.runs()]
    assert [(s["epoch"], s["step"]) for s in saved] == [(1, 2)] * 4
    monkeypatch.delenv("STOP_AT")
    rows = sweep(SweepConfig(config.base.replace(resume=True), config.students, config.temperatures, config.alphas))
    assert [r["status"] for r in rows] == ["ok"] * 4
    assert_each_run_equals_it_alone(config, tmp_path)


def test_a_non_finite_loss_stops_its_run_alone(cache, fit_options, noisy, tmp_path, monkeypatch):
    config = grid(cache, fit_options, noisy, tmp_path / "sweep")
    monkeypatch.setenv("NAN_MARK", str(tmp_path / "fired"))
    monkeypatch.setenv("NAN_AT", "8")  # epoch 2, step 3, in the first run of the stream
    rows = {r["run"]: r for r in sweep(config)}
    failed = rows.pop(Path(config.runs()[0].runtime.out).name)
    assert failed["status"] == "failed" and "the loss is nan at epoch 2, step 3 of 5" in failed["error"]
    assert [r["status"] for r in rows.values()] == ["ok"] * 3
    monkeypatch.delenv("NAN_MARK")
    for run in config.runs()[1:]:  # the others trained on as if alone
        alone = tmp_path / "alone" / Path(run.runtime.out).name
        fit(run.replace(out=str(alone)))
        for key, value in weights(Path(run.runtime.out)).items():
            assert torch.equal(value, weights(alone)[key])


# A student whose first op changes its input in place: a shared input would reach the next run changed.
IN_PLACE_STUDENT = """
from torch import nn

class InPlace(nn.Module):
    def __init__(self, num_classes, in_channels, image_size):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size * image_size, num_classes))

    def forward(self, x):
        return self.body(x.mul_(2.0))

def make(num_classes, in_channels=3, image_size=8):
    return InPlace(num_classes, in_channels, image_size)
"""


def test_runs_that_share_an_input_get_it_unchanged_when_a_student_changes_its_own(cache, fit_options, tmp_path):
    path = tmp_path / "in_place.py"
    path.write_text(IN_PLACE_STUDENT)
    base = FitConfig.from_options(cache=cache, **{**fit_options, "epochs": 1, "out": str(tmp_path / "sweep")})
    config = SweepConfig(base, (f"{path}:make", "linear"), (1.0, 4.0))
    assert [r["status"] for r in sweep(config)] == ["ok"] * 4
    assert_each_run_equals_it_alone(config, tmp_path)


def test_sequential_reads_every_batch_once_per_run(cache, fit_options, tmp_path, reads):
    base = FitConfig.from_options(cache=cache, **{**fit_options, "epochs": 1})
    shared = SweepConfig(base.replace(out=str(tmp_path / "a")), ("linear",), (1.0, 4.0))
    sequential = SweepConfig(base.replace(out=str(tmp_path / "b")), ("linear",), (1.0, 4.0), sequential=True)
    sweep(shared)
    once, reads[0] = reads[0], 0
    sweep(sequential)
    assert reads[0] == 2 * once
    runs = sorted(path.name for path in (tmp_path / "a").iterdir() if path.is_dir())
    assert len(runs) == 2
    for run in runs:
        together, alone = weights(tmp_path / "a" / run), weights(tmp_path / "b" / run)
        assert all(torch.equal(together[key], alone[key]) for key in alone)


def test_streams_split_where_batches_differ(cache, fit_options, tmp_path):
    base = FitConfig.from_options(cache=cache, **fit_options)
    runs = [base.replace(student="linear", temperature=t, out=str(tmp_path / f"{t}")) for t in (1.0, 4.0)]
    assert len(group_streams(runs)) == 1  # one teacher: the temperature never changes a batch
    assert len(group_streams([*runs, runs[0].replace(seed=1, out=str(tmp_path / "s"))])) == 2
    assert len(group_streams([*runs, runs[0].replace(batch_size=6, out=str(tmp_path / "b"))])) == 2


def test_a_sweep_that_cannot_fit_is_refused_in_one_line_before_any_data_is_read(cache, tmp_path, monkeypatch):
    monkeypatch.setattr(memory_module, "available_bytes", lambda device: 1 << 20)
    out = tmp_path / "sweep"
    args = ["sweep", "--cache", cache, "--student", "small_cnn", "--student", "linear", "--temperature", "1"]
    args += ["--temperature", "4", "--batch-size", "4096", "--workers", "0", "--device", "cpu", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "would not fit on cpu" in lines[0] and "4 students together" in lines[0]
    assert "--sequential" in lines[0] and not out.exists()


def test_a_footprint_counts_weights_gradients_optimizer_and_activations():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    example = torch.zeros(2, 3, 2, 2)
    sgd, adamw = (memory_module.measure(model, example, 64, o) for o in ("sgd", "adamw"))
    params = (12 * 3 + 3) * 4
    assert (sgd.params, sgd.grads, sgd.optimizer, adamw.optimizer) == (params, params, params, 2 * params)
    assert sgd.activations == 64 * 12 * 4  # the input, saved by the linear layer for its weight gradient
    assert memory_module.measure(model, example, 128).activations == 2 * sgd.activations
    assert not os.environ.get("NEVER_SET")  # the probe leaves no state behind


def test_a_grid_with_ce_beside_an_embedding_loss_trains_every_run(build_options, fit_options, tmp_path):
    """--with-ce reads no embeddings: its run gets a stream of its own, and the embedding loss's run the
    embeddings (one shared stream read without them failed both runs)."""
    options = {**build_options, "out": str(tmp_path / "emb.h5"), "targets": "logits,embedding"}
    cache = str(build_cache(BuildConfig.from_options(**options)).path)
    base = FitConfig.from_options(
        cache=cache, loss="kd+embed-cosine", **{**fit_options, "out": str(tmp_path / "sweep")}
    )
    config = SweepConfig(base, students=("small_cnn",), temperatures=(4.0,), alphas=(0.5,), with_ce=True)
    assert len(group_streams(config.runs())) == 2
    assert [r["status"] for r in sweep(config)] == ["ok"] * 2
    assert_each_run_equals_it_alone(config, tmp_path)
