"""`softlabels build` against the bare teacher forward loop, and against the loop a user would write.

    .venv/bin/python -m bench.build_throughput [--per-class 300] [--rounds 2] [--full]
    .venv/bin/python -m bench.build_throughput --imagenet [--images 300] [--rounds 3] [--device cuda]

CIFAR arm: the bare forward loop over the same DataLoader (goal: build >= 0.95 x bare).
ImageNet-sized arm (`--imagenet`): ResNet-18 teachers (`torchvision:resnet18`, `timm:resnet18`;
random weights saved to a local file: nothing downloads), 224 px with each model's own eval
transform, over ImageNet-sized JPEGs made from the shared CIFAR images (500x375, grain, quality 90),
against the user's loop: torchvision `ImageFolder` with the weights' own transform
(`ResNet18_Weights.DEFAULT.transforms()`, timm's `create_transform`), a `DataLoader` with the same
workers and batch size, channels_last, AMP on CUDA, logits kept on the host, torch's default threads
(goal: build >= 1.0 x; the build with its default threads, measured from the idle cores).
Arms alternate so drift on a shared machine hits both alike; prints the table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.common import JPEGFT, cifar10_jpeg, cifar10_subset, imagenet_sized_jpegs, machine, table
from softlabels.build import BuildConfig, TeacherInputs, build_cache, load_build_teachers, make_loader
from softlabels.data import open_dataset
from softlabels.options import default_workers
from softlabels.runtime import autocast, cpu_threads, prepare_model, resolve_device
from softlabels.views import Normalize, ViewPipeline


def bare_forward(config: BuildConfig) -> float:
    """Images/s of the teacher alone: same dataset, loader, device placement; logits fetched to host."""
    device = resolve_device(config.runtime.device)
    source = open_dataset(config.data.dataset, config.data.split)
    teacher = load_build_teachers(config, source)[0]
    model = prepare_model(teacher.model, device).eval()
    normalize = Normalize(teacher.input).to(device)
    loader = make_loader(TeacherInputs(source, ViewPipeline(teacher.input), 1, 0), range(len(source)), config, device)
    started = time.perf_counter()
    with torch.inference_mode(), cpu_threads(device, config.runtime.workers, config.runtime.threads):  # as the build
        for _, views, *_ in loader:
            images = views.flatten(0, 1).to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            with autocast(device, config.model.amp):
                model(normalize(images)).float().cpu()
    return len(source) / (time.perf_counter() - started)


def teachers(folder: Path) -> dict[str, tuple[str, Path, object, torch.nn.Module]]:
    """name -> (spec, local weights file, the user's transform, the model)."""
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


def user_loop(root: Path, transform, model, batch_size: int, workers: int, device: torch.device) -> float:
    """Images/s of a hand-written teacher pass: ImageFolder + the weights' transform + DataLoader."""
    import torchvision

    dataset = torchvision.datasets.ImageFolder(str(root / "train"), transform=transform)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers else None,
    )
    model = prepare_model(model, device).eval()
    outputs = []
    started = time.perf_counter()
    with torch.inference_mode():  # torch's default threads, as users write it (no thread setting)
        for images, _ in loader:
            images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            with autocast(device, True):
                outputs.append(model(images).float().cpu())
    return len(dataset) / (time.perf_counter() - started)


def imagenet_main(argv=None):
    parser = argparse.ArgumentParser(description="the ImageNet-sized arm of " + __doc__.splitlines()[0])
    parser.add_argument("--imagenet", action="store_true")
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    root = imagenet_sized_jpegs(args.images)
    device = resolve_device(args.device)
    folder = Path(tempfile.mkdtemp())
    rows = []
    for spec, (weights, transform, model) in teachers(folder).items():
        config = BuildConfig.from_options(
            dataset=f"imagefolder:{root}",
            teacher=spec,
            weights=str(weights),
            out=str(folder / "bench.h5"),
            batch_size=args.batch_size,
            workers=args.workers,
            device=args.device,
            overwrite=True,
            progress=False,
        )
        user, built = [], []
        for _ in range(args.rounds):
            user.append(user_loop(root, transform, model, args.batch_size, args.workers, device))
            built.append(build_cache(config).images_per_second)
        ratio = statistics.median(built) / statistics.median(user)
        rows.append(
            [
                spec,
                "user's loop (ImageFolder + weights' transform)",
                f"{statistics.median(user):.1f}",
                ", ".join(f"{v:.1f}" for v in user),
                "1.00",
            ]
        )
        rows.append(
            [
                spec,
                "softlabels build",
                f"{statistics.median(built):.1f}",
                ", ".join(f"{v:.1f}" for v in built),
                f"{ratio:.3f}",
            ]
        )
    print(f"machine: {machine()}")
    print(
        f"settings: {args.images} JPEGs 500x375 (q90), 224 px eval transforms, batch {args.batch_size}, "
        f"{args.workers} worker(s), device {device}, {args.rounds} alternating rounds, median; build stores float16"
    )
    print(table(["teacher", "arm", "images/s (median)", "runs", "ratio"], rows))


def main():
    import sys

    if "--imagenet" in sys.argv:
        return imagenet_main(sys.argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=300, help="training images per class (of 5000)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--full", action="store_true", help="all 50,000 training images")
    args = parser.parse_args()
    root = cifar10_jpeg() if args.full else cifar10_subset(args.per_class)
    out = Path(tempfile.mkdtemp()) / "bench.h5"
    config = BuildConfig.from_options(
        dataset=f"imagefolder:{root}",
        teacher="cifar_resnet56",
        weights=str(JPEGFT),
        out=str(out),
        batch_size=args.batch_size,
        overwrite=True,
        progress=False,
        **({"workers": args.workers} if args.workers is not None else {}),
    )
    bare, built = [], []
    for _ in range(args.rounds):
        bare.append(bare_forward(config))
        result = build_cache(config)
        built.append(result.images_per_second)
    n = result.num_samples
    ratio = statistics.median(built) / statistics.median(bare)
    print(f"machine: {machine()}")
    print(
        f"settings: cifar_resnet56 (jpegft), {n} CIFAR-10 JPEG train images, batch {config.runtime.batch_size}, "
        f"{config.runtime.workers} workers, float16 storage, {args.rounds} alternating rounds, median"
    )
    print(
        table(
            ["arm", "images/s (median)", "runs", "ratio"],
            [
                ["bare teacher forward", f"{statistics.median(bare):.0f}", ", ".join(f"{v:.0f}" for v in bare), "1.00"],
                [
                    "softlabels build",
                    f"{statistics.median(built):.0f}",
                    ", ".join(f"{v:.0f}" for v in built),
                    f"{ratio:.3f}",
                ],
            ],
        )
    )


if __name__ == "__main__":
    main()
