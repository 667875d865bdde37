"""`softlabels build` at its default threads against the teacher pass a user writes by hand.

    .venv/bin/python -m bench.build_throughput [--per-class 200] [--workers 2 1] [--rounds 5] [--threads 2]
    .venv/bin/python -m bench.build_throughput --imagenet [--images 300] [--workers 1] [--batch-size 64] [--rounds 5]

The user's loop is what one writes without thinking about threads: torchvision `ImageFolder` with the
model's transform, a `DataLoader` with the same batch size and workers (its other settings left at
torch's defaults), `model(images)` under `torch.inference_mode()`, logits kept on the host, torch's
default intra-op threads. The build runs with its defaults too (threads chosen by
`softlabels.threads`); its time includes writing, checksumming and re-verifying the cache.
CIFAR size: cifar_resnet56 (jpegft) over CIFAR-10 JPEGs, ToTensor + Normalize, batch 128.
ImageNet size (`--imagenet`): ResNet-18 teachers (`torchvision:resnet18`, `timm:resnet18`; random
weights saved to a local file: nothing downloads), each with its own eval transform, over JPEGs of
500x375 made from the shared CIFAR images (grain, quality 90), batch 64.
Arms alternate, several rounds, medians; `--threads N` adds the build with N threads as a third arm.
Goal: build >= 0.95 x the user's loop. Prints the load average before and after, and the table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from bench.common import JPEGFT, cifar10_jpeg, cifar10_subset, imagenet_sized_jpegs, machine, table
from softlabels.build import BuildConfig, build_cache, load_build_teachers
from softlabels.data import open_dataset
from softlabels.runtime import autocast, resolve_device

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def user_loop(root: Path, transform, model, batch_size: int, workers: int, device: torch.device) -> float:
    """Images/s of a hand-written teacher pass over root/train (dataset, loader and loop; model already built)."""
    import torchvision

    started = time.perf_counter()
    dataset = torchvision.datasets.ImageFolder(str(root / "train"), transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    outputs = []
    with torch.inference_mode():  # no thread setting: torch's default, as users write it
        for images, _ in loader:
            with autocast(device, True):  # mixed precision on CUDA only
                outputs.append(model(images.to(device)).float().cpu())
    return len(dataset) / (time.perf_counter() - started)


def build(config: BuildConfig) -> float:
    return build_cache(config).images_per_second


def compare(arms: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Images/s of each arm, the arms alternating round by round (drift on a shared machine hits all)."""
    runs: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(rounds):
        for name, arm in arms.items():
            runs[name].append(arm())
    return runs


def rows(label: str, runs: dict[str, list[float]], digits: int) -> list[list[str]]:
    """Table rows; the first arm (the user's loop) is the reference of each ratio."""
    reference = statistics.median(next(iter(runs.values())))
    return [
        [
            label,
            name,
            f"{statistics.median(values):.{digits}f}",
            ", ".join(f"{v:.{digits}f}" for v in values),
            f"{statistics.median(values) / reference:.3f}",
        ]
        for name, values in runs.items()
    ]


def arms(config: BuildConfig, root: Path, transform, model, threads: int | None) -> dict[str, Callable[[], float]]:
    """The user's loop (the reference), the build at its default threads, and with `threads` if given."""
    runtime, device = config.runtime, resolve_device(config.runtime.device)
    out = {
        "user's loop (torch's default threads)": partial(
            user_loop, root, transform, model, runtime.batch_size, runtime.workers, device
        ),
        "softlabels build (default threads)": partial(build, config),
    }
    if threads:
        out[f"softlabels build --threads {threads}"] = partial(build, config.replace(threads=threads))
    return out


def build_config(root: Path, teacher: str, weights: Path, folder: Path, args, workers: int) -> BuildConfig:
    """The build arm's options: the user loop's folder, teacher, batch size and workers."""
    return BuildConfig.from_options(
        dataset=f"imagefolder:{root}",
        teacher=teacher,
        weights=str(weights),
        out=str(folder / "bench.h5"),
        batch_size=args.batch_size,
        workers=workers,
        device=args.device,
        overwrite=True,
        progress=False,
    )


