"""Zoo names (`cifar_resnet56`, `small_cnn`, ...): the architectures of `softlabels.zoo`."""

from __future__ import annotations

from softlabels.models.base import ModelSource
from softlabels.zoo import ZOO, list_models


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
