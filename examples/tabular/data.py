"""scikit-learn's bundled handwritten digits as a table: `--dataset examples/tabular/data.py:digits`.

1,797 rows of 64 features (8x8 pixel counts 0..16, here divided by 16: float32 in [0, 1]) and 10
classes, shipped inside scikit-learn (`load_digits`; nothing is downloaded). A fixed stratified split
(`train_test_split(test_size=0.3, random_state=0)`): 1,257 train and 540 test rows. Samples are
float32 (64,) feature vectors, which the zoo's `linear` and `mlp` and the scikit-learn students take
as they are. Keys are the rows' indices in `load_digits` (`row-0042`). `root` is not used.
"""

from __future__ import annotations

import numpy as np
import torch

from softlabels.extras import install_hint


class Table(torch.utils.data.Dataset):
    def __init__(self, features: np.ndarray, labels: np.ndarray, rows: np.ndarray, classes: list[str]):
        self.features = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        self.targets = [int(y) for y in labels]
        self.keys = [f"row-{int(r):04d}" for r in rows]
        self.classes = classes

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        return self.features[index], self.targets[index]


def digits(split: str = "train", root: str | None = None) -> Table:
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise ImportError(
            f"the tabular example reads scikit-learn's bundled table: {install_hint('sklearn')}"
        ) from None
    if split not in ("train", "test"):
        raise ValueError(f"digits has splits train and test, not {split!r}")
    data = load_digits()
    rows = np.arange(len(data.target))
    train, test = train_test_split(rows, test_size=0.3, random_state=0, stratify=data.target)
    chosen = np.sort(train if split == "train" else test)
    return Table(data.data[chosen] / 16.0, data.target[chosen], chosen, [str(c) for c in data.target_names])
