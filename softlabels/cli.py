"""`softlabels` command line: parses options, calls one library function, prints."""

from __future__ import annotations

import sys
import warnings

import click

from softlabels.build.config import BuildConfig, accuracy_text
from softlabels.clitools import (
    CleanErrors,
    StrictCommand,
    apply_config_file,
    common_options,
    declared_options,
    echo,
    echo_json,
    json_option,
    one_line_warning,
    require,
    session,
)
from softlabels.extras import install_hint
from softlabels.options import Choices, count, deferred
from softlabels.probes import DEFAULT_K, PROBES

# The library is imported inside each command, so `--help` and the commands that only read metadata
# (info, ls) start without torch.


@click.group(cls=CleanErrors, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="softlabels")
def main():
    """Build, check and inspect teacher-logit caches for knowledge distillation."""
    warnings.showwarning = one_line_warning


class BuildCommand(StrictCommand):
    """`build`, whose help ends with the augmentations and what each does (looked up when shown)."""

    def format_help_text(self, ctx, formatter):
        super().format_help_text(ctx, formatter)
        formatter.write_paragraph()
        with formatter.indentation():
            formatter.write_text("\b\n" + _augment_help())


def _augment_help() -> str:
    from softlabels.views import AUGMENTS, MIXES

    lines = [f"  {name}: {aug.description}" for name, aug in AUGMENTS.items()]
    lines += [
        f"  BASE+{kind}[:A]: {kind} (Beta(A, A), A={alpha:g} by default) of the BASE view with a random "
        f"partner sample's, labelled by the teacher (train with --alpha 1)"
        for kind, alpha in MIXES.items()
    ]
    lines.append("  FILE.py:NAME: your own Augment subclass, or a function returning a torchvision v2 pipeline")
    return "\n".join(["Augmentations (parameters drawn per view from --seed and the sample key):", *lines])


@main.command(cls=BuildCommand)
@declared_options(BuildConfig)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    help="Options from a JSON (or YAML) file; flags given here win.",
)
@json_option
@common_options()
def build(config_file, as_json, **options):
    """Run a teacher once over a dataset and write its logits to an HDF5 cache.

    SIGTERM or SIGUSR1 (a cluster's pre-emption) stops the pass at the next block, keeping every row
    written (exit status 75); Ctrl-C stops it at once (130). Rerun with --resume either way.
    """
    options = apply_config_file(click.get_current_context(), options, config_file, BuildConfig)
    require(options, "dataset", "out")
    from softlabels.build import build_cache
    from softlabels.build.shards import parse_shard
    from softlabels.runtime import current_rank

    if isinstance(options["shard"], str):
        options["shard"] = parse_shard(options["shard"])
    config = BuildConfig.from_options(**options, progress=session().show_progress)
    result = build_cache(config)
    if not current_rank().is_main:
        return
    if as_json:
        echo_json({"ok": True, **result.to_dict()})
        return
    from softlabels import store

    accuracy = accuracy_text(result.teacher_accuracy, store.read_info(result.path).layout)
    if result.already_complete:
        echo(
            f"{result.path} is already complete ({result.num_samples} samples x {result.num_views} view(s), "
            f"{accuracy}): nothing to resume"
        )
        return
    echo(
        f"wrote {result.path}: {result.num_samples} samples x {result.num_views} view(s), "
        f"{accuracy}, {result.images_per_second:.0f} "
        f"{'views' if result.num_views > 1 else 'images'}/s"
        + (f" (resumed at sample {result.resumed_from})" if result.resumed_from else "")
    )


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@json_option
@common_options()
def info(file, as_json):
    """Summarise a cache (a path, or a URL read through fsspec): teacher, dataset, split, classes, views,
    storage, size, accuracy, provenance, fingerprints."""
    from softlabels.catalog import describe, render_info

    summary = describe(file)
    if as_json:
        echo_json(summary)
    else:
        echo(render_info(summary))


