"""trainer sweep: every combination in its own folder, failures recorded, a leaderboard."""

import csv
import json
import re

import pytest
import torch

from softlabels.build import BuildConfig, build_cache
from tests.conftest import make_image_folder
from trainer import FitConfig, SweepConfig, fit, sweep


def test_sweep_ranks_runs_and_records_failures(cache, fit_options, tmp_path):
    base = FitConfig.from_options(cache=cache, **{**fit_options, "epochs": 1, "out": str(tmp_path / "sweep")})
    config = SweepConfig(
        base, students=("linear", "no_such_model"), temperatures=(1.0, 4.0), alphas=(0.5,), with_ce=True
    )
    assert [c.runtime.out.rsplit("/", 1)[1] for c in config.runs()] == [
        "linear-ce",
        "linear-kd-T1-a0.5",
        "linear-kd-T4-a0.5",
        "no_such_model-ce",
        "no_such_model-kd-T1-a0.5",
        "no_such_model-kd-T4-a0.5",
    ]
    rows = sweep(config)
    assert [r["status"] for r in rows] == ["ok"] * 3 + ["failed"] * 3
    assert "unknown model 'no_such_model'" in rows[-1]["error"]
    out = tmp_path / "sweep"
    assert (out / "linear-kd-T4-a0.5" / "summary.json").exists()
    assert (out / "no_such_model-ce" / "error.txt").exists()
    table = list(csv.DictReader((out / "leaderboard.csv").open()))
    assert [r["run"] for r in table][:3] == [r["run"] for r in rows][:3] and table[0]["rank"] == "1"
    text = (out / "leaderboard.md").read_text()
    assert "| rank | run |" in text and "## Failed runs" in text
    assert (out / "leaderboard.png").stat().st_size > 0


def test_sweep_refuses_bad_grids_before_training(cache, fit_options):
    base = FitConfig.from_options(cache=cache, **fit_options)
    with pytest.raises(ValueError, match="temperature must be positive"):
        sweep(SweepConfig(base, students=("linear",), temperatures=(0.0,)))
    with pytest.raises(FileNotFoundError, match="cache not found"):
        sweep(SweepConfig(FitConfig.from_options(cache=cache + ".missing", **fit_options), students=("linear",)))


def test_a_rerun_into_a_sweep_folder_needs_resume_or_overwrite(cache, fit_options, tmp_path):
    base = FitConfig.from_options(cache=cache, **{**fit_options, "epochs": 1, "out": str(tmp_path / "sweep")})
    config = SweepConfig(base, students=("linear",), temperatures=(1.0,), alphas=(0.5,))
    assert [r["status"] for r in sweep(config)] == ["ok"]
    board = (tmp_path / "sweep" / "leaderboard.md").read_text()
    with pytest.raises(FileExistsError, match=r"sweep already holds runs of this grid \(linear-kd-T1-a0.5\): pass "):
        sweep(config)
    assert (tmp_path / "sweep" / "leaderboard.md").read_text() == board  # nothing rewritten
    again = SweepConfig(base.replace(resume=True), students=("linear",), temperatures=(1.0,), alphas=(0.5,))
    assert [r["status"] for r in sweep(again)] == ["ok"]


def test_a_grid_the_loss_does_not_use_is_named_in_a_warning(cache, fit_options):
    base = FitConfig.from_options(cache=cache, **{**fit_options, "loss": "hard"})
    with pytest.warns(UserWarning, match="--loss hard uses no temperature: the grid.s --temperature values are"):
        runs = SweepConfig(base, students=("linear",), temperatures=(1.0, 4.0)).runs()
    assert [run.runtime.out.rsplit("/", 1)[1] for run in runs] == ["linear-hard"]


def test_a_student_from_a_file_names_its_run_folders_by_file_and_function(cache, fit_options, tmp_path):
    base = FitConfig.from_options(cache=cache, **{**fit_options, "out": str(tmp_path / "sweep")})
    students = (f"{tmp_path}/models/net.py:tiny", f"{tmp_path}/other/net.py:tiny", f"{tmp_path}/models/net.py:wide")
    names = [c.runtime.out.rsplit("/", 1)[1] for c in SweepConfig(base, students=students, temperatures=(4.0,)).runs()]
    clash = re.sub(r"[^\w.+-]", "_", f"{tmp_path}/models/net.py:tiny")
    assert names == [f"{clash}-kd-T4-a0.9", clash.replace("models", "other") + "-kd-T4-a0.9", "net.wide-kd-T4-a0.9"]


def test_probes_without_an_evaluation_set_stop_the_sweep_before_training(cache, build_options, fit_options, tmp_path):
    folder = make_image_folder(tmp_path / "flat", splits=("train",)) / "train"  # no test or val split
    options = {**build_options, "dataset": f"imagefolder:{folder}", "out": str(tmp_path / "flat.h5")}
    flat = build_cache(BuildConfig.from_options(**options))
    out = tmp_path / "sweep"
    for path, eval_dataset, why in [
        (str(flat.path), None, f"imagefolder:{folder} has no test or val split"),
        (cache, "none", "--eval-dataset none turns it off"),
    ]:
        options = {**fit_options, "out": str(out), "probe": ("knn",), "eval_dataset": eval_dataset}
        base = FitConfig.from_options(cache=path, **options)
        with pytest.raises(ValueError, match=f"--probe knn scores the student's features .*{re.escape(why)}"):
            sweep(SweepConfig(base, students=("linear",)))
        assert not out.exists()  # no run started, none recorded as failed


