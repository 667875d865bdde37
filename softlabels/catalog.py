"""What is in a cache, for people: `softlabels info` (and later `ls`)."""
from __future__ import annotations

import os
from pathlib import Path

from softlabels import format as fmt


def describe(path) -> dict:
    """A JSON-able summary of one cache: provenance, shapes, storage, size and accuracy."""
    info = fmt.read_info(path)
    layout = info.layout
    size = os.path.getsize(path)
    teacher_accuracy = info.attrs.get("teacher_accuracy")
    return {
        "path": str(Path(path)),
        "complete": info.complete,
        "format_version": info.attrs.get("format_version"),
        "created": info.attrs.get("created"),
        "softlabels_version": info.attrs.get("softlabels_version"),
        "teacher": info.teacher,
        "dataset": {k: v for k, v in info.dataset.items() if k != "classes"},
        "classes": info.dataset.get("classes", []),
        "num_samples": layout.num_samples,
        "num_classes": layout.num_classes,
        "num_views": layout.num_views,
        "storage": {"kind": layout.storage, "dtype": layout.dtype, "topk": layout.topk,
                    "compression": layout.compression},
        "augment": info.augment,
        "preprocessing": info.preprocessing,
        "size_bytes": size,
        "bytes_per_sample": size / layout.num_samples,
        "bytes_per_view": size / (layout.num_samples * layout.num_views),
        "teacher_accuracy": teacher_accuracy,
        "fingerprint": info.fingerprint,
        "shard": info.shard or None,
    }


def human_size(num_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if num_bytes < 1024 or unit == "GiB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    return f"{num_bytes:.1f} TiB"


def render_info(summary: dict) -> str:
    teacher, dataset, storage = summary["teacher"], summary["dataset"], summary["storage"]
    kind = "full logits" if storage["kind"] == "logits" else f"top-{storage['topk']} logits + logsumexp"
    accuracy = summary["teacher_accuracy"]
    rows = [
        ("cache", f"{summary['path']} ({'complete' if summary['complete'] else 'INCOMPLETE'})"),
        ("teacher", f"{teacher.get('spec')}" + (f" with {teacher.get('weights_name')}" if teacher.get("weights_name") else "")
         + (f" ({teacher.get('num_params', 0) / 1e6:.2f}M params)" if teacher.get("num_params") else "")),
        ("dataset", f"{dataset.get('spec')} / {dataset.get('split')} at {dataset.get('root')}"),
        ("samples", f"{summary['num_samples']} x {summary['num_views']} view(s), {summary['num_classes']} classes"),
        ("augment", f"{summary['augment'].get('name', 'none')} (seed {summary['augment'].get('seed', 0)})"),
        ("storage", f"{kind}, {storage['dtype']}, compression {storage['compression']}"),
        ("size", f"{human_size(summary['size_bytes'])} ({summary['bytes_per_sample']:.0f} bytes/sample, "
                 f"{summary['bytes_per_view']:.0f} bytes/view)"),
        ("teacher acc.", "n/a" if accuracy is None else f"{accuracy:.2%} on this split"),
        ("preprocess", ", ".join(f"{k}={v}" for k, v in sorted(summary["preprocessing"].items()))),
        ("created", f"{summary['created']} by softlabels {summary['softlabels_version']} (format v{summary['format_version']})"),
        ("fingerprint", str(summary["fingerprint"])),
    ]
    if teacher.get("weights_sha256"):
        rows.append(("weights sha", teacher["weights_sha256"]))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
