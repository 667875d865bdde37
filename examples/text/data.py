"""Debian package descriptions by section as a dataset factory: `--dataset examples/text/data.py:sections`.

Each sample is a dict of int64 tensors, {"input_ids": (32,), "attention_mask": (32,)}: the
description's word pieces for all-MiniLM-L6-v2, read from ROOT/debian-sections/<split>.pt
(`--data-root ROOT`, default `data`; made by `python -m examples.text.make_data`). Batches are dicts
of (B, 32) tensors, as a Hugging Face tokenizer's would be; the teacher and the students take them
as they are. Keys are the package names.
"""

from __future__ import annotations

from pathlib import Path

import torch

FOLDER = "debian-sections"


class Sections(torch.utils.data.Dataset):
    def __init__(self, path: Path):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: make it first with `python -m examples.text.make_data --root {path.parent.parent}`"
            )
        data = torch.load(path, weights_only=True)
        self.input_ids, self.attention_mask = data["input_ids"], data["attention_mask"]
        self.targets = data["labels"].tolist()
        self.classes = list(data["classes"])
        self.keys = list(data["keys"])

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        return {"input_ids": self.input_ids[index], "attention_mask": self.attention_mask[index]}, self.targets[index]


def sections(split: str = "train", root: str = "data") -> Sections:
    return Sections(Path(root) / FOLDER / f"{split}.pt")
