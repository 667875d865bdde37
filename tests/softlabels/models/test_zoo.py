"""The zoo: every registered model builds and runs; CIFAR ResNets have the published shape."""

import pytest
import torch
from torch import nn

from softlabels.models import zoo


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", zoo.list_models())
@pytest.mark.parametrize("in_channels", [1, 3])
def test_every_model_maps_images_to_logits(name, in_channels):
    model = zoo.ZOO[name].factory(7, in_channels=in_channels, image_size=32).eval()
    with torch.no_grad():
        out = model(torch.randn(2, in_channels, 32, 32))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["small_cnn", "mlp", "linear"])
def test_small_models_on_mnist_shaped_input(name):
    model = zoo.ZOO[name].factory(10, in_channels=1, image_size=28)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_list_models_is_sorted_and_complete():
    names = zoo.list_models()
    assert names == sorted(names)
    expected = {f"cifar_resnet{d}" for d in (8, 14, 20, 32, 44, 56, 110)} | {"small_cnn", "mlp", "linear"}
    assert expected <= set(names)


@pytest.mark.parametrize("depth, millions", [(20, 0.27), (32, 0.46), (44, 0.66), (56, 0.85), (110, 1.73)])
def test_cifar_resnet_sizes_match_the_paper(depth, millions):
    assert count_params(zoo.cifar_resnet(depth)) / 1e6 == pytest.approx(millions, abs=0.005)


def test_cifar_resnet_uses_the_checkpoint_names_and_parameter_free_shortcuts():
    keys = set(zoo.cifar_resnet(20).state_dict())
    assert {
        "conv1.weight",
        "bn1.running_var",
        "layer2.0.conv1.weight",
        "layer3.2.bn2.bias",
        "linear.weight",
        "linear.bias",
    } <= keys
    assert not any("shortcut" in k for k in keys)
    # 19 convs, 19 BatchNorms (5 entries each), linear weight and bias
    assert len(keys) == 19 + 19 * 5 + 2


def test_option_a_shortcut_subsamples_and_pads_channels():
    x = torch.randn(1, 16, 8, 8)
    out = zoo.PadShortcut(8)(x)
    assert out.shape == (1, 32, 4, 4)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0


def test_pretrained_resnets_carry_their_preprocessing():
    pre = zoo.ZOO["cifar_resnet56"].preprocessing
    assert pre == {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "image_size": 32}
    assert zoo.ZOO["small_cnn"].preprocessing is None


def test_small_cnn_linear_size_follows_image_size():
    assert zoo.SmallCNN(10, 3, 32).classifier.in_features == 64 * 8 * 8
    assert zoo.SmallCNN(10, 1, 28).classifier.in_features == 64 * 7 * 7


def test_small_cnn_costs_about_5_6m_macs():
    model = zoo.SmallCNN(10)
    macs = []

    def hook(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            macs.append(output.numel() * module.in_channels * module.kernel_size[0] * module.kernel_size[1])
        elif isinstance(module, nn.Linear):
            macs.append(module.in_features * module.out_features)

    for m in model.modules():
        m.register_forward_hook(hook)
    model(torch.randn(1, 3, 32, 32))
    assert sum(macs) / 1e6 == pytest.approx(5.64, abs=0.05)


def test_bad_arguments_are_value_errors():
    with pytest.raises(ValueError, match="6n\\+2"):
        zoo.cifar_resnet(21)
    with pytest.raises(ValueError, match="num_classes"):
        zoo.cifar_resnet(20, num_classes=0)
    with pytest.raises(ValueError, match="image_size"):
        zoo.SmallCNN(10, image_size=2)


def test_register_model_refuses_a_taken_name():
    with pytest.raises(ValueError, match="already registered"):
        zoo.register_model("small_cnn")(zoo.small_cnn)
