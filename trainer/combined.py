"""Several caches of one teacher trained as one set (`trainer fit --cache A.h5 --cache B.h5`): typically
a labelled cache and an unlabelled one, the labels used where a sample has one.

The caches must hold the same targets: the same teacher(s) (spec, weights SHA-256, size), the same
target kinds and embedding width, the same classes and the same input (their views are batched
together); `check_joinable` refuses anything else in one line naming both files and what differs.
Their view counts and augmentations may differ: each part replays its own stored views.

The combined set numbers its samples part after part (the first cache's samples first).
`CombinedReplay` hands a sampler's (index, view(s), epoch) to the part that holds the sample, with the
view its own `ViewSchedule` gives (`CombinedSchedule`), so replay, views per decode, resume and DDP
sharding work on the combined indices exactly as on one cache. Samples of an unlabelled part carry
`NO_LABEL`: such a sample has no label term, and learns from the teacher term alone (`kd_loss`);
the batch's loss is the mean of its samples' (`trainer.losses.base.label_cross_entropy`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
from torch.utils.data import Dataset

from softlabels import store
from softlabels.data import DatasetSource
from softlabels.data.sources import Reader
from softlabels.replay import ReplayDataset, ViewSchedule
from trainer.data import TrainingData, subset_indices


def check_joinable(infos: Sequence[store.CacheInfo]) -> None:
    """Refuse caches that cannot be trained as one set: one line naming both files and what differs."""
    first = infos[0]
    for other in infos[1:]:
        what = _difference(first, other)
        if what:
            raise ValueError(
                f"{first.path} and {other.path} cannot be trained together: {what}; the caches of one run must "
                f"hold one teacher's targets of the same kind, classes and input"
            )


def _difference(a: store.CacheInfo, b: store.CacheInfo) -> str | None:
    teachers = [[m.identity() for m in info.members] for info in (a, b)]
    if teachers[0] != teachers[1]:
        return f"their teachers differ ({_teachers(a)} against {_teachers(b)})"
    if a.layout.targets != b.layout.targets:
        return f"they store different targets ({','.join(a.layout.targets)} against {','.join(b.layout.targets)})"
    if a.layout.embedding_dim != b.layout.embedding_dim:
        return f"their embeddings differ in width ({a.layout.embedding_dim} against {b.layout.embedding_dim})"
    if a.layout.num_classes != b.layout.num_classes:
        return f"their teachers output {a.layout.num_classes} against {b.layout.num_classes} classes"
    if a.layout.labelled and b.layout.labelled and a.classes != b.classes:
        return f"their classes differ ({_short(a.classes)} against {_short(b.classes)})"
    if a.input != b.input:
        return f"their views differ ({a.input.describe()} against {b.input.describe()})"
    return None


def _teachers(info: store.CacheInfo) -> str:
    return " + ".join(f"{m.spec} {(m.weights_sha256 or 'no weights')[:12]}" for m in info.members)


def _short(classes: Sequence[str]) -> str:
    return ", ".join(classes[:4]) + (", ..." if len(classes) > 4 else "")


class CombinedReader(Reader):
    """Reads sample i from the part that holds it (messages name the part's own sample and file)."""

    def __init__(self, sources: Sequence[DatasetSource]):
        super().__init__()
        self.sources = list(sources)
        self.starts = np.cumsum([0, *(len(s) for s in sources)])[:-1]

    def part(self, index: int) -> tuple[int, int]:
        """(part, index within the part) of combined sample `index`."""
        at = int(np.searchsorted(self.starts, index, side="right")) - 1
        return at, index - int(self.starts[at])

    def open(self):
        return None

    def load(self, index: int):
        at, local = self.part(index)
        return self.sources[at].load(local)

    def read(self, index: int):
        at, local = self.part(index)
        return self.sources[at].read(local)

    def where(self, index: int, key: str) -> str:
        at, local = self.part(index)
        return self.sources[at].where(local)


class CombinedSource(DatasetSource):
    """The parts' samples as one source: keys and labels part after part (`NO_LABEL` where a part has
    none), the labelled parts' classes. It is `labelled` when any part is; its spec and split are the
    first labelled part's (what the default evaluation set is found from)."""

    @property
    def labelled(self) -> bool:
        return bool(np.any(self.labels != store.NO_LABEL))

    @property
    def labelled_count(self) -> int:
        return int(np.sum(self.labels != store.NO_LABEL))


def combine_sources(sources: Sequence[DatasetSource]) -> CombinedSource:
    lead = next((s for s in sources if s.labelled), sources[0])
    return CombinedSource(
        spec=lead.spec,
        split=lead.split,
        root=lead.root,
        keys=[key for s in sources for key in s.keys],
        labels=np.concatenate([np.asarray(s.labels, dtype=np.int64) for s in sources]),
        classes=list(lead.classes),
        defaults=lead.defaults,
        reader=CombinedReader(sources),
    )


class CombinedSchedule(ViewSchedule):
    """Each sample's view in an epoch, from its own part's `ViewSchedule` (the parts keep their own
    orders, so nothing of `ViewSchedule.__init__` runs)."""

    def __init__(self, reader: CombinedReader, schedules: Sequence[ViewSchedule]):
        self.reader, self.schedules = reader, list(schedules)
        self.num_views = min(s.num_views for s in schedules)  # what views per decode may ask of every sample

    def view(self, index: int, epoch: int) -> int:
        at, local = self.reader.part(index)
        return self.schedules[at].view(local, epoch)


class CombinedReplay(Dataset):
    """The parts' `ReplayDataset`s as one dataset over combined indices."""

    def __init__(self, reader: CombinedReader, parts: Sequence[ReplayDataset]):
        self.reader, self.parts = reader, list(parts)

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def __getitem__(self, item):
        if isinstance(item, (int, np.integer)):
            at, local = self.reader.part(int(item))
            return self.parts[at][local]
        at, local = self.reader.part(int(item[0]))
        return self.parts[at][(local,) + tuple(item[1:])]


def combined_fingerprint(fingerprints: Sequence[str]) -> str:
    """The combined set's fingerprint: a hash of its parts' fingerprints, in order."""
    return "sha256:" + hashlib.sha256("\n".join(fingerprints).encode()).hexdigest()


def combine(parts: Sequence[TrainingData], subset: int | None = None) -> TrainingData:
    """One training set of several caches' data (each already checked against its own images);
    `subset`: the first N samples of each class (refused when a part is unlabelled)."""
    infos = [p.cache for p in parts if p.cache is not None]
    schedules = [p.schedule for p in parts if p.schedule is not None]
    datasets = [p.dataset for p in parts if isinstance(p.dataset, ReplayDataset)]
    assert len(infos) == len(schedules) == len(datasets) == len(parts)  # each part is a cache's
    check_joinable(infos)
    source = combine_sources([p.source for p in parts])
    reader = source.reader
    assert isinstance(reader, CombinedReader)
    return TrainingData(
        source,
        CombinedReplay(reader, datasets),
        subset_indices(source.labels, subset),
        parts[0].image_prep,
        combined_fingerprint([p.fingerprint for p in parts]),
        CombinedSchedule(reader, schedules),
        infos[0],
        caches=tuple(infos),
    )
