"""Zoo names (`cifar_resnet56`, `small_cnn`, ...): the built-in architectures, the registry that
names them (`register_model`, `ZOO`, `list_models`) and the model source that claims them (`ZooSource`).

Every factory has the signature `factory(num_classes, in_channels=3, image_size=32) -> nn.Module`
and ignores what does not apply to it, so teachers and students are created the same way.
The CIFAR ResNets reproduce He et al. 2016, section 4.2, with the parameter names of the public
checkpoints in shared/teachers (see its README), which therefore load without renaming.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from softlabels.models.base import ModelSource
from softlabels.models.preprocessing import IMAGENET_MEAN, IMAGENET_STD

Factory = Callable[..., nn.Module]

# The statistics the public CIFAR ResNet checkpoints were trained with (shared/teachers/README.md).
CIFAR_RESNET_PREPROCESSING = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "image_size": 32}
CIFAR_RESNET_DEPTHS = (8, 14, 20, 32, 44, 56, 110)
PRETRAINED_DEPTHS = (20, 32, 44, 56, 110)


@dataclass(frozen=True)
class ZooEntry:
    """A named factory plus the input preprocessing its published weights expect (or None)."""

    name: str
    factory: Factory
    preprocessing: dict | None = None


ZOO: dict[str, ZooEntry] = {}


def register_model(name: str, preprocessing: dict | None = None) -> Callable[[Factory], Factory]:
    """Decorator that adds a factory to `ZOO` under `name`."""

    def decorate(factory: Factory) -> Factory:
        if name in ZOO:
            raise ValueError(f"model name {name!r} is already registered")
        ZOO[name] = ZooEntry(name, factory, preprocessing)
        return factory

    return decorate


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(ZOO)


def _check_positive(**values: int) -> None:
    for key, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")


# --- CIFAR ResNet (He et al. 2016, option-A shortcuts) ---------------------------------------


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample by 2 and zero-pad channels; it has no parameters."""

    def __init__(self, pad: int):
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        reshapes = stride != 1 or in_planes != planes
        self.shortcut = PadShortcut(planes // 4) if reshapes else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 images: widths 16/32/64, global average pooling, `linear` head."""

    def __init__(self, blocks_per_stage: int, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, blocks_per_stage, stride=1)
        self.layer2 = self._stage(16, 32, blocks_per_stage, stride=2)
        self.layer3 = self._stage(32, 64, blocks_per_stage, stride=2)
        self.linear = nn.Linear(64, num_classes)
        self._init_weights()

    @staticmethod
    def _stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(in_planes, planes, stride)]
        layers += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        # Kaiming for the ReLU convolutions; BatchNorm and the linear head keep PyTorch's defaults.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def cifar_resnet(depth: int, num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """CIFAR ResNet of the given depth (6n+2: 8, 14, 20, 32, 44, 56, 110, ...)."""
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (e.g. 20, 56), got {depth!r}")
    _check_positive(num_classes=num_classes, in_channels=in_channels)
    return CifarResNet((depth - 2) // 6, num_classes, in_channels)


def _register_cifar_resnet(depth: int) -> None:
    def factory(num_classes: int, in_channels: int = 3, image_size: int = 32) -> nn.Module:
        return cifar_resnet(depth, num_classes, in_channels)

    factory.__name__ = factory.__qualname__ = f"cifar_resnet{depth}"
    factory.__doc__ = f"CIFAR ResNet-{depth} (option-A shortcuts); image_size is free (global pooling)."
    preprocessing = dict(CIFAR_RESNET_PREPROCESSING) if depth in PRETRAINED_DEPTHS else None
    register_model(f"cifar_resnet{depth}", preprocessing)(factory)


for _depth in CIFAR_RESNET_DEPTHS:
    _register_cifar_resnet(_depth)


# --- Small baselines ------------------------------------------------------------------------


class SmallCNN(nn.Module):
    """Two conv3x3-ReLU-maxpool2 stages (32, 64 channels), then one linear layer (~5.6M MACs at 32x32x3)."""

    def __init__(self, num_classes: int, in_channels: int = 3, image_size: int = 32):
        super().__init__()
        _check_positive(num_classes=num_classes, in_channels=in_channels, image_size=image_size)
        if image_size < 4:
            raise ValueError(f"small_cnn needs image_size >= 4 (two 2x2 poolings), got {image_size}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        side = image_size // 2 // 2
        self.classifier = nn.Linear(64 * side * side, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class MLP(nn.Module):
    """Flatten, two hidden layers of 512 units with ReLU, linear output; no dropout."""

    def __init__(self, num_classes: int, in_channels: int = 3, image_size: int = 32, hidden: int = 512):
        super().__init__()
        _check_positive(num_classes=num_classes, in_channels=in_channels, image_size=image_size)
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_channels * image_size * image_size, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register_model("small_cnn")
def small_cnn(num_classes: int, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    return SmallCNN(num_classes, in_channels, image_size)


@register_model("mlp")
def mlp(num_classes: int, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    return MLP(num_classes, in_channels, image_size)


@register_model("linear")
def linear(num_classes: int, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    """Logistic regression on raw pixels: flatten, then one nn.Linear."""
    _check_positive(num_classes=num_classes, in_channels=in_channels, image_size=image_size)
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size * image_size, num_classes))


# --- the source of zoo specs --------------------------------------------------------------------


class ZooSource(ModelSource):
    name = "zoo"
    form = "a zoo name"

    def claims(self, spec):
        return spec in ZOO

    def create(self, spec, num_classes, in_channels, image_size):
        return ZOO[spec].factory(num_classes, in_channels=in_channels, image_size=image_size)

    def declared_input(self, spec, weights, channels):
        """The published checkpoints' statistics, for data with their channel count."""
        declared = ZOO[spec].preprocessing
        return None if declared is None or len(declared["mean"]) != channels else dict(declared)

    def names(self):
        return list_models()
