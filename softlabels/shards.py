"""Shards: splitting a teacher pass across processes or jobs, and merging the pieces into one cache.

A shard is an ordinary cache file holding the contiguous rows `[start, stop)` of the dataset, with a
`shard` attribute saying so. Merging copies every shard into one self-contained file (no virtual
datasets or external links: a cache that depends on other files is not something to hand a team)
after checking that the shards agree and cover every sample exactly once.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from softlabels import format as fmt

# What every shard of one cache must share (the dataset JSON is compared without the shard rows).
_SAME = ("teacher", "preprocessing", "augment", "build")


def shard_range(index: int, count: int, num_samples: int) -> tuple[int, int]:
    """Rows of shard `index` of `count`: contiguous, sizes differ by at most one, no padding."""
    if not 0 <= index < count:
        raise ValueError(f"shard index must be in 0..{count - 1}, got {index}")
    return num_samples * index // count, num_samples * (index + 1) // count


def parse_shard(text: str) -> tuple[int, int]:
    """`I/N` -> (I, N)."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not match or int(match.group(2)) < 1 or int(match.group(1)) >= int(match.group(2)):
        raise ValueError(f"--shard must look like I/N with 0 <= I < N (e.g. 0/4), got {text!r}")
    return int(match.group(1)), int(match.group(2))


def rank_shard_path(out: str | Path, rank: int, world_size: int) -> Path:
    out = Path(out)
    return out.with_name(f"{out.name}.shard-{rank}-of-{world_size}")


def stale_rank_shards(out: str | Path, world_size: int) -> list[Path]:
    """Shard files (finished or partial) of `out` left by a run with another world size."""
    out = Path(out)
    pattern = re.compile(re.escape(out.name) + r"\.shard-\d+-of-(\d+)(\.partial)?$")
    return sorted(p for p in out.parent.glob(out.name + ".shard-*")
                  if (m := pattern.match(p.name)) and int(m.group(1)) != world_size)


def merge_caches(paths: list[str | Path], out: str | Path, overwrite: bool = False, progress: bool = True) -> Path:
    """Merge complete shard caches of one build into a single verified cache at `out`."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")
    if not paths:
        raise ValueError("give at least one shard to merge")
    infos = sorted((_complete_info(p) for p in paths), key=lambda i: i.shard.get("start", 0))
    total = _check_agreement(infos)
    keys, labels = _gather_keys_labels(infos)
    first = infos[0]
    fingerprint = fmt.dataset_fingerprint(keys, labels)
    if fingerprint != first.dataset.get("fingerprint"):
        raise ValueError("merged keys/labels do not match the dataset fingerprint the shards recorded")
    layout = fmt.Layout(**{**_layout_fields(first.layout), "num_samples": total})
    attrs = {name: getattr(first, name) for name in ("teacher", "dataset", *_SAME[1:])}
    writer = fmt.CacheWriter.create(out, layout, keys, labels, attrs)
    try:
        with tqdm(total=total, unit="row", desc="merging", disable=not progress) as bar:
            for info in infos:
                _copy_rows(info, writer, bar)
        writer.finish()
    except BaseException:
        writer.close()
        raise
    return out


def _complete_info(path) -> fmt.CacheInfo:
    info = fmt.read_info(path)
    if not info.complete:
        raise ValueError(f"{path} is incomplete: finish it (--resume) before merging")
    fmt.verify(path)
    return info


def _layout_fields(layout: fmt.Layout) -> dict:
    return {name: getattr(layout, name) for name in layout.__dataclass_fields__}


def _check_agreement(infos: list[fmt.CacheInfo]) -> int:
    first = infos[0]
    total = int(first.dataset.get("num_samples", 0))
    base = {**_layout_fields(first.layout), "num_samples": 0}
    for info in infos:
        name = Path(info.path).name
        for attr in _SAME:
            if getattr(info, attr) != getattr(first, attr):
                raise ValueError(f"{name} disagrees with {Path(first.path).name} in {attr}: refusing to merge")
        if info.dataset != first.dataset:
            raise ValueError(f"{name} was built from other data than {Path(first.path).name}: refusing to merge")
        if {**_layout_fields(info.layout), "num_samples": 0} != base:
            raise ValueError(f"{name} stores targets differently ({info.layout}): refusing to merge")
        if not info.shard:
            raise ValueError(f"{name} is not a shard (no shard attribute)")
    expected_start = 0
    for info in infos:
        start, stop = info.shard["start"], info.shard["stop"]
        if start != expected_start:
            kind = "overlap" if start < expected_start else "gap"
            raise ValueError(f"shards do not cover every sample exactly once: {kind} at row "
                             f"{min(start, expected_start)} ({Path(info.path).name} starts at {start})")
        expected_start = stop
    if expected_start != total:
        raise ValueError(f"shards cover rows 0..{expected_start - 1} of {total}: missing shards for the rest")
    return total


def _gather_keys_labels(infos) -> tuple[list[str], np.ndarray]:
    keys, labels = [], []
    for info in infos:
        k, lab = fmt.read_keys_labels(info.path)
        keys.extend(k)
        labels.append(lab)
    return keys, np.concatenate(labels)


def _copy_rows(info: fmt.CacheInfo, writer: fmt.CacheWriter, bar) -> None:
    step = max(writer.layout.block_rows, 1)
    with fmt.open_cache_file(info.path) as file:
        names = list(info.layout.row_datasets())
        for start in range(0, info.layout.num_samples, step):
            stop = min(start + step, info.layout.num_samples)
            writer.write({name: file[name][start:stop] for name in names})
            bar.update(stop - start)