def load_average() -> str:
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def cifar_main(args) -> None:
    from torchvision import transforms

    root = cifar10_jpeg() if args.full else cifar10_subset(args.per_class)
    folder = Path(tempfile.mkdtemp())
    device = resolve_device(args.device)
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(CIFAR_MEAN, CIFAR_STD)])
    table_rows, count = [], 0
    for workers in args.workers:
        config = build_config(root, "cifar_resnet56", JPEGFT, folder, args, workers)
        source = open_dataset(config.data.dataset, config.data.split)
        count = len(source)
        model = load_build_teachers(config, source)[0].model.to(device).eval()
        runs = compare(arms(config, root, transform, model, args.threads), args.rounds)
        table_rows += rows(str(workers), runs, 0)
    print(f"machine: {machine()}")
    print(
        f"settings: cifar_resnet56 (jpegft), {count} CIFAR-10 JPEG train images, batch {args.batch_size}, "
        f"device {device}, float16 storage, {args.rounds} alternating rounds, median"
    )
    print(table(["workers", "arm", "images/s (median)", "runs", "ratio"], table_rows))


def teachers(folder: Path) -> dict[str, tuple[Path, object, torch.nn.Module]]:
    """spec -> (local weights file, the weights' own eval transform, the model)."""
    import timm
    import torchvision
    from timm.data import create_transform, resolve_data_config

    torch.manual_seed(0)
    out = {}
    tv = torchvision.models.get_model("resnet18", num_classes=10).eval()
    torch.save(tv.state_dict(), folder / "tv-resnet18.pt")
    out["torchvision:resnet18"] = (
        folder / "tv-resnet18.pt",
        torchvision.models.ResNet18_Weights.DEFAULT.transforms(),
        tv,
    )
    tm = timm.create_model("resnet18", num_classes=10).eval()
    torch.save(tm.state_dict(), folder / "timm-resnet18.pt")
    out["timm:resnet18"] = (folder / "timm-resnet18.pt", create_transform(**resolve_data_config({}, model=tm)), tm)
    return out


def imagenet_main(args) -> None:
    root = imagenet_sized_jpegs(args.images)
    device = resolve_device(args.device)
    folder = Path(tempfile.mkdtemp())
    table_rows = []
    chosen = {spec: t for spec, t in teachers(folder).items() if spec in args.teachers}
    for spec, (weights, transform, model) in chosen.items():
        model = model.to(device).eval()
        for workers in args.workers:
            config = build_config(root, spec, weights, folder, args, workers)
            runs = compare(arms(config, root, transform, model, args.threads), args.rounds)
            table_rows += rows(f"{spec}, {workers}", runs, 1)
    print(f"machine: {machine()}")
    print(
        f"settings: {args.images} JPEGs 500x375 (q90), 224 px eval transforms, batch {args.batch_size}, "
        f"device {device}, {args.rounds} alternating rounds, median; build stores float16"
    )
    print(table(["teacher, workers", "arm", "images/s (median)", "runs", "ratio"], table_rows))


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    imagenet = "--imagenet" in argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imagenet", action="store_true", help="ResNet-18 teachers on 500x375 JPEGs")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64 if imagenet else 128)
    parser.add_argument("--workers", type=int, nargs="+", default=[1] if imagenet else [2, 1])
    parser.add_argument("--threads", type=int, default=None, help="also the build with this many threads")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--per-class", type=int, default=200, help="CIFAR: training images per class (of 5000)")
    parser.add_argument("--full", action="store_true", help="CIFAR: all 50,000 training images")
    parser.add_argument("--images", type=int, default=300, help="ImageNet size: how many JPEGs")
    parser.add_argument(
        "--teachers", nargs="+", default=["torchvision:resnet18", "timm:resnet18"], help="ImageNet size: which"
    )
    args = parser.parse_args(argv)
    print(f"load average (1, 5, 15 min) before: {load_average()}")
    (imagenet_main if imagenet else cifar_main)(args)
    print(f"load average (1, 5, 15 min) after: {load_average()}")


if __name__ == "__main__":
    main()
