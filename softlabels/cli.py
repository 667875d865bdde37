"""`softlabels` command line: parses options, calls one library function, prints."""
from __future__ import annotations

import json
import sys

import click

from softlabels import format as fmt
from softlabels.clitools import CleanErrors, floats, int_range


@click.group(cls=CleanErrors, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="softlabels")
def main():
    """Build, check and inspect teacher-logit caches for knowledge distillation."""


def _augment_help() -> str:
    from softlabels.transforms import AUGMENTS

    lines = [f"  {name}: {aug.description}" for name, aug in AUGMENTS.items()]
    return "\n".join(["Augmentations (parameters drawn per view from --seed and the sample key):", *lines])


@main.command()
@click.option("--dataset", required=True, help="cifar10, cifar100, mnist, fashion-mnist, imagefolder:PATH or FILE.py:FUNC.")
@click.option("--split", default="train", help="Dataset split (train/test; a sub-folder for imagefolder).")
@click.option("--teacher", required=True, help="Zoo name (e.g. cifar_resnet56), torchvision:NAME, FILE.py:FUNC, or a TorchScript/.pt2 archive.")
@click.option("--weights", type=click.Path(dir_okay=False), help="Checkpoint to load into the teacher.")
@click.option("--trust-checkpoint", is_flag=True, help="Allow full unpickling of --weights (runs code from the file).")
@click.option("--num-classes", type=int_range(1), help="Teacher output classes [default: the dataset's class count].")
@click.option("--mean", type=floats, help="Normalisation mean R,G,B (or one value for grey) [default: teacher's, else dataset's].")
@click.option("--std", type=floats, help="Normalisation std R,G,B [default: teacher's, else dataset's].")
@click.option("--image-size", type=int_range(1), help="Teacher input size [default: teacher's, else dataset's].")
@click.option("--batch-size", default=128, type=int_range(1), help="Samples per teacher batch (each brings --views images).")
@click.option("--workers", type=int_range(0), help="DataLoader workers [default: cores - 1, at most 8].")
@click.option("--device", default="auto", help="auto, cpu, cuda or cuda:INDEX.")
@click.option("--amp/--no-amp", default=True, help="fp16 autocast on CUDA (ignored on CPU).")
@click.option("--dtype", type=click.Choice(fmt.DTYPES), default="float16", help="Stored logit precision.")
@click.option("--views", default=1, type=int_range(1), help="Augmented views per sample (needs --augment).")
@click.option("--augment", default="none", help="none, flip, cifar or imagenet (see below).")
@click.option("--seed", default=0, type=int, help="Seed of the view parameters.")
@click.option("--topk", type=int_range(1), help="Store only the K largest logits per view (plus the log-sum-exp).")
@click.option("--compression", type=click.Choice(fmt.COMPRESSIONS), default="none", help="HDF5 compression of the stored targets.")
@click.option("--block-rows", type=int_range(1), help="Rows per checksum/resume block [default: ~1024, a multiple of --batch-size].")
@click.option("--shard", "shard", metavar="I/N", help="Compute only shard I of N (contiguous rows) into --out; "
              "combine the shards with `softlabels merge`. Under torchrun the ranks shard by themselves.")
@click.option("--data-root", default="data", type=click.Path(file_okay=False), help="Root of the built-in datasets.")
@click.option("--download", is_flag=True, help="Let torchvision download a built-in dataset (needs a network).")
@click.option("--resume", is_flag=True, help="Continue the partial build of --out (or start one if none exists).")
@click.option("--overwrite", is_flag=True, help="Replace an existing cache or partial build at --out.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Cache file to write (HDF5).")
def build(**options):
    """Run a teacher once over a dataset and write its logits to an HDF5 cache."""
    from softlabels.build import BuildConfig, build_cache

    if options["workers"] is None:
        options.pop("workers")
    if options["shard"] is not None:
        from softlabels.shards import parse_shard

        options["shard"] = parse_shard(options["shard"])
    config = BuildConfig(**options)
    result = build_cache(config)
    from softlabels.runtime import current_rank

    if current_rank().is_main:
        click.echo(f"wrote {result.path}: {result.num_samples} samples x {result.num_views} view(s), "
                   f"teacher accuracy {result.teacher_accuracy:.2%}, {result.images_per_second:.0f} images/s"
                   + (f" (resumed at sample {result.resumed_from})" if result.resumed_from else ""))


build.help += "\n\n\b\n" + _augment_help()


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def info(file, as_json):
    """Summarise a cache: teacher, dataset, shapes, storage, accuracy, provenance."""
    from softlabels.catalog import describe, render_info

    summary = describe(file)
    click.echo(json.dumps(summary, indent=2, sort_keys=True) if as_json else render_info(summary))


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
def verify(file):
    """Check structure, completeness, block checksums and fingerprint; non-zero exit on any problem."""
    stats = fmt.verify(file)
    click.echo(f"ok: {file} ({stats.num_blocks} blocks verified, {stats.fingerprint[:19]}…)")


@main.command()
@click.argument("shards", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Merged cache to write.")
@click.option("--overwrite", is_flag=True, help="Replace an existing cache at --out.")
def merge(shards, out, overwrite):
    """Merge shard caches (from `build --shard I/N` jobs) into one self-contained cache."""
    from softlabels.shards import merge_caches

    path = merge_caches(list(shards), out, overwrite=overwrite)
    click.echo(f"merged {len(shards)} shard(s) into {path}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
