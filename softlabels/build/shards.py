"""Shards and view sets: splitting teacher passes into pieces, and merging the pieces into one cache.

A shard is an ordinary cache file holding the contiguous rows `[start, stop)` of the dataset, with a
`shard` attribute saying so. A view set is a whole cache built with its own `--seed`: merging view
sets gives every sample the views of all of them (more views without recomputing the old ones).
Merging copies everything into one self-contained file (no virtual datasets or external links: a
cache that depends on other files is not something to hand a team) after checking that the pieces
agree, and that shards cover every sample exactly once or view sets never repeat a seed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from softlabels import store
from softlabels.progress import bar as progress_bar
from softlabels.progress import factory

MERGE_KINDS = ("auto", "rows", "views", "teachers")


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
    return sorted(
        p
        for p in out.parent.glob(out.name + ".shard-*")
        if (m := pattern.match(p.name)) and int(m.group(1)) != world_size
    )


def merge_caches(paths: Sequence[str | Path], out: str | Path, overwrite: bool = False, progress: bool = True) -> Path:
    """Merge complete shard caches of one build into a single verified cache at `out`."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")
    if not paths:
        raise ValueError("give at least one shard to merge")
    infos = sorted((_complete_info(p) for p in paths), key=lambda i: i.shard.start if i.shard else 0)
    total = _check_agreement(infos)
    keys, labels = _gather_keys_labels(infos)
    first = infos[0]
    fingerprint = store.dataset_fingerprint(keys, labels)
    if fingerprint != first.dataset.fingerprint:
        raise ValueError("merged keys/labels do not match the dataset fingerprint the shards recorded")
    layout = first.layout.replace(num_samples=total)

    def copy_shards(writer, bar):
        for info in infos:
            _copy_rows(info, writer, bar)

    return _write_merged(out, layout, keys, labels, first.meta.replace(shard=None), "merging", progress, copy_shards)


def _complete_info(path) -> store.CacheInfo:
    info = store.read_info(path)
    if not info.complete:
        raise ValueError(f"{path} is incomplete: finish it (--resume) before merging")
    store.verify(path)
    return info


def _check_agreement(infos: list[store.CacheInfo]) -> int:
    """Shards of one build agree in everything but their rows; returns the dataset's size."""
    first = infos[0]
    total = int(first.dataset.num_samples or 0)
    for info in infos:
        name = Path(info.path).name
        if not info.shard:
            raise ValueError(f"{name} is not a shard (no shard attribute)")
        for attr in ("teacher", "preprocessing", "augment", "build"):
            if getattr(info, attr).to_dict() != getattr(first, attr).to_dict():
                raise ValueError(f"{name} disagrees with {Path(first.path).name} in {attr}: refusing to merge")
        if info.dataset.to_dict() != first.dataset.to_dict():
            raise ValueError(f"{name} was built from other data than {Path(first.path).name}: refusing to merge")
        if info.layout.replace(num_samples=1) != first.layout.replace(num_samples=1):
            raise ValueError(f"{name} stores targets differently ({info.layout}): refusing to merge")
    expected_start = 0
    for info in infos:
        shard = info.shard
        assert shard is not None  # checked above
        start, stop = shard.start, shard.stop
        if start != expected_start:
            kind = "overlap" if start < expected_start else "gap"
            raise ValueError(
                f"shards do not cover every sample exactly once: {kind} at row "
                f"{min(start, expected_start)} ({Path(info.path).name} starts at {start})"
            )
        expected_start = stop
    if expected_start != total:
        raise ValueError(f"shards cover rows 0..{expected_start - 1} of {total}: missing shards for the rest")
    return total


def _gather_keys_labels(infos) -> tuple[list[str], np.ndarray]:
    keys, labels = [], []
    for info in infos:
        k, lab = store.read_keys_labels(info.path)
        keys.extend(k)
        labels.append(lab)
    return keys, np.concatenate(labels)


def _copy_rows(info: store.CacheInfo, writer: store.CacheWriter, bar) -> None:
    for start, stop, _, rows in store.iter_rows(info.path, max(writer.layout.block_rows, 1)):
        writer.write(rows)
        bar.update(stop - start)


