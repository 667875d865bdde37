"""Embedding targets: what `--targets embedding` stores, how it reads back, and what it refuses."""

import json
import textwrap

import h5py
import numpy as np
import pytest
import torch

from softlabels import open_cache, store
from softlabels.audit import recompute
from softlabels.build import BuildConfig, build_cache
from softlabels.build.shards import merge_teachers, merge_views
from softlabels.data import open_dataset
from softlabels.export import export_arrays
from softlabels.models.features import penultimate_features, pool
from softlabels.models.teachers import load_teacher
from softlabels.report.inspect import compute_report
from softlabels.store.embedding import EmbeddingCodec, cosine, parse_targets


def build(options, tmp_path, name, **changes):
    return build_cache(BuildConfig.from_options(**{**options, "out": str(tmp_path / name), **changes})).path


@pytest.fixture
def flip_options(build_options):
    return {**build_options, "views": 2, "augment": "flip"}


def hooked_features(model, batch, layer=None):
    """An independent forward hook: the input of `linear` (or the output of `layer`), pooled."""
    seen = {}
    module = dict(model.named_modules())[layer] if layer else model.classifier

    def keep(_module, inputs, out):  # returns None: a hook's value would replace the module's output
        seen["x"] = out.clone() if layer else inputs[0]  # a copy: the in-place ReLU that follows changes it

    handle = module.register_forward_hook(keep)
    with torch.inference_mode():
        model(batch)
    handle.remove()
    return pool(seen["x"]).numpy()


@pytest.mark.parametrize("layer", [None, "features.3"])
def test_stored_embeddings_equal_a_forward_hook_on_the_replayed_views(
    flip_options, tmp_path, image_folder, teacher_weights, layer
):
    extra = {"embedding_layer": layer} if layer else {}
    path = build(
        flip_options, tmp_path, "emb.h5", targets="logits,embedding", embedding_dtype="float32", amp=False, **extra
    )
    teacher = load_teacher("small_cnn", weights=str(teacher_weights), num_classes=3, image_size=8).model.eval()
    source = open_dataset(f"imagefolder:{image_folder}")
    with open_cache(path) as cache:
        for view in range(2):
            images = torch.stack([cache.replay(source, i, view, normalize=True)[0] for i in range(len(cache))])
            expected = hooked_features(teacher, images, layer)
            np.testing.assert_allclose(cache.embeddings(list(range(len(cache))), view), expected, rtol=1e-4, atol=1e-5)
        assert cache.embedding_dim == expected.shape[1]
        assert cache.embeddings(0, view=None).shape == (2, expected.shape[1])
        assert cache.logits(0).shape == (3,)  # the logits are still there
    store.verify(path)


def test_a_default_build_writes_logits_as_before(build_options, tmp_path):
    path = build(build_options, tmp_path, "plain.h5")
    with h5py.File(path) as f:
        assert "embeddings" not in f and not {"targets", "embedding_dim", "embedding_dtype"} & set(f.attrs)
        assert f.attrs["format_version"] == 1
        assert "targets" not in f.attrs["build"]
    assert store.read_info(path).layout.targets == ("logits",)


def test_embeddings_alone_store_no_logits_and_int8_keeps_the_direction(build_options, tmp_path):
    exact = build(build_options, tmp_path, "f32.h5", targets="embedding", embedding_dtype="float32")
    compact = build(build_options, tmp_path, "int8.h5", targets="embedding", embedding_dtype="int8")
    with h5py.File(compact) as f:
        assert "logits" not in f and f["embeddings/values"].dtype == np.int8
        assert f.attrs["format_version"] == 3  # older readers cannot check checksums that cover embeddings
        assert f["embeddings/scale"].shape == (18, 1)
    info = store.read_info(compact)
    assert info.teacher_accuracy is None
    assert info.layout.bytes_per_view == info.layout.embedding_dim + 4
    with open_cache(exact) as a, open_cache(compact) as b:
        ours, theirs = a.embeddings(list(range(18))), b.embeddings(list(range(18)))
        assert cosine(ours, theirs).min() > 0.999
        with pytest.raises(ValueError, match="stores embeddings, no logits"):
            a.logits(0)


def test_checksums_cover_the_embeddings(build_options, tmp_path, flip_row_byte):
    path = build(build_options, tmp_path, "emb.h5", targets="embedding")
    flip_row_byte(path, "embeddings/values", 3, 1)
    with pytest.raises(store.CacheError, match="checksum mismatch in block 0"):
        store.verify(path)


def test_an_encoder_builds_embeddings_and_is_refused_logits(build_options, tmp_path):
    model_file = tmp_path / "encoder.py"
    model_file.write_text(
        textwrap.dedent("""
        import torch
        from torch import nn
        class Encoder(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 5, 3)
            def forward(self, x):
                return nn.functional.normalize(self.conv(x).mean((2, 3)), dim=1)
        def encoder(num_classes):
            return Encoder()
    """)
    )
    options = {**build_options, "teacher": f"{model_file}:encoder", "weights": None}
    with pytest.raises(ValueError, match="is an encoder.*--targets embedding"):
        build(options, tmp_path, "logits.h5")
    path = build(options, tmp_path, "enc.h5", targets="embedding")
    with open_cache(path) as cache:
        assert cache.embeddings(0).shape == (5,)
        assert np.linalg.norm(cache.embeddings(0)) == pytest.approx(1, abs=1e-3)
    assert recompute(path, 4, show_progress=False).ok


