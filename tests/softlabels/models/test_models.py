"""Model sources: timm and torchvision teachers see exactly their own published eval transform."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from softlabels import store
from softlabels.build import BuildConfig, TeacherInputs, build_cache
from softlabels.cli import main
from softlabels.data import open_dataset
from softlabels.extras import install_hint
from softlabels.models.inputs import resolve_input
from softlabels.models.preprocessing import Preprocessing
from softlabels.models.registry import create_model, declared_input, source_for
from softlabels.models.teachers import load_teacher
from softlabels.views import Normalize, ViewPipeline

timm = pytest.importorskip("timm")  # the test extra installs it; CI runs these
SIZES = [(200, 150), (90, 160), (170, 170), (300, 120), (64, 48)]  # width x height: landscape, portrait, ...
DATA = Preprocessing((0.5,) * 3, (0.25,) * 3, 32)


@pytest.fixture
def odd_images(tmp_path):
    """An image folder of several sizes and aspect ratios, JPEG and PNG."""
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        folder = tmp_path / "odd" / "train" / name
        folder.mkdir(parents=True)
        for i, (w, h) in enumerate(SIZES):
            pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.{'jpg' if i % 2 else 'png'}", quality=90)
    return tmp_path / "odd"


def timm_reference(name):
    from timm.data import create_transform, resolve_data_config

    model = timm.create_model(name, num_classes=2).eval()
    return model, create_transform(**resolve_data_config({}, model=model))


@pytest.mark.parametrize("name", ["resnet18", "test_vit", "test_resnet"])
def test_the_pipeline_reproduces_timms_eval_transform(name):
    from timm.data import create_transform, resolve_data_config

    prep = resolve_input(f"timm:{name}", DATA)
    reference = create_transform(**resolve_data_config({}, model=timm.create_model(name, pretrained=False)))
    pipeline = ViewPipeline(prep)
    for w, h in SIZES:
        image = Image.fromarray(np.random.default_rng(w).integers(0, 256, (h, w, 3), dtype=np.uint8))
        ours = Normalize(prep)(pipeline.view(pipeline.decode(image), ())[None])[0]
        torch.testing.assert_close(ours, reference(image), rtol=0, atol=1e-6)


def test_the_pipeline_reproduces_torchvisions_weights_transforms():
    import torchvision

    for spec, weights in (
        ("torchvision:resnet18", "DEFAULT"),
        ("torchvision:resnet50", "IMAGENET1K_V2"),
        ("torchvision:vit_b_16", "IMAGENET1K_V1"),
    ):
        assert source_for(spec).named_weights(spec, weights)
        prep = resolve_input(spec, DATA, weights=weights)
        name = spec.split(":")[1]
        reference = torchvision.models.get_model_weights(name)[weights].transforms()
        pipeline = ViewPipeline(prep)
        for w, h in SIZES:
            image = Image.fromarray(np.random.default_rng(h).integers(0, 256, (h, w, 3), dtype=np.uint8))
            ours = Normalize(prep)(pipeline.view(pipeline.decode(image), ())[None])[0]
            torch.testing.assert_close(ours, reference(image), rtol=0, atol=1e-6)


def test_a_timm_teacher_is_built_on_exactly_its_eval_transform(odd_images, tmp_path):
    """The fidelity proof: the build's input equals timm's transform, the cache equals m(that input)."""
    model, reference = timm_reference("test_resnet")
    torch.save(model.state_dict(), tmp_path / "test_resnet.pt")
    options = dict(
        dataset=f"imagefolder:{odd_images}",
        teacher="timm:test_resnet",
        weights=str(tmp_path / "test_resnet.pt"),
        out=str(tmp_path / "timm.h5"),
        workers=0,
        batch_size=4,
        device="cpu",
        progress=False,
    )
    result = build_cache(BuildConfig.from_options(**options))
    info = store.read_info(result.path)
    prep = info.input
    assert (prep.image_size, prep.resize, prep.interpolation, prep.mean) == (160, 168, "bilinear", (0.5, 0.5, 0.5))
    source = open_dataset(f"imagefolder:{odd_images}")
    inputs = TeacherInputs(source, ViewPipeline(prep), 1, 0)
    targets = store.CacheTargets(result.path)
    for index in range(len(source)):
        with Image.open(odd_images / "train" / source.keys[index]) as image:
            expected = reference(image.convert("RGB"))
        ours = Normalize(prep)(inputs[index][1])[0]
        torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)
        with torch.inference_mode():
            logits = model(expected[None])[0].numpy()
        np.testing.assert_allclose(targets.logits(index, 0), logits, rtol=2e-3, atol=2e-3)  # float16 storage


def test_a_torchvision_teacher_from_a_local_file_uses_its_published_transform(odd_images, tmp_path):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.get_model("resnet18", num_classes=2).eval()
    torch.save(model.state_dict(), tmp_path / "r18.pt")
    out = tmp_path / "tv.h5"
    result = CliRunner().invoke(
        main,
        [
            "build",
            "--dataset",
            f"imagefolder:{odd_images}",
            "--teacher",
            "torchvision:resnet18",
            "--weights",
            str(tmp_path / "r18.pt"),
            "--workers",
            "0",
            "--batch-size",
            "5",
            "--device",
            "cpu",
            "--dtype",
            "float32",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    prep = store.read_info(out).input
    assert (prep.image_size, prep.resize, prep.interpolation) == (224, 256, "bilinear")
    reference = torchvision.models.ResNet18_Weights.DEFAULT.transforms()
    source = open_dataset(f"imagefolder:{odd_images}")
    with Image.open(odd_images / "train" / source.keys[3]) as image, torch.inference_mode():
        expected = model(reference(image.convert("RGB"))[None])[0].numpy()
    np.testing.assert_allclose(store.CacheTargets(out).logits(3, 0), expected, rtol=1e-4, atol=1e-4)


def test_timm_specs_errors_and_classifier_sizes(tmp_path):
    with pytest.raises(ValueError, match="unknown timm model 'resnet19'; did you mean resnet18"):
        create_model("timm:resnet19", 10)
    assert declared_input("timm:test_resnet")["resize"] == 168
    model = create_model("timm:test_resnet", 1000)
    torch.save(model.state_dict(), tmp_path / "in1k.pt")
    with pytest.raises(ValueError, match="classifier .* has 1000 classes but the model 10: pass --num-classes 1000"):
        load_teacher("timm:test_resnet", weights=tmp_path / "in1k.pt", num_classes=10)
    teacher = load_teacher("timm:test_resnet", weights=tmp_path / "in1k.pt")  # no count given: timm's 1000
    assert teacher.model(torch.zeros(1, 3, 160, 160)).shape == (1, 1000)


def test_a_missing_timm_says_how_to_install_it(tmp_path, image_folder):
    code = (
        "import sys; sys.modules['timm'] = None\n"
        "from softlabels.cli import main\n"
        f"main(['build', '--dataset', 'imagefolder:{image_folder}', '--teacher', 'timm:resnet18', "
        f"'--workers', '0', '--out', '{tmp_path / 'c.h5'}'])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert install_hint("timm") in done.stderr


@pytest.fixture
def encoder_options(image_folder, tmp_path):
    """A timm classifier's weights saved here (no download) and a build of it at 32 px."""
    torch.manual_seed(0)
    classifier = timm.create_model("test_resnet", pretrained=False, num_classes=3).eval()
    torch.save(classifier.state_dict(), tmp_path / "classifier.pt")
    encoder = timm.create_model("test_resnet", pretrained=False, num_classes=0).eval()
    encoder.load_state_dict({k: v for k, v in classifier.state_dict().items() if not k.startswith("fc.")})
    torch.save(encoder.state_dict(), tmp_path / "encoder.pt")
    return classifier, dict(
        dataset=f"imagefolder:{image_folder}",
        teacher="timm:test_resnet",
        num_classes=0,
        targets="embedding",
        embedding_dtype="float32",
        image_size=32,
        dtype="float32",
        workers=0,
        batch_size=4,
        device="cpu",
        progress=False,
    )