@main.command("ls")
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@json_option
@common_options()
def ls_(directory, as_json):
    """List the caches under DIRECTORY (recursively): one row each, with partial builds as incomplete.

    Files named *.h5 / *.hdf5 (and their .partial and torchrun .shard-R-of-W files) are opened;
    HDF5 files that are not softlabels caches are skipped and counted.
    """
    from softlabels.catalog import list_caches, render_table

    rows, skipped = list_caches(directory)
    if as_json:
        echo_json({"caches": rows, "skipped": skipped})
    else:
        echo(render_table(rows, skipped))


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="Folder for report.md, report.json and the PNG plots [default: ./NAME-inspect for a cache NAME.h5].",
)
@click.option(
    "--temperature",
    "-t",
    "temperatures",
    multiple=True,
    type=click.FloatRange(min=0, min_open=True),
    default=(1.0, 2.0, 4.0),
    help="Temperatures whose soft targets to describe (repeat the option).",
)
@click.option(
    "--max-samples",
    default=50_000,
    type=count(1),
    help="Use at most this many samples (evenly spaced rows; also capped at 32M logits).",
)
@click.option("--bins", default=15, type=count(2), help="Confidence bins of the reliability diagrams and ECE.")
@click.option(
    "--probe",
    "probes",
    multiple=True,
    type=click.Choice(PROBES),
    help=f"Also score the stored outputs (view 0) as features without a classifier: knn (cosine, k={DEFAULT_K}) "
    "and/or linear (ridge), fit on the even sampled rows and scored on the odd ones.",
)
@common_options()
def inspect(file, out, temperatures, max_samples, bins, probes):
    """Report what the teacher knows: accuracy per class, confusions, confidence, calibration and the
    temperature that fits it best, top-k mass, view agreement, soft-target entropy (PNG + markdown + JSON)."""
    from pathlib import Path

    from softlabels.report.inspect import InspectConfig, inspect_cache

    out = Path(out) if out else Path(Path(file).name.split(".")[0] + "-inspect")
    config = InspectConfig(tuple(temperatures), max_samples, bins, session().show_progress, tuple(probes))
    report = inspect_cache(file, out, config)
    echo(_inspect_line(report))
    echo(f"wrote {out / 'report.md'}, report.json and {len(report['plots'])} plots")


def _inspect_line(report: dict) -> str:
    """The summary line of `inspect`: the teacher scored against labels, or what needs none."""
    embedding = report.get("embedding") or {}
    probes = "".join(f"embedding {k} {v:.2%}, " for k, v in embedding.items() if k.startswith("probe_"))
    if "accuracy" not in report:
        said = ["no labels: accuracy needs a labelled cache"] if not report["labelled"] else []
        if report.get("predictions"):
            said.append(f"mean confidence {report['predictions']['confidence']['mean']:.3f}")
        if embedding:
            said.append(
                f"{probes}embedding dimension {embedding['dimension']}, mean norm {embedding['norm']['mean']:.3g}"
            )
        return "; ".join(said)
    calibration = report["calibration"]
    scored = "".join(f"{k} {v:.2%}, " for k, v in (report["probes"] or {}).items() if k.startswith("probe_"))
    return (
        f"accuracy {report['accuracy']['accuracy']:.2%}, {scored}{probes}ECE {calibration['at_1']['ece']:.2%} at T=1, "
        f"best temperature {calibration['fitted']['temperature']:.2f} (ECE {calibration['fitted']['ece']:.2%}"
        + (", end of the searched range)" if calibration["fitted"]["at_limit"] else ")")
    )


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--dataset",
    help="Also check that these are the samples the cache was built on (keys and labels; "
    "says which were added, removed, renamed or relabelled). Same specs as `build --dataset`.",
)
@click.option("--split", help="Split of --dataset [default: the cache's].")
@click.option("--data-root", default="data", type=click.Path(file_okay=False), help="Root of the built-in datasets.")
@click.option(
    "--content/--no-content",
    default=True,
    help="With --dataset: also hash every sample's source bytes and compare them with the digests the "
    "build recorded (names the files whose content changed).",
)
@click.option(
    "--recompute",
    type=count(1),
    metavar="N",
    help="Re-run the teacher on N random samples and "
    "compare with the stored targets (tolerance: 2% of a view's largest logit for float16 or AMP "
    "builds, else 0.5%). Images come from --dataset, else from where the cache says.",
)
@click.option("--teacher", help="Teacher for --recompute [default: the one recorded in the cache].")
@click.option("--weights", type=click.Path(dir_okay=False), help="Its checkpoint [default: the recorded path].")
@click.option("--trust-checkpoint", is_flag=True, help="Allow full unpickling of --weights (runs code from the file).")
@click.option("--device", default="auto", help="Device for --recompute: auto, cpu, cuda or cuda:INDEX.")
@click.option("--seed", default=0, type=int, help="Seed that picks the --recompute samples.")
@json_option
@common_options()
def verify(file, as_json, **options):
    """Check structure, completeness, block checksums and fingerprint; with --dataset, that the samples
    (keys, labels and content) are the ones the cache was built on; with --recompute N, that the teacher
    reproduces N of them. Non-zero exit on any problem."""
    from softlabels.audit import VerifyConfig, verify_cache

    report = verify_cache(VerifyConfig(path=file, progress=session().show_progress, **options))
    if as_json:
        echo_json(report.to_dict())
    for line in report.lines:
        echo(line)


