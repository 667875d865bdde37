"""Keyword-spotting CNNs over log-mel spectrograms (B, 40, 101) from `examples/speech/data.py`.

--teacher examples/speech/models.py:cnn          # six 3x3 conv layers, 16-128 channels, ~280k parameters
--student examples/speech/models.py:tiny_cnn     # three strided 3x3 conv layers, 8-24 channels, ~5k
"""

from __future__ import annotations

import torch
from torch import nn


def _conv(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class KeywordCNN(nn.Module):
    """(B, mels, frames) -> logits: an input BatchNorm learns the scale of the log energies."""

    def __init__(self, num_classes: int, layers: list[tuple[int, int]], dropout: float = 0.0):
        super().__init__()
        self.norm = nn.BatchNorm2d(1)
        blocks: list[nn.Module] = []
        cin = 1
        for width, stride in layers:
            blocks += _conv(cin, width, stride)
            cin = width
        self.body = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout))
        self.head = nn.Linear(cin, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.norm(features.unsqueeze(1))))


def cnn(num_classes: int = 10) -> KeywordCNN:
    """The teacher."""
    return KeywordCNN(num_classes, [(16, 2), (32, 1), (64, 2), (64, 1), (128, 2), (128, 1)], dropout=0.2)


def tiny_cnn(num_classes: int = 10) -> KeywordCNN:
    """The student."""
    return KeywordCNN(num_classes, [(8, 2), (16, 2), (24, 2)])
