"""The invariant matrix's world: tiny data of every sample kind, teachers for each, the build
options of a cache of each kind (a build takes tens of milliseconds on 18 samples), and `pairwise`,
which picks the matrix's cells.

Sample kinds: `rgb` and `grey` image folders (8x8 PNGs), `tensor` (12 float64 features) and `dict`
(token ids with a mask) from a FILE.py:FUNC dataset; each also has 6 other samples without labels
(a flat folder, a factory of bare samples), cached by the same teachers (`Kind.bare`), for the cells
that train a labelled and an unlabelled cache together. Augment kinds: the built-ins, a user `Augment`
subclass (`user`), a user torchvision v2 pipeline (`v2`) and the mixed `cifar+mixup` / `cifar+cutmix`.
"""

from __future__ import annotations

import itertools
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from softlabels.models.registry import create_model

CLASSES = ("cat", "dog", "frog")
SAMPLES = ("rgb", "grey", "tensor", "dict")
IMAGE_AUGMENTS = ("none", "flip", "cifar", "imagenet", "user", "v2", "cifar+mixup", "cifar+cutmix")
STORAGES = ("logits", "topk", "quant8")

DATA = '''
import numpy as np
import torch


class Features(torch.utils.data.Dataset):
    """12 float64 features: no image, no [0, 1] range (rounding anywhere would show)."""
    classes = ["cat", "dog", "frog"]

    def __init__(self, split):
        rng = np.random.default_rng(0 if split == "train" else 1)
        self.x = rng.normal(size=(18, 12)) * 10 + 1 / 3
        self.targets = [i % 3 for i in range(18)]
        self.keys = [f"{split}-{i:02d}" for i in range(18)]

    def __len__(self):
        return 18

    def __getitem__(self, i):
        return self.x[i], self.targets[i]


class Tokens(torch.utils.data.Dataset):
    classes = ["cat", "dog", "frog"]

    def __init__(self, split):
        rng = np.random.default_rng(2 if split == "train" else 3)
        self.ids = torch.from_numpy(rng.integers(1, 50, (18, 7)))
        self.mask = (torch.arange(7)[None] < torch.from_numpy(rng.integers(3, 8, (18, 1)))).long()
        self.targets = [i % 3 for i in range(18)]

    def __len__(self):
        return 18

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": self.mask[i]}, self.targets[i]


class Bare(torch.utils.data.Dataset):
    """The first 6 samples of a dataset without their labels: an unlabelled dataset (no `targets`)."""

    def __init__(self, labelled, prefix):
        self.labelled, self.keys = labelled, [f"{prefix}-{i:02d}" for i in range(6)]

    def __len__(self):
        return 6

    def __getitem__(self, i):
        return self.labelled[i][0]


def features(split="train", root=None):
    return Features(split)


def tokens(split="train", root=None):
    return Tokens(split)


def features_bare(split="train", root=None):
    return Bare(Features("test"), "bare")


def tokens_bare(split="train", root=None):
    return Bare(Tokens("test"), "bare")
'''

MODELS = '''
import torch
from torch import nn


class Bag(nn.Module):
    """Mean of token embeddings over the mask: a dict-taking model."""

    def __init__(self, num_classes):
        super().__init__()
        self.embed = nn.Embedding(50, 8)
        self.head = nn.Linear(8, num_classes)

    def forward(self, batch):
        mask = batch["attention_mask"].unsqueeze(-1).float()
        return self.head((self.embed(batch["input_ids"]) * mask).sum(1) / mask.sum(1))


def bag(num_classes):
    return Bag(num_classes)


def mlp(num_classes):
    return nn.Sequential(nn.Linear(12, 16, dtype=torch.float64), nn.Tanh(), nn.Linear(16, num_classes,
                         dtype=torch.float64))
'''

AUGMENTS = '''
import torch
from torchvision.transforms import v2
from softlabels.views import Augment


class Shade(Augment):
    """Darken by a float factor, flip by an int: a user's own replayable augmentation."""
    name = "shade"
    param_names = ("factor", "flip")
    param_dtypes = ("float32", "int32")

    def sample(self, rng, height, width, image_size):
        return rng.uniform(0.3, 1.0), rng.integers(0, 2)

    def apply(self, x, params, image_size):
        factor, flip = params
        x = x * torch.tensor(factor, dtype=torch.float32)
        return x.flip(-1) if flip else x


def strong():
    return v2.Compose([v2.RandomResizedCrop(8, scale=(0.3, 1.0), antialias=True), v2.ColorJitter(0.4, 0.4, 0.4),
                       v2.RandomErasing(p=0.5, value=0)])
'''