# ----------------------------------------------------------------------------- view sets


def merge_views(paths: Sequence[str | Path], out: str | Path, overwrite: bool = False, progress: bool = True) -> Path:
    """Merge caches of the same samples built with different seeds into one cache holding all their views.

    View order follows `paths`: the first cache's views come first. The merged `augment` attribute
    records the seed of every view (`seeds`, one per view) so each view's origin stays known.
    """
    out, infos = _inputs(paths, out, overwrite, "views to merge")
    _check_view_sets(infos)
    first = infos[0]
    seeds = [seed for info in infos for seed in info.view_seeds]
    digests = all(info.layout.sample_digests for info in infos)  # kept where every view set has them
    layout = first.layout.replace(num_views=len(seeds), sample_digests=digests)
    augment = replace(first.augment, views=len(seeds), seed=seeds[0], seeds=tuple(seeds))
    keys, labels = store.read_keys_labels(first.path)
    return _write_merged(
        out,
        layout,
        keys,
        labels,
        first.meta.replace(augment=augment),
        "merging views",
        progress,
        lambda writer, bar: _copy_views(infos, writer, bar),
    )


def _write_merged(out, layout, keys, labels, meta: store.Metadata, desc: str, progress: bool, fill) -> Path:
    """Create `out` through the crash-safe writer, let `fill(writer, bar)` write every row, finish."""
    writer = store.CacheWriter.create(out, layout, keys, labels, meta)
    try:
        with progress_bar(total=layout.num_samples, unit="row", desc=desc, enabled=progress) as bar:
            fill(writer, bar)
        writer.finish(bars=factory(progress))
    except BaseException:
        writer.close()
        raise
    return Path(out)


def _check_view_sets(infos: list[store.CacheInfo]) -> None:
    first, first_name = infos[0], Path(infos[0].path).name
    seen: dict[int, str] = {}
    for info in infos:
        name = Path(info.path).name
        if info.shard:
            raise ValueError(
                f"{name} is a shard (rows {info.shard.start}..{info.shard.stop}): "
                f"merge its shards into one cache first, then merge views"
            )
        if info.augment.name == "none":
            raise ValueError(
                f"{name} has no augmentation: its views are the plain image, nothing new to merge "
                f"(build extra views with --augment and another --seed)"
            )
        problems = _view_set_differences(first, info)
        if problems:
            raise ValueError(f"{name} and {first_name} differ in {problems[0]}: refusing to merge their views")
        for seed in sorted(set(info.view_seeds)):
            if seed in seen:
                raise ValueError(
                    f"{seen[seed]} and {name} both hold views of seed {seed}, which would repeat "
                    f"the same views; build the extra views with another --seed"
                )
            seen[seed] = name


def _view_set_differences(first: store.CacheInfo, info: store.CacheInfo) -> list[str]:
    """What makes two caches' views not views of one teacher on one dataset (empty when they agree)."""
    checks = _fields("teacher", first.teacher, info.teacher, ("spec", "weights_sha256", "num_params", "model_class"))
    checks += _fields("dataset", first.dataset, info.dataset, ("fingerprint", "split", "classes"))
    checks += [("preprocessing", first.preprocessing, info.preprocessing)]
    checks += _fields("augment", first.augment, info.augment, ("name", "param_names"))
    build_keys = sorted(set(first.build.to_dict()) | set(info.build.to_dict()))
    checks += [(f"build.{key}", first.build.to_dict().get(key), info.build.to_dict().get(key)) for key in build_keys]
    mine, theirs = (i.layout.replace(num_views=1, block_rows=1, sample_digests=False).fields() for i in (first, info))
    checks += [(f"layout.{key}", mine[key], theirs[key]) for key in mine]
    return [f"{what} ({a!r} vs {b!r})" for what, a, b in checks if a != b]


def _fields(prefix: str, a, b, names) -> list[tuple]:
    return [(f"{prefix}.{name}", getattr(a, name), getattr(b, name)) for name in names]