@pytest.mark.parametrize("weights", ["encoder.pt", "classifier.pt"])
def test_a_timm_encoder_without_classes_builds_an_embedding_cache(encoder_options, tmp_path, weights):
    """`--num-classes 0`: timm's num_classes=0 model, from its own weights or a classifier's less the
    classifier; the stored embedding is the encoder's output, which is the classifier's pre-logits."""
    classifier, options = encoder_options
    out = tmp_path / f"enc-{weights}.h5"
    path = build_cache(BuildConfig.from_options(**options, weights=str(tmp_path / weights), out=str(out))).path
    info = store.read_info(path)
    assert info.layout.targets == ("embedding",) and info.layout.embedding_dim == 96
    assert info.teacher.num_classes == 0 and info.teacher.to_dict()["num_classes"] == 0
    source = open_dataset(options["dataset"])
    inputs = TeacherInputs(source, ViewPipeline(info.input), 1, 0)
    batch = torch.stack([Normalize(info.input)(inputs[i][1])[0] for i in range(3)])
    with torch.inference_mode():
        expected = classifier.forward_head(classifier.forward_features(batch), pre_logits=True)
    targets = store.CacheTargets(path)
    stored = np.stack([targets.embeddings(i, 0) for i in range(3)])
    np.testing.assert_allclose(stored, expected.numpy(), rtol=1e-4, atol=1e-5)
    result = CliRunner().invoke(main, ["verify", str(path), "--recompute", "4", "--device", "cpu"])
    assert result.exit_code == 0, result.output


def test_an_encoder_given_logits_is_refused_in_one_line(encoder_options, tmp_path):
    _, options = encoder_options
    args = ["build", "--dataset", options["dataset"], "--teacher", "timm:test_resnet", "--num-classes", "0"]
    args += ["--weights", str(tmp_path / "encoder.pt"), "--out", str(tmp_path / "x.h5"), "--workers", "0"]
    for targets in ([], ["--targets", "logits,embedding"]):
        result = CliRunner().invoke(main, [*args, *targets])
        lines = result.output.strip().splitlines()
        assert result.exit_code == 1 and len(lines) == 1, result.output
        assert "--num-classes 0 builds the teacher as an encoder" in lines[0] and "--targets embedding" in lines[0]
    assert not (tmp_path / "x.h5").exists()


def test_num_classes_0_is_refused_where_a_source_builds_no_encoders(build_options, tmp_path):
    options = {**build_options, "num_classes": 0, "targets": "embedding", "out": str(tmp_path / "x.h5")}
    with pytest.raises(ValueError, match="--num-classes 0 asks small_cnn for an encoder .* only timm:NAME"):
        build_cache(BuildConfig.from_options(**options))
