"""Students per GB: the training footprint of each zoo student (`trainer.memory`), the numbers a
shared-stream sweep's memory check adds up.

    .venv/bin/python -m bench.memory [--batch-size 128] [--image-size 32] [--classes 10] [--optimizer sgd]

Weights, gradients and optimizer state are counted; activations are the bytes autograd saves for the
backward pass in a probe step at batch 2, scaled to the batch size (float32: fp16 autocast on CUDA
saves about half). Not counted: the loader's batches, the allocator's slack, CUDA's context.
"""

from __future__ import annotations

import argparse

from bench.common import machine, table
from softlabels.models.preprocessing import Preprocessing
from softlabels.models.zoo import list_models
from trainer.memory import per_gb, student_footprint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--optimizer", default="sgd")
    args = parser.parse_args()
    prep = Preprocessing((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), args.image_size)
    rows = []
    for spec in sorted(list_models(), key=lambda s: (s.rstrip("0123456789"), len(s), s)):
        footprint = student_footprint(spec, prep, args.classes, args.batch_size, args.optimizer)
        mb = [v / 2**20 for v in (footprint.params, footprint.grads + footprint.optimizer, footprint.activations)]
        rows.append([spec, *(f"{v:.1f}" for v in mb), f"{footprint.total / 2**20:.1f}", f"{per_gb(footprint):.1f}"])
    print(f"machine: {machine()}")
    print(
        f"settings: 3x{args.image_size}x{args.image_size} images, {args.classes} classes, batch {args.batch_size}, "
        f"{args.optimizer}, float32"
    )
    header = ["student", "weights MB", "grads + optimizer MB", "activations MB", "total MB", "students per GiB"]
    print(table(header, rows))


if __name__ == "__main__":
    main()
