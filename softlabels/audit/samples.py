"""A cache against the samples it says it describes: which keys were added, removed, renamed or
relabelled since it was built (`compare_samples`, `require_same_samples`); the trainer reuses them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath

from softlabels import store
from softlabels.data import DatasetSource, key_text

SHOWN = 3  # examples per kind of difference in a message


@dataclass
class SampleDiff:
    """How a dataset's (key, label) list differs from the one a cache was built on (empty: the same)."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    renamed: list[tuple[str, str]] = field(default_factory=list)
    relabelled: list[tuple[str, str, int, int]] = field(default_factory=list)  # old key, new key, old, new label
    reordered: int = 0
    classes: tuple[list[str], list[str]] | None = None  # (cache's, dataset's) class names when they differ

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.renamed or self.relabelled or self.reordered or self.classes)

    def describe(self, classes=None) -> str:
        """One line: counts of each kind with a few examples; labels named with `classes`."""

        def name(label: int) -> str:
            return str(classes[label]) if classes is not None and 0 <= label < len(classes) else str(label)

        def moved(old: str, new: str, a: int, b: int) -> str:
            return f"{old}{'' if new == old else f' -> {new}'}: {name(a)} -> {name(b)}"

        parts = [
            _listed("added", self.added),
            _listed("removed", self.removed),
            _listed("renamed", [f"{a} -> {b}" for a, b in self.renamed]),
            _listed("relabelled", [moved(*item) for item in self.relabelled]),
        ]
        if self.reordered:
            parts.append(f"{self.reordered} samples in another order")
        if self.classes:
            parts.insert(0, f"classes differ (cache: {_short(self.classes[0])}; dataset: {_short(self.classes[1])})")
        return ", ".join(p for p in parts if p)


def _listed(kind: str, items: list[str]) -> str:
    if not items:
        return ""
    more = ", ..." if len(items) > SHOWN else ""
    return f"{len(items)} {kind} (e.g. {', '.join(key_text(item) for item in items[:SHOWN])}{more})"


def _short(names: list[str], limit: int = 6) -> str:
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def compare_samples(cache_keys, cache_labels, keys, labels) -> SampleDiff:
    """What changed from the cache's (keys, labels) to a dataset's, both in dataset order.

    A key gone and a new one with the same file name (`cat/7.png` -> `dog/7.png`), or at the same
    position, count as one sample renamed (same label) or relabelled (moved to another class).
    """
    cached = {k: int(v) for k, v in zip(cache_keys, cache_labels)}
    current = {k: int(v) for k, v in zip(keys, labels)}
    gone = [k for k in cache_keys if k not in current]
    new = [k for k in keys if k not in cached]
    diff = SampleDiff(
        relabelled=[(k, k, cached[k], current[k]) for k in cache_keys if k in current and cached[k] != current[k]]
    )
    pairs = _renames(gone, new, list(cache_keys), list(keys))
    for old, renamed in pairs:
        if cached[old] == current[renamed]:
            diff.renamed.append((old, renamed))
        else:
            diff.relabelled.append((old, renamed, cached[old], current[renamed]))
    paired_old, paired_new = {a for a, _ in pairs}, {b for _, b in pairs}
    diff.removed = [k for k in gone if k not in paired_old]
    diff.added = [k for k in new if k not in paired_new]
    if not (gone or new):
        diff.reordered = sum(1 for a, b in zip(cache_keys, keys) if a != b)
    return diff


def _renames(gone: list[str], new: list[str], cache_keys: list[str], keys: list[str]) -> list[tuple[str, str]]:
    """Pair vanished keys with new ones: by a file name unique on both sides, else by position."""

    def by_name(names):
        found: dict[str, list[str]] = {}
        for key in names:
            found.setdefault(PurePosixPath(key).name, []).append(key)
        return {n: ks[0] for n, ks in found.items() if len(ks) == 1}

    old_names, new_names = by_name(gone), by_name(new)
    pairs = [(old_names[n], new_names[n]) for n in old_names if n in new_names]
    taken_old, taken_new = {a for a, _ in pairs}, {b for _, b in pairs}
    position = {k: i for i, k in enumerate(keys)}
    new_set = set(new)
    for i, old in enumerate(cache_keys):
        if old in taken_old or old in position or i >= len(keys):
            continue
        candidate = keys[i]
        if candidate in new_set and candidate not in taken_new:
            pairs.append((old, candidate))
            taken_new.add(candidate)
    return pairs


def check_against_dataset(path, source: DatasetSource, targets: store.CacheTargets | None = None) -> SampleDiff:
    """Compare a cache's keys and labels (its shard's rows, for a shard) with a dataset's; `targets`
    (the cache opened by the caller) reads them from the file it checked."""
    if targets is not None:
        info = targets.info
        cache_keys, cache_labels = targets.keys_labels()
    else:
        info = store.read_info(path)
        cache_keys, cache_labels = store.read_keys_labels(path)
    keys, labels = source.keys, source.labels
    if info.shard:
        keys, labels = keys[info.shard.start : info.shard.stop], labels[info.shard.start : info.shard.stop]
    diff = compare_samples(cache_keys, cache_labels, keys, labels)
    recorded = info.dataset.classes
    if recorded is not None and list(recorded) != list(source.classes):
        diff.classes = (list(recorded), list(source.classes))
    if not diff and info.fingerprint not in (None, store.dataset_fingerprint(keys, labels)):
        raise store.CacheError(f"{path}: its keys and labels do not match its own recorded fingerprint")
    return diff


def require_same_samples(path, source: DatasetSource, targets: store.CacheTargets | None = None) -> None:
    """Raise ValueError saying what differs when `source` is not the data the cache was built on."""
    diff = check_against_dataset(path, source, targets)
    if diff:
        raise ValueError(
            f"{path} was not built from {source.spec} ({source.split}): "
            f"{diff.describe(source.classes)}; rebuild the cache for these samples "
            f"or point --dataset at the ones it was built from"
        )
