"""Data sources: dataset specs -> samples with stable keys, labels and content digests.

- `sources`: the contract (`DatasetSource`, `Reader`), decoding images, sample digests;
- `specs`: `open_dataset` and `eval_spec_for`, which source a spec names;
- `builtin` (torchvision's CIFAR and MNIST families), `folders` (`imagefolder:PATH`), `factories`
  (`FILE.py:FUNC`, images or tensor samples): one module per kind of source;
- `sample_errors`: `SampleError`, one bad sample named in one line, also from a DataLoader worker.
"""

from softlabels.data.builtin import DATASET_NAMES
from softlabels.data.sources import DatasetSource, key_text
from softlabels.data.specs import eval_spec_for, open_dataset

__all__ = ["DATASET_NAMES", "DatasetSource", "eval_spec_for", "key_text", "open_dataset"]
