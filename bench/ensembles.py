"""Several teachers in one cache: the shared CIFAR teachers alone and together, and students from them.

    .venv/bin/python -m bench.ensembles [--seeds 3]

Teachers: ../shared/teachers cifar_resnet20, 32, 44, 56 (the public checkpoints, trained on the
original CIFAR-10) and cifar_resnet56 fine-tuned on the JPEG copy. One `softlabels build` with five
`--teacher`s over the test split gives each member's accuracy and the ensembles' (mean-prob at T=1,
mean-logit). Students: small_cnn from the train-split cache of all five (mean-prob at T=4, the
trainer's default mix) against small_cnn from the best single teacher (the jpegft member, chosen
with `--ensemble teacher:...` on the same cache), 5,000 train / 2,000 test images, 10 epochs, 3 seeds.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from bench.common import (
    TEACHERS,
    cifar10_subset,
    grid_arguments,
    machine,
    run_grid,
    softlabels_build,
    summarise,
    table,
)
from softlabels import store
from softlabels.ensemble import Ensemble
from softlabels.ensemble.weighted import Weighted

MEMBERS = {
    "cifar_resnet20": "resnet20-12fca82f.th",
    "cifar_resnet32": "resnet32-d509ac18.th",
    "cifar_resnet44": "resnet44-014dd654.th",
    "cifar_resnet56": "resnet56-4bfd9763.th",
    "cifar_resnet56 (jpegft)": "cifar_resnet56-jpegft.pt",
}


def build(root: Path, split: str, out: Path) -> Path:
    members = []
    for name, file in MEMBERS.items():
        members += ["--teacher", name.split()[0], "--weights", str(TEACHERS / file)]
    return softlabels_build(out, "--dataset", f"imagefolder:{root}", "--split", split, *members)


def accuracy_rows(path: Path) -> list[list]:
    info = store.read_info(path)
    rows = store.Rows.concat([r for *_, r in store.iter_rows(path)])
    labels = np.concatenate([labels for _, _, labels, _ in store.iter_rows(path)])
    logits = rows.dense()[:, 0]  # (N, M, C): one view
    out = [[name, f"{100 * (logits[:, m].argmax(-1) == labels).mean():.2f}"] for m, name in enumerate(MEMBERS)]
    for kind in ("mean-prob", "mean-logit"):
        mixed = Ensemble.parse(kind, info.member_names).combine(logits)
        out.append([f"ensemble of all five, {kind}", f"{100 * (mixed.argmax(-1) == labels).mean():.2f}"])
    four = Ensemble(Weighted((0.25, 0.25, 0.25, 0.25, 0.0))).combine(logits)
    out.append(
        ["ensemble of the four public checkpoints, mean-prob", f"{100 * (four.argmax(-1) == labels).mean():.2f}"]
    )
    return out


def main():
    args = grid_arguments(__doc__, ("small_cnn",), seeds=3)
    root = cifar10_subset(500, 200)
    folder = Path(tempfile.gettempdir()) / "softlabels-bench-ensembles"
    folder.mkdir(exist_ok=True)
    test = build(root, "test", folder / "test-five.h5")
    train = build(root, "train", folder / "train-five.h5")
    common = ["--cache", train, "--epochs", 10, "--batch-size", 64, "--workers", 0, "--threads", 1]
    arms = {
        "from the ensemble (mean-prob at T=4)": ["--ensemble", "mean-prob"],
        "from the best single teacher (jpegft)": ["--ensemble", "teacher:4"],
    }
    runs = [("small_cnn", arm, seed, [*common, *extra]) for seed in range(args.seeds) for arm, extra in arms.items()]
    results = run_grid("ensembles", runs, fresh=args.fresh)
    print(f"machine: {machine()}")
    print("teachers on the 2,000-image CIFAR-10 JPEG test subset (one build, five --teacher):")
    print(table(["teacher", "test accuracy %"], accuracy_rows(test)))
    print(
        f"\nstudents: small_cnn, 5,000 train / 2,000 test images, 10 epochs, KD T=4 alpha=0.9, seeds "
        f"{list(range(args.seeds))}"
    )
    print(
        table(
            ["student", "targets", "test accuracy % (mean ± std)", "s/run"],
            summarise(results, ["small_cnn"], list(arms)),
        )
    )


if __name__ == "__main__":
    main()