def _copy_views(infos: list[store.CacheInfo], writer: store.CacheWriter, bar) -> None:
    readers = [store.iter_rows(info.path, writer.layout.block_rows) for info in infos]
    for blocks in zip(*readers):
        parts = [rows for _, _, _, rows in blocks]
        _check_same_content(infos, parts, blocks[0][0])
        # Every row array is (N, V, ...): the views of all inputs line up along axis 1.
        merged = store.Rows.concat(parts, axis=1)
        if not writer.layout.sample_digests:
            merged.digests = None
        writer.write(merged)
        bar.update(blocks[0][1] - blocks[0][0])


def _check_same_content(infos: list[store.CacheInfo], parts: list[store.Rows], start: int) -> None:
    """Caches of one dataset (view sets, teachers) whose sample digests differ were built on other content."""
    with_digests = [(info, rows.digests) for info, rows in zip(infos, parts) if rows.digests is not None]
    for info, digests in with_digests[1:]:
        differ = np.flatnonzero((digests != with_digests[0][1]).any(axis=1))
        if len(differ):
            row = start + int(differ[0])
            raise ValueError(
                f"{Path(info.path).name} and {Path(with_digests[0][0].path).name} were built on other content "
                f"for {len(differ)} sample(s) (first: row {row}): the samples changed between the builds; "
                f"rebuild them from the same samples"
            )


# ----------------------------------------------------------------------------- either


def merge_kind(paths: Sequence[str | Path]) -> str:
    """`rows` when every input is a shard, `views` when none is; mixed inputs are refused."""
    shards = [store.read_info(p).shard is not None for p in paths]
    if all(shards):
        return "rows"
    if not any(shards):
        return "views"
    names = ", ".join(Path(p).name for p, is_shard in zip(paths, shards) if not is_shard)
    raise ValueError(
        f"cannot mix shards and whole caches ({names} not a shard): merge the shards first, then merge views"
    )


def merge(
    paths: list[str | Path], out: str | Path, kind: str = "auto", overwrite: bool = False, progress: bool = True
) -> tuple[str, Path]:
    """Merge row shards or view sets (`kind` auto decides from the inputs); returns (kind, path)."""
    if kind not in MERGE_KINDS:
        raise ValueError(f"unknown merge kind {kind!r}; choose one of: {', '.join(MERGE_KINDS)}")
    if not paths:
        raise ValueError("give at least one cache to merge")
    kind = merge_kind(paths) if kind == "auto" else kind
    function = {"rows": merge_caches, "views": merge_views, "teachers": merge_teachers}[kind]
    return kind, function(paths, out, overwrite=overwrite, progress=progress)


# ----------------------------------------------------------------------------- teachers


def _inputs(paths: Sequence[str | Path], out: str | Path, overwrite: bool, what: str) -> tuple[Path, list]:
    """The output path (never silently replaced) and the complete caches to join (at least two)."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")
    if len(paths) < 2:
        raise ValueError(f"give at least two caches whose {what}")
    return out, [_complete_info(p) for p in paths]


def merge_teachers(
    paths: Sequence[str | Path], out: str | Path, overwrite: bool = False, progress: bool = True
) -> Path:
    """Join caches that different teachers built on the same samples and the same views into one cache
    holding every teacher's outputs (the members in the order of `paths`)."""
    out, infos = _inputs(paths, out, overwrite, "teachers to join")
    first = infos[0]
    for info in infos[1:]:
        problems = _same_views_differences(first, info)
        if problems:
            why = (
                "they store their targets differently"
                if problems[0].startswith("layout.")
                else "their teachers did not see the same samples and views"
            )
            raise ValueError(
                f"{Path(first.path).name} and {Path(info.path).name} differ in {problems[0]}: {why}; "
                f"refusing to join them"
            )
    records = [record for info in infos for record in _named_members(info)]
    _refuse_repeated_teachers(paths, infos)
    names = _unique([r.name or r.spec or "teacher" for r in records])
    members = tuple(replace(r, name=n) for r, n in zip(records, names))
    digests = all(info.layout.sample_digests for info in infos)  # kept where every cache has them
    layout = first.layout.replace(num_teachers=len(members), sample_digests=digests)
    meta = first.meta.replace(teacher=members[0], teachers=members)
    keys, labels = store.read_keys_labels(first.path)
    return _write_merged(
        out,
        layout,
        keys,
        labels,
        meta,
        "joining teachers",
        progress,
        lambda writer, bar: _copy_members(infos, writer, bar),
    )