@dataclass(frozen=True)
class World:
    """Paths of the session's data, teachers and user files."""

    root: Path

    def dataset(self, sample: str, labelled: bool = True) -> str:
        """The labelled dataset of a sample kind, or (`labelled` False) 6 other samples without labels."""
        if sample in ("rgb", "grey"):
            return f"imagefolder:{self.root / sample}" if labelled else f"imagefolder:{self.root / sample}-bare"
        name = "features" if sample == "tensor" else "tokens"
        return f"{self.root / 'data.py'}:{name}{'' if labelled else '_bare'}"

    def teachers(self, sample: str, count: int = 1) -> list[tuple[str, str]]:
        """(spec, weights) of `count` different teachers for this sample kind."""
        spec = {"tensor": f"{self.root / 'models.py'}:mlp", "dict": f"{self.root / 'models.py'}:bag"}
        return [(spec.get(sample, "small_cnn"), str(self.root / f"teacher-{sample}-{i}.pt")) for i in range(count)]

    def augment(self, kind: str) -> str:
        return {"user": f"{self.root / 'augments.py'}:Shade", "v2": f"{self.root / 'augments.py'}:strong"}.get(
            kind, kind
        )


def _images(folder: Path, grey: bool) -> None:
    rng = np.random.default_rng(1 if grey else 0)
    for split, count in (("train", (7, 5, 6)), ("test", (3, 2, 3)), ("bare", (2, 2, 2))):
        for label, (name, many) in enumerate(zip(CLASSES, count)):
            where = folder.with_name(f"{folder.name}-bare") if split == "bare" else folder / split / name
            where.mkdir(parents=True, exist_ok=True)
            for i in range(many):
                pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                pixels[..., label] = np.clip(pixels[..., label].astype(int) + 90, 0, 255)
                image = Image.fromarray(pixels)
                file = f"{label}{i:03d}.png" if split == "bare" else f"{i:04d}.png"  # bare: no class folder
                (image.convert("L") if grey else image).save(where / file)


def _teachers(world: World) -> None:
    for sample in SAMPLES:
        for i, (spec, weights) in enumerate(world.teachers(sample, 2)):
            torch.manual_seed(100 + i)
            if spec == "small_cnn":
                model = create_model(spec, num_classes=3, in_channels=1 if sample == "grey" else 3, image_size=8)
            else:
                model = create_model(spec, 3)
            torch.save(model.state_dict(), weights)


def make_world(root: Path) -> World:
    """The data, teachers and user files under `root`."""
    _images(root / "rgb", grey=False)
    _images(root / "grey", grey=True)
    for name, text in (("data.py", DATA), ("models.py", MODELS), ("augments.py", AUGMENTS)):
        (root / name).write_text(textwrap.dedent(text))
    made = World(root)
    _teachers(made)
    return made


@dataclass(frozen=True)
class Kind:
    """One cache's point on the build axes."""

    sample: str = "rgb"
    augment: str = "none"
    storage: str = "logits"
    teachers: int = 1
    targets: str = "logits"  # `--targets`: logits, embedding or logits,embedding
    labelled: bool = True  # False: 6 other samples without labels, targets of the same teachers

    @property
    def views(self) -> int:
        return 1 if self.augment == "none" else 2

    @property
    def name(self) -> str:
        targets = "" if self.targets == "logits" else "-" + self.targets.replace(",", "_")
        bare = "" if self.labelled else "-bare"
        return f"{self.sample}-{self.augment.replace('+', '_')}-{self.storage}-t{self.teachers}{targets}{bare}"

    @property
    def bare(self) -> Kind:
        """The unlabelled cache that trains beside this one (`trainer fit --cache L --cache U`)."""
        return Kind(self.sample, self.augment, self.storage, self.teachers, self.targets, labelled=False)


def build_options(world: World, kind: Kind, out: Path) -> dict:
    """The build of `kind`: float32 targets (so recomputations compare closely), top-2 for top-k."""
    members = world.teachers(kind.sample, kind.teachers)
    return dict(
        dataset=world.dataset(kind.sample, kind.labelled),
        targets=kind.targets,
        embedding_dtype="float16" if kind.targets == "logits" else "float32",  # float32: compared closely
        teacher=tuple(spec for spec, _ in members),
        weights=tuple(weights for _, weights in members),
        num_classes=3,
        out=str(out),
        views=kind.views,
        augment=world.augment(kind.augment),
        seed=5,
        storage=kind.storage,
        topk=2 if kind.storage == "topk" else None,
        dtype="float32",
        batch_size=5,
        workers=0,
        device="cpu",
        progress=False,
    )


def pairwise(axes: dict[str, tuple], allowed=lambda cell: True) -> list[dict]:
    """Cells (one value per axis) covering every allowed pair of values of two axes at least once.

    Greedy: from the full product (minus cells `allowed` refuses), take the cell covering the most
    pairs not yet covered, until none is left. Deterministic: ties go to the first cell in product order.
    """
    names = list(axes)
    cells = [dict(zip(names, values)) for values in itertools.product(*axes.values())]
    cells = [cell for cell in cells if allowed(cell)]

    def pairs(cell: dict) -> set:
        return {(a, cell[a], b, cell[b]) for i, a in enumerate(names) for b in names[i + 1 :]}

    uncovered = set().union(*(pairs(cell) for cell in cells))
    chosen = []
    while uncovered:
        best = max(cells, key=lambda cell: len(pairs(cell) & uncovered))
        chosen.append(best)
        uncovered -= pairs(best)
    return chosen