@main.command()
@click.argument("caches", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Merged cache to write.")
@click.option(
    "--kind",
    type=click.Choice(("auto", "rows", "views", "teachers")),
    default="auto",
    help="rows: shards of the samples (from `build --shard I/N`); views: extra views of the same "
    "samples (builds with other --seed values); teachers: other teachers' outputs on the same samples and "
    "views; auto: rows when every input is a shard, else views.",
)
@click.option("--teachers", is_flag=True, help="The same as --kind teachers.")
@click.option("--overwrite", is_flag=True, help="Replace an existing cache at --out.")
@json_option
@common_options()
def merge(caches, out, kind, teachers, overwrite, as_json):
    """Merge caches of one dataset into one self-contained cache.

    \b
    Row shards:  softlabels merge part0.h5 part1.h5 --out all.h5
    View sets:   softlabels merge views-seed0.h5 views-seed1.h5 --out more-views.h5
    Teachers:    softlabels merge --teachers r56.h5 r20.h5 --out ensemble.h5
    View sets keep the inputs' order (the first file's views come first) and record each view's seed;
    teachers keep it too (the first file's teacher is member 0). Anything inconsistent (teacher, data,
    preprocessing, augmentation, storage, view parameters, repeated seeds, missing or overlapping
    rows) is refused.
    """
    from softlabels import store
    from softlabels.build.shards import merge as merge_any

    kind, path = merge_any(
        list(caches), out, kind="teachers" if teachers else kind, overwrite=overwrite, progress=session().show_progress
    )
    info = store.read_info(path)
    if as_json:
        echo_json(
            {
                "ok": True,
                "kind": kind,
                "path": str(path),
                "inputs": list(caches),
                "num_samples": info.layout.num_samples,
                "num_views": info.layout.num_views,
                "num_teachers": info.layout.num_teachers,
                "teacher_accuracy": info.teacher_accuracy,
            }
        )
        return
    what = {"rows": "shard(s)", "views": "view set(s)", "teachers": "teacher cache(s)"}[kind]
    echo(
        f"merged {len(caches)} {what} into {path}: {info.layout.num_samples} samples x "
        f"{info.layout.num_views} view(s), {accuracy_text(info.teacher_accuracy, info.layout)}"
    )


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--format",
    "format_",
    type=Choices(deferred("softlabels.export:FORMATS")),
    default="npz",
    help="npz: numpy arrays; parquet: one row per sample, loadable with Hugging Face "
    "datasets.load_dataset('parquet', ...) (" + install_hint("parquet") + ").",
)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="File to write.")
@click.option(
    "--keep-topk",
    is_flag=True,
    help="Caches built with --topk K: write the stored arrays (topk_values/topk_indices/topk_logsumexp, or "
    "quant8_*) instead of dense (N, V, C) logits.",
)
@click.option("--compress", is_flag=True, help="Compress the arrays (npz: np.savez_compressed; parquet: zstd).")
@click.option("--overwrite", is_flag=True, help="Replace an existing file at --out.")
@json_option
@common_options()
def export(file, format_, out, keep_topk, compress, overwrite, as_json):
    """Write a cache as plain arrays: keys, labels, classes, float32 logits (N, V, C), view parameters,
    sample digests and the metadata as JSON. npz: read it with np.load(PATH) (no pickle needed);
    parquet: one row per sample, the metadata in the file's schema (key `softlabels`)."""
    from softlabels.export import ExportConfig, export_cache

    config = ExportConfig(format_, keep_topk, compress, overwrite, session().show_progress)
    result = export_cache(file, out, config)
    if as_json:
        echo_json({"ok": True, **result})
    else:
        echo(f"wrote {result['path']} ({result['rows']} samples, {result['bytes'] / 2**20:.1f} MiB)")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
