"""The engine's hook contract: a custom hook is called at the documented points, in order, after
the run's own outputs, also when a stop signal or an error ends the run."""

import json
import signal
from pathlib import Path

import pytest
import torch

from softlabels.stopping import Stopped
from trainer import FitConfig, Hook, fit


class Recorder(Hook):
    """Records every call; can ask for a stop at a given step, or fail at the end of an epoch."""

    def __init__(self, stop_at_step=None, fail_at_epoch=None):
        self.calls, self.stop_at_step, self.fail_at_epoch = [], stop_at_step, fail_at_epoch
        self.summary, self.metrics_seen = None, []

    def on_fit_start(self, run, progress):
        self.calls.append(("fit_start", progress.epoch))

    def on_step_end(self, run, step, loss):
        self.calls.append(("step", step))
        if step == self.stop_at_step:
            run.stop.signal = signal.SIGTERM  # as the handler would on a real signal

    def on_epoch_end(self, run, progress, record):
        self.calls.append(("epoch_end", record["epoch"]))
        assert progress.history[-1] is record and progress.epoch == record["epoch"]
        metrics = Path(run.config.runtime.out) / "metrics.jsonl"
        self.metrics_seen.append(len(metrics.read_text().splitlines()))  # the run's own outputs ran first
        if record["epoch"] == self.fail_at_epoch:
            raise RuntimeError("a failing hook")

    def on_interrupt(self, run, progress):
        self.calls.append(("interrupt", progress.step))

    def on_stop(self, run, progress):
        self.calls.append(("stop", progress.epoch))

    def on_fit_end(self, run, progress, summary):
        self.calls.append(("fit_end", progress.epoch))
        self.summary = summary

    def teardown(self, run):
        self.calls.append(("teardown",))


def test_a_hook_receives_every_call_in_order(cache, fit_options, tmp_path):
    hook = Recorder()
    summary = fit(FitConfig.from_options(cache=cache, **fit_options), hooks=[hook])  # 18 images / 4: 5 steps
    steps = [("step", s) for s in range(10)]
    assert hook.calls == [
        ("fit_start", 0),
        *steps[:5],
        ("epoch_end", 1),
        *steps[5:],
        ("epoch_end", 2),
        ("fit_end", 2),
        ("teardown",),
    ]
    assert hook.summary is summary and hook.metrics_seen == [1, 2]
    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == json.loads(json.dumps(summary))


def test_a_stop_signal_interrupts_then_stops_and_a_resume_starts_where_it_stopped(cache, fit_options, tmp_path):
    hook = Recorder(stop_at_step=6)  # the second step of epoch 2
    with pytest.raises(Stopped, match="at epoch 2, step 2 of 5"):
        fit(FitConfig.from_options(cache=cache, **fit_options), hooks=[hook])
    assert hook.calls[-6:] == [("epoch_end", 1), ("step", 5), ("step", 6), ("interrupt", 2), ("stop", 1), ("teardown",)]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["stopped_by"] == "SIGTERM"
    again = Recorder()
    fit(FitConfig.from_options(cache=cache, resume=True, **fit_options), hooks=[again])
    assert again.calls == [("fit_start", 1), ("step", 7), ("step", 8), ("step", 9), ("epoch_end", 2)] + [
        ("fit_end", 2),
        ("teardown",),
    ]


def test_teardown_runs_when_a_hook_fails(cache, fit_options):
    hook = Recorder(fail_at_epoch=1)
    with pytest.raises(RuntimeError, match="a failing hook"):
        fit(FitConfig.from_options(cache=cache, **fit_options), hooks=[hook])
    assert hook.calls[-2:] == [("epoch_end", 1), ("teardown",)]


class FullDisk(Hook):
    """A teardown that cannot write (a last picture on a full disk)."""

    def teardown(self, run):
        raise OSError(28, "No space left on device")


def test_a_failing_teardown_never_hides_the_error_that_ended_the_run(cache, fit_options):
    hook = Recorder(fail_at_epoch=1)
    with pytest.raises(RuntimeError, match="a failing hook"):
        fit(FitConfig.from_options(cache=cache, **fit_options), hooks=[FullDisk(), hook])
    assert hook.calls[-1] == ("teardown",)  # the teardowns after the failing one still ran
    with pytest.raises(OSError, match="No space left"):  # a run that ended well reports it
        fit(FitConfig.from_options(cache=cache, **{**fit_options, "overwrite": True}), hooks=[FullDisk()])


def test_a_run_of_several_views_per_decode_resumes_mid_epoch_to_the_same_weights(
    multiview_cache, fit_options, tmp_path
):
    """With R views per decode a batch holds B / R samples: the resumed epoch skips the samples its
    steps took, not R times as many."""

    options = {**fit_options, "cache": multiview_cache, "views_per_decode": 2, "eval_dataset": "none"}
    fit(FitConfig.from_options(**{**options, "out": str(tmp_path / "whole")}))
    with pytest.raises(Stopped, match="at epoch 2, step 4 of 9"):
        fit(FitConfig.from_options(**options), hooks=[Recorder(stop_at_step=12)])
    again = Recorder()
    fit(FitConfig.from_options(**{**options, "resume": True}), hooks=[again])
    assert [call[1] for call in again.calls if call[0] == "step"] == list(range(13, 18))
    resumed = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"]
    whole = torch.load(tmp_path / "whole" / "last.pt", weights_only=True)["model"]
    assert resumed.keys() == whole.keys() and all(torch.equal(resumed[k], whole[k]) for k in whole)
    # the resumed epoch's record is the uninterrupted one's: its learning rate when it began, every image
    records = [[json.loads(line) for line in (tmp_path / name / "metrics.jsonl").open()] for name in ("run", "whole")]
    same = [
        [(r["epoch"], r["lr"], r["train_loss"], round(r["seconds"] * r["images_per_second"])) for r in rs]
        for rs in records
    ]
    assert same[0] == same[1]
