"""What is in a cache, for people: `softlabels info` for one file, `softlabels ls` for a folder of them."""

from __future__ import annotations

import os
import re
from pathlib import Path

from softlabels import store
from softlabels.models.preprocessing import input_text
from softlabels.store.embedding import EmbeddingCodec

# Names a cache can have: NAME.h5, its build's NAME.h5.partial, torchrun's NAME.h5.shard-R-of-W.
CACHE_NAME = re.compile(r"\.(h5|hdf5|hdf)(\.shard-\d+-of-\d+)?(\.partial)?$", re.IGNORECASE)
SHOWN_CLASSES = 10


def describe(path) -> dict:
    """A JSON-able summary of one cache: provenance, shapes, storage, size, accuracy, fingerprints."""
    info = store.read_info(path)
    layout = info.layout
    size = store.file_size(path)
    attrs = info.meta.to_attrs()
    return {
        "path": str(path) if store.is_url(path) else str(Path(path)),
        "name": Path(path).name,
        "complete": info.complete,
        "rows_written": layout.num_samples if info.complete else store.rows_written(path),
        "format_version": info.format_version,
        "created": info.attrs.get("created"),
        "softlabels_version": info.attrs.get("softlabels_version"),
        "teacher": attrs["teacher"],
        "dataset": {k: v for k, v in attrs["dataset"].items() if k != "classes"},
        "split": info.dataset.split,
        "classes": list(info.dataset.classes or []),
        "num_samples": layout.num_samples,
        "num_classes": layout.num_classes,
        "num_views": layout.num_views,
        "labelled": layout.labelled,
        "view_seeds": info.view_seeds,
        "storage": {
            "kind": layout.storage,
            "dtype": layout.dtype,
            "topk": layout.topk,
            "compression": layout.compression,
            **embedding_storage(layout),
        },
        "augment": attrs["augment"],
        "preprocessing": attrs.get("preprocessing", {}),
        "build": attrs["build"],
        "size_bytes": size,
        "bytes_per_sample": size / layout.num_samples,
        "bytes_per_view": size / (layout.num_samples * layout.num_views),
        "teacher_accuracy": info.teacher_accuracy,
        "num_teachers": layout.num_teachers,
        "teachers": [
            {**m.to_dict(), "name": n, "accuracy": a}
            for m, n, a in zip(info.members, info.member_names, info.member_accuracy)
        ],
        "fingerprint": info.fingerprint,
        "fingerprints": {
            "dataset": info.fingerprint,
            "teacher_weights": info.teacher.weights_sha256,
            "shard_rows": info.shard.fingerprint if info.shard else None,
        },
        "shard": attrs.get("shard"),
    }


