"""Checking a cache file: header and version (and the layout the header records), trust (a cache is
data, never code), the shapes the layout promises, and the full integrity pass (every block's
checksum, finiteness, fingerprint)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import h5py
import numpy as np

from softlabels.store import files
from softlabels.store.rows import DIGESTS, PARAMS
from softlabels.store.schema import FORMAT_NAME, FORMAT_VERSION, CacheError, Layout, dataset_fingerprint


def check_header(file: h5py.File) -> None:
    if files.attr(file, "format") != FORMAT_NAME:
        raise CacheError(f"{files.name_of(file)} is not a softlabels cache (no format='softlabels' attribute)")
    version = files.attr(file, "format_version")
    if not isinstance(version, int) or version < 1:
        raise CacheError(f"{files.name_of(file)}: bad format_version {version!r}")
    if version > FORMAT_VERSION:
        raise CacheError(
            f"{files.name_of(file)} uses cache format version {version}; this softlabels "
            f"reads up to version {FORMAT_VERSION}: upgrade softlabels"
        )
    for name in ("num_samples", "num_classes", "num_views"):
        if not isinstance(files.attr(file, name), int):
            raise CacheError(f"{files.name_of(file)}: missing or bad root attribute {name!r}")


def read_layout(file: h5py.File) -> Layout:
    """The layout recorded in an open file (after the header checks)."""
    check_header(file)
    names: tuple[str, ...] = ()
    if PARAMS in file:
        names = tuple(json.loads(files.attr(file[PARAMS], "names", "[]")))
    return Layout(
        num_samples=int(files.attr(file, "num_samples")),
        num_classes=int(files.attr(file, "num_classes")),
        num_views=int(files.attr(file, "num_views")),
        storage=files.attr(file, "storage", "logits"),
        dtype=files.attr(file, "dtype", "float16"),
        topk=files.attr(file, "topk"),
        param_names=names,
        compression=files.attr(file, "compression", "none"),
        block_rows=int(files.attr(file["integrity"], "block_rows")) if "integrity" in file else 1024,
        num_teachers=int(files.attr(file, "num_teachers", 1)),
        sample_digests=DIGESTS in file,
        targets=tuple(files.attr(file, "targets", "logits").split(",")),
        embedding_dim=int(files.attr(file, "embedding_dim", 0)),
        embedding_dtype=files.attr(file, "embedding_dtype", "float16"),
        labelled=files.LABELS in file,
    )


def check_trust(file: h5py.File) -> None:
    """A cache is data, never code: refuse links and storage that point outside the file."""
    problems = []

    def visit(name, link):
        if isinstance(link, (h5py.ExternalLink, h5py.SoftLink)):
            problems.append(f"{name} is a {type(link).__name__}")

    file.visititems_links(visit)

    def check(name, obj):
        if isinstance(obj, h5py.Dataset):
            if obj.is_virtual:
                problems.append(f"{name} is a virtual dataset")
            if obj.external:
                problems.append(f"{name} stores its data in external files")
            if obj.dtype.kind in "OV" and h5py.check_string_dtype(obj.dtype) is None:
                problems.append(f"{name} has a non-numeric, non-string type")

    file.visititems(check)
    if problems:
        raise CacheError(f"{files.name_of(file)} is refused: {problems[0]} (caches must be self-contained data)")


def check_structure(file: h5py.File) -> Layout:
    """Header, trust and the shapes/types of every dataset the layout promises."""
    layout = read_layout(file)
    check_trust(file)
    n = layout.num_samples
    expected = {
        files.KEYS: (n,),
        **({files.LABELS: (n,)} if layout.labelled else {}),
        files.DONE: (layout.num_blocks,),
        files.BLOCK_SHA256: (layout.num_blocks, 32),
    }
    if layout.sample_digests:
        expected[files.DIGESTS_SHA256] = (layout.num_blocks, 32)
    expected.update({name: shape for name, (shape, _) in files.row_datasets(layout).items()})
    for name, shape in expected.items():
        if name not in file:
            raise CacheError(f"{files.name_of(file)}: dataset {name!r} is missing")
        if file[name].shape != shape:
            raise CacheError(f"{files.name_of(file)}: dataset {name!r} has shape {file[name].shape}, expected {shape}")
    return layout


@dataclass
class CheckStats:
    num_blocks: int
    teacher_accuracy: float  # over every view (and every teacher)
    fingerprint: str
    member_accuracy: list[float] | None = None  # per teacher, when there are several


def check_file(file: h5py.File, require_complete: bool = True, on_block=None) -> CheckStats:
    """Full integrity check of an open cache; raises CacheError at the first problem.

    `on_block(rows)` is called after each block (progress bars)."""
    layout = check_structure(file)
    if require_complete and files.attr(file, "complete") is not True:
        raise CacheError(f"{files.name_of(file)} is incomplete (complete=false): resume the build with --resume")
    done = file[files.DONE][:]
    if not done.all():
        first = int(np.flatnonzero(done == 0)[0])
        raise CacheError(f"{files.name_of(file)}: block {first} (rows {layout.block_range(first)}) was never written")
    correct = np.zeros(layout.num_teachers, dtype=np.int64)
    for block in range(layout.num_blocks):
        correct += _check_block(file, layout, block)
        if on_block is not None:
            on_block(layout.block_range(block)[1] - layout.block_range(block)[0])
    keys = files.read_keys(file)
    fingerprint = dataset_fingerprint(keys, files.read_labels(file, layout))
    # A shard holds some rows of the dataset: it records its own rows' fingerprint too.
    shard = files.read_json_attr(file, "shard")
    recorded = shard.get("fingerprint") if shard else files.read_json_attr(file, "dataset").get("fingerprint")
    if recorded and recorded != fingerprint:
        raise CacheError(f"{files.name_of(file)}: keys/labels do not match the recorded dataset fingerprint")
    # An unlabelled cache, or one of embeddings alone, has no accuracy to report: NaN, as for a cache whose
    # build never finished.
    per_member = correct / (layout.num_samples * layout.num_views)
    if not (layout.labelled and layout.has_logits):
        per_member = np.full(layout.num_teachers, np.nan)
    members = [float(a) for a in per_member] if layout.num_teachers > 1 else None
    return CheckStats(layout.num_blocks, float(per_member.mean()), fingerprint, members)


def _check_block(file, layout: Layout, block: int) -> np.ndarray:
    """Checksum and finiteness of one block; returns how many of its views each teacher got right
    (zeros for an unlabelled cache)."""
    arrays = read_checked_block(file, layout, block)
    labels = arrays.pop(files.LABELS, None)
    rows = files.Rows.from_arrays(layout.mode, arrays, layout.embedding)
    finite = layout.mode.finite(rows.logit_targets) and (layout.embedding is None or layout.embedding.finite(arrays))
    if not finite:
        raise CacheError(f"{files.name_of(file)}: non-finite values in block {block}")
    if labels is None or not layout.has_logits:  # unlabelled, or embeddings alone: no class to be right about
        return np.zeros(layout.num_teachers, dtype=np.int64)
    top1 = rows.top1()  # (n, V) or (n, V, M)
    right = top1 == labels.reshape(-1, *([1] * (top1.ndim - 1)))
    return right.reshape(len(labels), layout.num_views, -1).sum(axis=(0, 1))


def read_checked_block(file, layout: Layout, block: int) -> dict[str, np.ndarray]:
    """Every checksummed array of one block, after checking them against the stored checksums."""
    start, stop = layout.block_range(block)
    try:
        arrays = files.read_block(file, layout, block)
    except OSError as err:  # e.g. a damaged compressed chunk
        where = f"{files.name_of(file)}: block {block} (rows {start}..{stop - 1})"
        raise CacheError(f"{where} cannot be read ({files.short_reason(err)})") from None
    check_block_arrays(file, layout, block, arrays)
    return arrays


def check_block_arrays(file, layout: Layout, block: int, arrays: dict[str, np.ndarray]) -> None:
    """Raise CacheError naming the block when its arrays do not match its stored checksums."""
    table = files.mismatched_table(file, layout, block, arrays)
    if table is not None:
        start, stop = layout.block_range(block)
        what = "sample digests" if table == files.DIGESTS_SHA256 else "checksum"
        raise CacheError(
            f"{files.name_of(file)}: {what} mismatch in block {block} (rows {start}..{stop - 1}): the file is "
            f"damaged (`softlabels verify` lists every damaged block); rebuild or re-copy it"
        )


def check_loaded(file, layout: Layout, arrays: dict[str, np.ndarray], on_block=None) -> None:
    """Check the checksums of every block of a cache read whole (`arrays`: every row dataset, all rows)."""
    labels = files.label_arrays(file, layout, slice(None))
    for block in range(layout.num_blocks):
        start, stop = layout.block_range(block)
        part = {name: value[start:stop] for name, value in {**arrays, **labels}.items()}
        check_block_arrays(file, layout, block, part)
        if on_block is not None:
            on_block(stop - start)


def verify(path, on_block=None) -> CheckStats:
    """Check structure, completeness, every block checksum and the fingerprint of a cache file."""
    with files.open_cache_file(path) as file:
        return check_file(file, on_block=on_block)