def test_an_unknown_layer_is_refused_with_the_near_names(build_options, tmp_path):
    with pytest.raises(ValueError, match=r"no module of that name; nearest: features\.3"):
        build(build_options, tmp_path, "x.h5", targets="embedding", embedding_layer="feature.3")
    with pytest.raises(ValueError, match="need --targets embedding"):
        build(build_options, tmp_path, "x.h5", embedding_layer="features.3")
    with pytest.raises(ValueError, match="unknown target kind 'probs'"):
        build(build_options, tmp_path, "x.h5", targets="logits,probs")


def test_merge_refuses_another_embedding_width(flip_options, tmp_path):
    a = build(flip_options, tmp_path, "a.h5", targets="embedding", seed=0)
    b = build(flip_options, tmp_path, "b.h5", targets="embedding", seed=0, embedding_layer="features.3")
    why = r"a.h5 and b.h5 differ in layout.embedding_dim \(256 vs 64\): they store their targets differently"
    with pytest.raises(ValueError, match=why):
        merge_teachers([a, b], tmp_path / "ab.h5", progress=False)
    c = build(flip_options, tmp_path, "c.h5", targets="embedding", seed=1)
    merged = merge_views([a, c], tmp_path / "ac.h5", progress=False)
    with open_cache(merged) as m, open_cache(a) as first, open_cache(c) as second:
        np.testing.assert_array_equal(
            m.embeddings(3, None), np.concatenate([first.embeddings(3, None), second.embeddings(3, None)])
        )


def test_recompute_and_export_cover_embeddings(flip_options, tmp_path):
    path = build(flip_options, tmp_path, "emb.h5", targets="logits,embedding", embedding_dtype="int8")
    assert recompute(path, 5, show_progress=False).ok
    arrays = export_arrays(path, store.read_info(path))
    assert arrays["embeddings"].shape == (18, 2, 256) and arrays["logits"].shape == (18, 2, 3)
    with open_cache(path) as cache:
        np.testing.assert_array_equal(arrays["embeddings"][4, 1], cache.embeddings(4, 1))


def test_codec_round_trips_and_parses_kinds():
    features = torch.randn(4, 3, 64)
    for dtype in ("float16", "float32", "int8"):
        codec = EmbeddingCodec(64, dtype)
        back = codec.decode(codec.encode(features))
        assert back.shape == (4, 3, 64) and cosine(back, features.numpy()).min() > 0.999
    assert parse_targets("embedding,logits") == ("logits", "embedding")


def test_penultimate_features_of_a_classifier_and_an_encoder():
    from softlabels.models.registry import create_model

    model = create_model("small_cnn", num_classes=3, in_channels=3, image_size=8)
    logits, features = penultimate_features(model, torch.randn(2, 3, 8, 8))
    assert logits.shape == (2, 3) and features.shape == (2, 256)
    encoder = torch.nn.Conv2d(3, 4, 3)
    logits, features = penultimate_features(encoder, torch.randn(2, 3, 8, 8))
    assert logits is None and features.shape == (2, 4)


@pytest.mark.parametrize("targets", ["embedding", "logits,embedding"])
def test_inspect_reports_the_stored_embeddings_with_the_trainers_probes(build_options, tmp_path, targets):
    """Dimension, norms, a PCA picture, and k-NN / linear-probe accuracy from softlabels.probes (the
    trainer's --probe code) on the stored embeddings of view 0."""
    from click.testing import CliRunner

    from softlabels.cli import main
    from softlabels.probes import PROBES, probe_accuracy

    path = build(build_options, tmp_path, "e.h5", targets=targets, embedding_dtype="float32")
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["inspect", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    embedding = report["embedding"]
    stored = store.CacheTargets(path)
    x = np.stack([stored.embeddings(i, 0) for i in range(18)])
    assert embedding["dimension"] == x.shape[1] == 256 and embedding["samples"] == 18
    assert embedding["norm"]["mean"] == pytest.approx(float(np.linalg.norm(x, axis=1).mean()), rel=1e-5)
    labels = open_dataset(build_options["dataset"]).labels
    expected = probe_accuracy(x, labels, PROBES, 3)
    assert {k: embedding[k] for k in expected} == pytest.approx(expected)
    assert len(embedding["pca"]["points"]) == 18 and embedding["pca"]["labels"] == labels.tolist()
    assert "embedding.png" in report["plots"] and (out / "embedding.png").stat().st_size > 0
    markdown = (out / "report.md").read_text()
    assert "k-NN probe (stored embeddings, view 0)" in markdown and "embedding.png" in markdown
    assert f"embedding probe_knn {expected['probe_knn']:.2%}" in result.output
    assert ("accuracy" in report) == ("logits" in targets)  # with logits the teacher is scored as well


def test_inspect_names_the_teacher_whose_embeddings_it_scores(build_options, teacher_weights, tmp_path):
    path = build(
        build_options,
        tmp_path,
        "two.h5",
        targets="logits,embedding",
        teacher=("small_cnn", "small_cnn"),
        weights=(str(teacher_weights), str(teacher_weights)),
    )
    report = compute_report(path)[0]
    assert report["embedding"]["features"] == "stored embeddings of small_cnn, teacher 0 of 2, view 0"