def human_size(num_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if num_bytes < 1024 or unit == "GiB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    return f"{num_bytes:.1f} TiB"


def embedding_storage(layout: store.Layout) -> dict:
    """The target kinds and the embeddings' encoding, for caches that store embeddings (else nothing)."""
    if layout.embedding is None:
        return {}
    return {
        "targets": list(layout.targets),
        "embedding_dim": layout.embedding_dim,
        "embedding_dtype": layout.embedding_dtype,
    }


def storage_text(summary: dict, short: bool = False) -> str:
    """`float16 top-5 gzip` (short) or `top-5 logits + logsumexp, float16, compression gzip`; with
    embeddings, `+ 512-D int8 embeddings` (short: `+ emb512 int8`)."""
    storage = summary["storage"]
    mode = store.storage_mode(storage["kind"], summary["num_classes"], storage["dtype"], storage["topk"])
    kinds = storage.get("targets", ["logits"])
    parts = [mode.label(short=short)] if "logits" in kinds else []
    if "embedding" in kinds:
        codec = EmbeddingCodec(storage["embedding_dim"], storage["embedding_dtype"])
        parts.append(f"emb{codec.dim} {codec.dtype}" if short else codec.label())
    if short:
        compression = "" if storage["compression"] == "none" else f" {storage['compression']}"
        return " + ".join(parts) + compression
    return f"{' + '.join(parts)}, compression {storage['compression']}"


def seeds_text(seeds: list[int]) -> str:
    """[1, 1] -> `seed 1`; [0, 0, 1, 1] -> `seed 0: views 0-1, seed 1: views 2-3` (merged view sets)."""
    parts: list[list[int]] = []  # [seed, first view, last view]
    for view, seed in enumerate(seeds):
        if parts and parts[-1][0] == seed:
            parts[-1][2] = view
        else:
            parts.append([seed, view, view])
    if len(parts) == 1:
        return f"seed {parts[0][0]}"
    return ", ".join(
        f"seed {seed}: view{'s' if last > first else ''} {first}" + (f"-{last}" if last > first else "")
        for seed, first, last in parts
    )


def classes_text(classes: list[str]) -> str:
    shown = ", ".join(classes[:SHOWN_CLASSES])
    return shown + (f", ... (+{len(classes) - SHOWN_CLASSES} more)" if len(classes) > SHOWN_CLASSES else "")


def accuracy_text(accuracy: float | None, labelled: bool) -> str:
    if not labelled:
        return "n/a: unlabelled (no labels stored)"
    return "n/a" if accuracy is None else f"{accuracy:.2%} on this split (all views)"


def teacher_text(teacher: dict) -> str:
    text = str(teacher.get("spec"))
    if teacher.get("weights_name"):
        text += f" with {teacher['weights_name']}"
    if teacher.get("num_params"):
        text += f" ({teacher['num_params'] / 1e6:.2f}M params)"
    return text


def render_info(summary: dict) -> str:
    """`softlabels info`: one aligned `name  value` line per fact."""
    dataset, augment = summary["dataset"], summary["augment"]
    accuracy = summary["teacher_accuracy"]
    status = (
        "complete"
        if summary["complete"]
        else f"INCOMPLETE: {summary['rows_written']} of {summary['num_samples']} rows written (finish with --resume)"
    )
    views = "the plain image (no augmentation)"
    if augment.get("name", "none") != "none":
        views = f"{augment['name']} augmentation, {seeds_text(summary['view_seeds'])}"
    rows = [
        ("cache", f"{summary['path']} ({status})"),
        (
            "teacher",
            teacher_text(summary["teacher"])
            if summary.get("num_teachers", 1) == 1
            else "; ".join(
                f"{m['name']}: {teacher_text(m)}" + (f", {m['accuracy']:.2%}" if m["accuracy"] is not None else "")
                for m in summary["teachers"]
            ),
        ),
        ("dataset", f"{dataset.get('spec')} at {dataset.get('root')}"),
        ("split", str(summary["split"])),
        (
            "samples",
            f"{summary['num_samples']} x {summary['num_views']} view(s), {summary['num_classes']} classes"
            + ("" if summary.get("labelled", True) else ", unlabelled (no labels stored)"),
        ),
        ("classes", classes_text(summary["classes"]) or "none recorded"),
        ("views", views),
        ("storage", storage_text(summary)),
        (
            "size",
            f"{human_size(summary['size_bytes'])} ({summary['bytes_per_sample']:.0f} bytes/sample, "
            f"{summary['bytes_per_view']:.0f} bytes/view)",
        ),
        ("teacher acc.", accuracy_text(accuracy, summary.get("labelled", True))),
        ("preprocess", input_text(summary["preprocessing"])),
        (
            "created",
            f"{summary['created']} by softlabels {summary['softlabels_version']} (format v{summary['format_version']})",
        ),
    ]
    if summary["shard"]:
        shard = summary["shard"]
        rows.append(
            ("shard", f"{shard.get('index')} of {shard.get('count')}: rows {shard.get('start')}..{shard.get('stop')}")
        )
    fingerprints = summary["fingerprints"]
    rows.append(("dataset fp", str(fingerprints["dataset"])))
    if fingerprints["shard_rows"]:
        rows.append(("shard fp", fingerprints["shard_rows"]))
    if fingerprints["teacher_weights"]:
        rows.append(("weights sha", fingerprints["teacher_weights"]))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


# ----------------------------------------------------------------------------- ls


def find_cache_files(root) -> list[Path]:
    """Files under `root` (recursively, sorted, not following links) named like caches or their partials."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory")
    found: list[Path] = []
    for folder, _, files in os.walk(root):
        found.extend(Path(folder) / name for name in files if CACHE_NAME.search(name))
    return sorted(found, key=lambda path: path.relative_to(root).parts)


def list_caches(root) -> tuple[list[dict], list[dict]]:
    """(one catalogue row per cache found under `root`, files skipped with the reason)."""
    rows, skipped = [], []
    for path in find_cache_files(root):
        name = str(path.relative_to(root))
        if not store.looks_like_cache(path):
            if path.name.endswith(store.PARTIAL_SUFFIX):
                rows.append(_unreadable_row(name, path, "cannot be opened: a build may be writing it"))
            else:
                skipped.append({"name": name, "reason": "not a softlabels cache"})
            continue
        try:
            rows.append(catalog_row(name, describe(path)))
        except (store.CacheError, OSError) as err:
            rows.append(_unreadable_row(name, path, str(err).replace(str(path), name)))
    return rows, skipped


def catalog_row(name: str, summary: dict) -> dict:
    dataset = summary["dataset"]
    status = "complete" if summary["complete"] else f"partial {summary['rows_written'] / summary['num_samples']:.0%}"
    if summary["shard"]:
        status += f", shard {summary['shard'].get('index')}/{summary['shard'].get('count')}"
    return {
        "name": name,
        "path": summary["path"],
        "complete": summary["complete"],
        "status": status,
        # a cache of several teachers names each (as info does), not only the first
        "teacher": " + ".join(short_spec(str(m.get("spec"))) for m in summary.get("teachers") or [summary["teacher"]]),
        "weights": summary["teacher"].get("weights_name") if summary.get("num_teachers", 1) == 1 else None,
        "dataset": short_spec(str(dataset.get("spec"))),
        "split": summary["split"],
        "num_samples": summary["num_samples"],
        "num_views": summary["num_views"],
        "num_classes": summary["num_classes"],
        "storage": storage_text(summary, short=True),
        "size_bytes": summary["size_bytes"],
        "teacher_accuracy": summary["teacher_accuracy"],
        "labelled": summary["labelled"],
        "fingerprint": summary["fingerprint"],
        "error": None,
    }


def _unreadable_row(name: str, path: Path, reason: str) -> dict:
    return {
        "name": name,
        "path": str(path),
        "complete": False,
        "status": "unreadable",
        "teacher": None,
        "weights": None,
        "dataset": None,
        "split": None,
        "num_samples": None,
        "num_views": None,
        "num_classes": None,
        "storage": None,
        "size_bytes": path.stat().st_size,
        "teacher_accuracy": None,
        "labelled": None,
        "fingerprint": None,
        "error": reason,
    }


def short_spec(spec: str) -> str:
    """`imagefolder:/data/x/cifar` -> `imagefolder:cifar`, `/m/nets.py:make` -> `nets.py:make`."""
    head, sep, tail = spec.partition(":")
    if sep and "/" not in head:  # imagefolder:PATH, torchvision:NAME
        return f"{head}:{Path(tail).name or tail}" if "/" in tail else spec
    head, sep, tail = spec.rpartition(":")
    if sep and "/" not in tail:  # FILE.py:FUNC
        return f"{Path(head).name}:{tail}"
    return Path(spec).name or spec


COLUMNS = (
    ("name", "NAME"),
    ("teacher", "TEACHER"),
    ("data", "DATASET/SPLIT"),
    ("num_samples", "N"),
    ("num_views", "V"),
    ("storage", "STORAGE"),
    ("size", "SIZE"),
    ("accuracy", "TEACHER ACC"),
    ("status", "STATUS"),
)


def render_table(rows: list[dict], skipped: list[dict]) -> str:
    """`softlabels ls`: an aligned table, then what was skipped."""
    if not rows:
        table = "no softlabels caches found"
    else:
        cells = [[title for _, title in COLUMNS]] + [_cells(row) for row in rows]
        widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
        table = "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in cells)
    notes = [f"{row['name']}: {row['error']}" for row in rows if row["error"]]
    if skipped:
        notes.append(
            f"skipped {len(skipped)} HDF5 file(s) that are not caches: "
            + ", ".join(item["name"] for item in skipped[:5])
            + (", ..." if len(skipped) > 5 else "")
        )
    return "\n".join([table, *notes])


def _cells(row: dict) -> list[str]:
    teacher = row["teacher"] or "?"
    if row["weights"]:
        teacher += f" ({row['weights']})"
    accuracy = row["teacher_accuracy"]
    values = {
        "name": row["name"],
        "teacher": teacher if row["status"] != "unreadable" else "?",
        "data": f"{row['dataset']}/{row['split']}" if row["dataset"] else "?",
        "num_samples": str(row["num_samples"] or "?"),
        "num_views": str(row["num_views"] or "?"),
        "storage": row["storage"] or "?",
        "size": human_size(row["size_bytes"]),
        "accuracy": "unlabelled" if row["labelled"] is False else "-" if accuracy is None else f"{accuracy:.2%}",
        "status": row["status"],
    }
    return [values[key] for key, _ in COLUMNS]
