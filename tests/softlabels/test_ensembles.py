"""Several teachers in one cache: built in one pass or joined later, mixed at train time, each checked."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import softlabels
from softlabels import store
from softlabels.build import BuildConfig, build_cache
from softlabels.cli import main
from softlabels.ensemble import Ensemble
from softlabels.models.registry import create_model


@pytest.fixture
def second_weights(tmp_path):
    torch.manual_seed(1)
    path = tmp_path / "second.pt"
    torch.save(create_model("small_cnn", 3, in_channels=3, image_size=8).state_dict(), path)
    return path


@pytest.fixture
def pair(build_options, teacher_weights, second_weights, tmp_path):
    """Two teachers on 2 flip views: one joint cache and the two single-teacher caches."""
    common = {**build_options, "views": 2, "augment": "flip"}
    joint = build_cache(
        BuildConfig.from_options(
            **{
                **common,
                "out": str(tmp_path / "joint.h5"),
                "teacher": ("small_cnn", "small_cnn"),
                "weights": (str(teacher_weights), str(second_weights)),
            }
        )
    ).path
    a = build_cache(BuildConfig.from_options(**{**common, "out": str(tmp_path / "a.h5")})).path
    b = build_cache(
        BuildConfig.from_options(**{**common, "out": str(tmp_path / "b.h5"), "weights": str(second_weights)})
    ).path
    return joint, a, b


def logits(path):
    return np.stack([store.CacheTargets(path).logits(i) for i in range(18)])


def test_one_pass_stores_each_teachers_outputs(pair):
    joint, a, b = pair
    info = store.read_info(joint)
    assert info.layout.num_teachers == 2 and info.format_version == 2
    assert info.member_names == ["small_cnn", "small_cnn#2"]
    assert info.members[1].weights_name == "second.pt" and len(info.members[1].weights_sha256) == 64
    both = logits(joint)  # (N, V, M, C)
    np.testing.assert_array_equal(both[:, :, 0], logits(a))
    np.testing.assert_array_equal(both[:, :, 1], logits(b))
    accuracies = info.member_accuracy
    assert accuracies[0] == pytest.approx(store.read_info(a).teacher_accuracy)
    assert accuracies[1] == pytest.approx(store.read_info(b).teacher_accuracy)
    softlabels.verify(joint)


def test_caches_built_separately_join_into_the_same_cache(pair, tmp_path):
    joint, a, b = pair
    result = CliRunner().invoke(main, ["merge", "--teachers", str(a), str(b), "--out", str(tmp_path / "ab.h5")])
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(logits(tmp_path / "ab.h5"), logits(joint))
    assert store.read_info(tmp_path / "ab.h5").member_names == ["small_cnn", "small_cnn#2"]


def test_joining_other_views_is_refused(pair, build_options, tmp_path):
    _, a, _ = pair
    other = build_cache(
        BuildConfig.from_options(
            **{**build_options, "views": 2, "augment": "flip", "seed": 5, "out": str(tmp_path / "seed5.h5")}
        )
    ).path
    result = CliRunner().invoke(main, ["merge", "--teachers", str(a), str(other), "--out", str(tmp_path / "x.h5")])
    assert result.exit_code == 1 and "differ in view seeds ([0, 0] vs [5, 5])" in result.output
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.parametrize("copy", [False, True])
def test_joining_a_teacher_with_itself_is_refused(pair, tmp_path, copy):
    _, a, _ = pair
    again = a
    if copy:  # the same teacher in another file
        again = tmp_path / "copy.h5"
        again.write_bytes(a.read_bytes())
    result = CliRunner().invoke(main, ["merge", "--teachers", str(a), str(again), "--out", str(tmp_path / "x.h5")])
    assert result.exit_code == 1, result.output
    assert f"{again} and {a} hold the same teacher (small_cnn with weights SHA-256" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "x.h5").exists()


def test_teachers_and_weights_pair_up(build_options, teacher_weights, tmp_path):
    with pytest.raises(ValueError, match="one --weights per --teacher, in the same order: 2 teachers, 1 weights"):
        build_cache(BuildConfig.from_options(**{**build_options, "teacher": ("small_cnn", "mlp")}))


@pytest.mark.parametrize(
    "args",
    [
        ["build", "--out", "a.h5", "--out", "b.h5"],
        ["verify", "c.h5", "--seed", "1", "--seed", "2"],
        ["info", "c.h5", "--json", "--json"],
    ],
)
def test_a_repeated_option_that_cannot_repeat_is_refused(args):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "is given 2 times but takes one value" in result.output


def test_mixing_rules():
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 3.0, 0.0]], dtype=np.float32)  # (M=2, C=3)
    names = ["a", "b"]
    for t in (1.0, 4.0):
        mixed = Ensemble.parse("mean-prob", names, t).combine(logits)
        p = np.exp(logits / t) / np.exp(logits / t).sum(-1, keepdims=True)
        q = np.exp(mixed / t) / np.exp(mixed / t).sum()
        np.testing.assert_allclose(q, p.mean(0), rtol=1e-5)
    np.testing.assert_allclose(Ensemble.parse("mean-logit", names).combine(logits), logits.mean(0))
    np.testing.assert_array_equal(Ensemble.parse("teacher:b", names).combine(logits), logits[1])
    np.testing.assert_array_equal(Ensemble.parse("teacher:0", names).combine(logits), logits[0])
    weighted = Ensemble.parse("3,1", names).combine(logits)
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(np.exp(weighted) / np.exp(weighted).sum(), 0.75 * p[0] + 0.25 * p[1], rtol=1e-5)
    with pytest.raises(ValueError, match="give 2 weights, one per teacher"):
        Ensemble.parse("1,2,3", names)
    for bad in ("nan,1", "inf,1", "1e400,1", "-1,2", "0,0"):  # a NaN weight once trained on NaN targets
        with pytest.raises(ValueError, match="weights must be finite, non-negative and not all zero"):
            Ensemble.parse(bad, names)
    with pytest.raises(ValueError, match="no such teacher; members: 0: a, 1: b"):
        Ensemble.parse("teacher:c", names)


@pytest.mark.parametrize("weights", ["nan,1", "inf,1", "1e400,1", "0,0", "1,-1", "1e308,1e308"])
def test_weights_that_cannot_mix_are_refused(weights):
    with pytest.raises(ValueError, match=r"weights must be finite, non-negative and not all zero, such as 0.7,0.3"):
        Ensemble.parse(weights, ["a", "b"])


def test_training_on_one_member_equals_training_on_its_own_cache(pair, tmp_path):
    from trainer import FitConfig, fit

    fit_options = dict(student="small_cnn", epochs=2, batch_size=4, workers=0, device="cpu", progress=False)
    joint, _, b = pair
    runs = {}
    for name, cache, ensemble in (("member", joint, "teacher:1"), ("own", b, None), ("mean", joint, "mean-prob")):
        summary = fit(
            FitConfig.from_options(
                **{**fit_options, "cache": str(cache), "ensemble": ensemble, "out": str(tmp_path / name)}
            )
        )
        runs[name] = torch.load(tmp_path / name / "last.pt", weights_only=True)["model"]
        assert summary["finished"]
    assert all(torch.equal(runs["member"][k], runs["own"][k]) for k in runs["own"])
    assert not all(torch.equal(runs["mean"][k], runs["own"][k]) for k in runs["own"])


def test_verify_recompute_checks_every_member(pair, second_weights, teacher_weights):
    joint, _, _ = pair
    result = CliRunner().invoke(main, ["verify", str(joint), "--recompute", "5", "--device", "cpu"])
    assert result.exit_code == 0 and "every teacher reproduces 5 samples" in result.output, result.output
    second_weights.write_bytes(teacher_weights.read_bytes())  # member 1's file now holds other weights
    result = CliRunner().invoke(main, ["verify", str(joint), "--recompute", "5", "--device", "cpu"])
    assert result.exit_code == 1 and "teacher small_cnn#2's logits differ" in result.output


@pytest.mark.parametrize("form", ["npz", "parquet"])
def test_exports_label_the_teacher_axis(pair, tmp_path, form):
    joint, a, b = pair
    out = tmp_path / f"joint.{form}"
    result = CliRunner().invoke(main, ["export", str(joint), "--format", form, "--out", str(out)])
    assert result.exit_code == 0, result.output
    if form == "npz":
        data = np.load(out, allow_pickle=False)
        metadata, exported = json.loads(str(data["metadata"])), data["logits"]
    else:
        pq = pytest.importorskip("pyarrow.parquet")
        metadata = json.loads(pq.read_schema(out).metadata[b"softlabels"])
        exported = np.array(pq.read_table(out).column("logits").to_pylist(), dtype=np.float32)
    assert metadata["num_teachers"] == 2 and exported.shape == (18, 2, 2, 3)
    members = metadata["teachers"]
    assert [m["name"] for m in members] == ["small_cnn", "small_cnn#2"]
    assert [m["weights_name"] for m in members] == ["teacher.pt", "second.pt"]
    for member, single in zip(members, (a, b)):  # each label names the outputs at its position
        position = [m["name"] for m in members].index(member["name"])
        np.testing.assert_array_equal(exported[:, :, position], logits(single))
        assert member["weights_sha256"] == store.read_info(single).teacher.weights_sha256
        assert member["accuracy"] == pytest.approx(store.read_info(single).teacher_accuracy)


def test_info_and_inspect_report_every_member(pair, tmp_path):
    joint, _, _ = pair
    result = CliRunner().invoke(main, ["info", str(joint)])
    assert result.exit_code == 0 and "small_cnn: small_cnn with teacher.pt" in result.output
    assert "small_cnn#2: small_cnn with second.pt" in result.output
    result = CliRunner().invoke(main, ["inspect", str(joint), "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## Teachers" in report and "| ensemble (mean-prob) |" in report and "Top-1 agreement" in report


def test_a_new_rule_is_one_class_registered_once(monkeypatch):
    """What adding a rule takes: a `Rule` subclass (its own module in the package) and one line in RULES."""
    import softlabels.ensemble as ensemble
    from softlabels.ensemble.base import Rule

    class Strongest(Rule):  # the member most confident on each view
        name = "strongest"
        form = "strongest"

        def combine(self, logits, temperature):
            best = logits.max(axis=-1).argmax(axis=-1)
            return np.take_along_axis(logits, best[..., None, None], axis=-2)[..., 0, :]

    monkeypatch.setattr(ensemble, "RULES", (*ensemble.RULES, Strongest))
    logits = np.array([[[2.0, 0.0], [0.0, 5.0]], [[4.0, 0.0], [0.0, 1.0]]], dtype=np.float32)  # (N=2, M=2, C=2)
    mixed = Ensemble.parse("strongest", ["a", "b"]).combine(logits)
    np.testing.assert_array_equal(mixed, [[0.0, 5.0], [4.0, 0.0]])
    with pytest.raises(ValueError, match="unknown --ensemble 'weakest'.*strongest"):
        Ensemble.parse("weakest", ["a", "b"])


def test_ls_names_every_teacher_of_a_joint_cache(pair):
    """`softlabels ls` once showed only member 0 of a several-teacher cache (info listed both)."""
    from softlabels.catalog import describe, list_caches

    joint, _, _ = pair
    rows, _ = list_caches(joint.parent)
    row = next(r for r in rows if r["name"] == joint.name)
    assert row["teacher"] == "small_cnn + small_cnn" and row["weights"] is None
    assert [m["spec"] for m in describe(joint)["teachers"]] == ["small_cnn", "small_cnn"]
    single = next(r for r in rows if r["name"] == "a.h5")
    assert single["teacher"] == "small_cnn" and single["weights"] == "teacher.pt"