def _named_members(info: store.CacheInfo) -> list[store.TeacherRecord]:
    """A cache's members with their names and inputs filled in."""
    prep = info.input.to_dict()
    return [
        replace(record, name=name, input=record.input or prep) for record, name in zip(info.members, info.member_names)
    ]


def _refuse_repeated_teachers(paths: Sequence[str | Path], infos: list[store.CacheInfo]) -> None:
    """An ensemble of one teacher with itself (the same file twice, or the same spec and weights) is
    that teacher alone, counted twice."""
    seen: dict[tuple, str] = {}
    for path, info in zip(paths, infos):
        for record in info.members:
            if record.identity() in seen:
                raise ValueError(
                    f"{path} and {seen[record.identity()]} hold the same teacher ({record.spec} with weights "
                    f"SHA-256 {str(record.weights_sha256)[:12]}): an ensemble needs different teachers; "
                    f"give each teacher's cache once"
                )
            seen[record.identity()] = str(path)


def _unique(names: list[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        out.append(name if name not in out else f"{name}#{sum(n.split('#')[0] == name for n in out) + 1}")
    return out


def _same_views_differences(first: store.CacheInfo, info: store.CacheInfo) -> list[str]:
    """What makes two caches not outputs on the same samples and views (empty when they agree)."""
    mine, theirs = first.input, info.input
    checks = _fields("dataset", first.dataset, info.dataset, ("fingerprint", "split", "classes"))
    checks += _fields("augment", first.augment, info.augment, ("name", "param_names", "source_sha256", "repr"))
    checks += [
        ("view seeds", first.view_seeds, info.view_seeds),
        (
            "view geometry",
            (mine.channels, mine.image_size, mine.resize, mine.interpolation),
            (theirs.channels, theirs.image_size, theirs.resize, theirs.interpolation),
        ),
    ]
    a, b = (i.layout.replace(num_teachers=1, block_rows=1, sample_digests=False).fields() for i in (first, info))
    checks += [(f"layout.{key}", a[key], b[key]) for key in a]
    return [f"{what} ({x!r} vs {y!r})" for what, x, y in checks if x != y]


def _copy_members(infos: list[store.CacheInfo], writer: store.CacheWriter, bar) -> None:
    readers = [store.iter_rows(info.path, writer.layout.block_rows) for info in infos]
    for blocks in zip(*readers):
        first = blocks[0][3]
        for (start, stop, _, rows), info in zip(blocks, infos):
            if (rows.params is None) != (first.params is None) or (
                rows.params is not None and not np.array_equal(rows.params, first.params)
            ):
                raise ValueError(
                    f"{Path(info.path).name} stores other view parameters in rows {start}..{stop - 1}: "
                    f"its teacher saw other views; refusing to join"
                )
        _check_same_content(infos, [rows for _, _, _, rows in blocks], blocks[0][0])
        keep = writer.layout.sample_digests
        parts = [_member_axis(rows, info.layout, keep) for (_, _, _, rows), info in zip(blocks, infos)]
        writer.write(store.Rows.concat(parts, axis=2))
        bar.update(blocks[0][1] - blocks[0][0])


def _member_axis(rows: store.Rows, layout: store.Layout, digests: bool) -> store.Rows:
    """(n, V, ...) rows of a one-teacher cache as (n, V, 1, ...), with their digests when kept."""
    targets = rows.targets
    if layout.num_teachers == 1:
        targets = {name: value[:, :, None] for name, value in targets.items()}
    return replace(rows, targets=targets, digests=rows.digests if digests else None)