def test_with_probes_the_leaderboard_shows_and_ranks_by_them(cache, fit_options, tmp_path):
    out = tmp_path / "sweep"
    base = FitConfig.from_options(cache=cache, **{**fit_options, "out": str(out), "probe": ("knn",), "epochs": 1})
    rows = sweep(SweepConfig(base, students=("linear", "small_cnn"), temperatures=(4.0,)))
    summaries = {row["run"]: json.loads((out / row["run"] / "summary.json").read_text()) for row in rows}
    assert [row["probe_knn"] for row in rows] == sorted((s["probe_knn"] for s in summaries.values()), reverse=True)
    assert all(row["probe_knn"] == summaries[row["run"]]["probe_knn"] for row in rows)
    with open(out / "leaderboard.csv") as file:
        assert [float(r["probe_knn"]) for r in csv.DictReader(file)] == [row["probe_knn"] for row in rows]
    board = (out / "leaderboard.md").read_text()
    assert "Ranked by k-NN probe accuracy" in board and "| probe_knn |" in board and "probe_linear" not in board


def test_a_sweep_refuses_folders_another_trainer_is_writing(cache, fit_options, tmp_path, holding):
    """A process writing one run's folder (a fit with that --out) fails that run alone, the shared stream
    trains the others; one writing the sweep's own folder stops the sweep before it trains."""
    base = FitConfig.from_options(cache=cache, **{**fit_options, "epochs": 1, "out": str(tmp_path / "sweep")})
    grid = dict(students=("linear",), temperatures=(1.0, 2.0), alphas=(0.5,))
    with holding(tmp_path / "sweep" / "linear-kd-T1-a0.5"):
        rows = {row["run"]: row for row in sweep(SweepConfig(base, **grid))}
    assert rows["linear-kd-T2-a0.5"]["status"] == "ok"
    assert rows["linear-kd-T1-a0.5"]["status"] == "failed"
    assert "sweep/linear-kd-T1-a0.5 is being written by another trainer" in rows["linear-kd-T1-a0.5"]["error"]
    board = (tmp_path / "sweep" / "leaderboard.md").read_text()
    with holding(tmp_path / "sweep"), pytest.raises(FileExistsError, match="sweep is being written by another"):
        sweep(SweepConfig(base.replace(resume=True), **grid))
    assert (tmp_path / "sweep" / "leaderboard.md").read_text() == board


def test_caches_or_an_ensemble_every_run_would_refuse_stop_the_sweep_before_training(
    cache, build_options, image_folder, fit_options, tmp_path
):
    """Caches of two teachers, --subset on a partly unlabelled set, or --ensemble on a one-teacher cache:
    one line, no folder, no failed rows."""
    from softlabels.models.registry import create_model

    torch.manual_seed(1)
    other = create_model("small_cnn", num_classes=3, in_channels=3, image_size=8)
    torch.save({"state_dict": other.state_dict()}, tmp_path / "other.pt")
    options = {**build_options, "weights": str(tmp_path / "other.pt"), "out": str(tmp_path / "other.h5")}
    second = str(build_cache(BuildConfig.from_options(**options)).path)
    out = tmp_path / "sweep"
    both = FitConfig.from_options(cache=[cache, second], **{**fit_options, "out": str(out)})
    with pytest.raises(ValueError, match="cache.h5 and .*other.h5 cannot be trained together: their teachers differ"):
        sweep(SweepConfig(both, students=("linear",), temperatures=(1.0, 4.0)))
    unlabelled = str(
        build_cache(
            BuildConfig.from_options(
                **{
                    **build_options,
                    "dataset": f"imagefolder:{image_folder}/train/cat",
                    "out": str(tmp_path / "unlabelled.h5"),
                    "num_classes": 3,
                }
            )
        ).path
    )
    part = FitConfig.from_options(cache=[cache, unlabelled], subset=2, **{**fit_options, "out": str(out)})
    with pytest.raises(ValueError, match="^--subset 2 keeps images per class, but part of it is unlabelled$"):
        sweep(SweepConfig(part, students=("linear",), temperatures=(1.0, 4.0)))
    one = FitConfig.from_options(cache=cache, ensemble="teacher:0", **{**fit_options, "out": str(out)})
    with pytest.raises(ValueError, match="^--ensemble teacher:0: .*cache.h5 holds one teacher's outputs$"):
        sweep(SweepConfig(one, students=("linear",), temperatures=(1.0, 4.0)))
    assert not out.exists()


def test_a_fit_into_a_sweeps_folder_is_refused(cache, fit_options, tmp_path):
    out = tmp_path / "sweep"
    base = FitConfig.from_options(cache=cache, **{**fit_options, "out": str(out), "epochs": 1})
    sweep(SweepConfig(base, students=("linear",), temperatures=(4.0,)))
    with pytest.raises(FileExistsError, match=r"sweep holds a sweep \(leaderboard.md; its runs are its sub-folders\)"):
        fit(base)
    assert sorted(p.name for p in out.iterdir()) == [
        "leaderboard.csv",
        "leaderboard.md",
        "leaderboard.png",
        "linear-kd-T4-a0.9",
    ]
