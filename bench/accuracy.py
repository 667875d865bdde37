"""Accuracy: labels vs hard teacher labels vs cached KD (T x alpha grid) vs online KD, on CIFAR-10.

    .venv/bin/python -m bench.accuracy            # the CPU budget stated in the printed settings
    .venv/bin/python -m bench.accuracy --full     # all 50k images, 60 epochs, 3 seeds: for a GPU

Teacher: cifar_resnet56 fine-tuned on the JPEG copy (../shared). Students: small_cnn, cifar_resnet20.
Same data, schedule (SGD, one-cycle, batch 64) and seeds for every arm; no augmentation, so cached
targets are exactly consistent with what the student sees. Results accumulate in
data/bench/accuracy/results.jsonl (rerun to continue; --fresh to start again).
"""

from __future__ import annotations

from bench.common import (
    JPEGFT,
    cifar10_jpeg,
    cifar10_subset,
    ensure_cache,
    grid_arguments,
    machine,
    run_grid,
    summarise,
    table,
)
from trainer.losses import DEFAULT_ALPHA, DEFAULT_TEMPERATURE

# Per student: (train images per class, test images per class, epochs, temperatures, alphas)
BUDGET = {"small_cnn": (500, 200, 10, (1, 2, 4), (0.5, 0.9)), "cifar_resnet20": (200, 200, 8, (1, 2, 4), (0.5,))}
FULL = {"small_cnn": (5000, 1000, 60, (1, 2, 4), (0.5, 0.9)), "cifar_resnet20": (5000, 1000, 60, (1, 2, 4), (0.5, 0.9))}


def student_runs(student: str, budget, seeds) -> list[tuple]:
    per_class, per_test, epochs, temperatures, alphas = budget
    root = cifar10_jpeg() if per_class >= 5000 else cifar10_subset(per_class, per_test)
    cache = ensure_cache(root, f"r56ft-{per_class}-{per_test}")
    common = ["--epochs", epochs, "--batch-size", 64, "--workers", 0, "--threads", 1]
    data = ["--dataset", f"imagefolder:{root}"]
    arms = {"ce (labels)": [*data, "--loss", "ce"], "hard (teacher arg-max)": ["--cache", cache, "--loss", "hard"]}
    for t, a in [(t, a) for t in temperatures for a in alphas] + [(DEFAULT_TEMPERATURE, DEFAULT_ALPHA)]:
        arms[f"cached kd T={t:g} a={a:g}"] = ["--cache", cache, "--loss", "kd", "--temperature", t, "--alpha", a]
    arms["online kd (defaults)"] = [
        *data,
        "--teacher",
        "cifar_resnet56",
        "--weights",
        JPEGFT,
        "--loss",
        "kd",
        "--temperature",
        DEFAULT_TEMPERATURE,
        "--alpha",
        DEFAULT_ALPHA,
    ]
    return [(student, arm, seed, [*args, *common]) for seed in seeds for arm, args in arms.items()]


def main():
    args = grid_arguments(__doc__, BUDGET, seeds=2)
    budgets = FULL if args.full else BUDGET
    seeds = list(range(3 if args.full and args.seeds == 2 else args.seeds))
    runs = [run for student in args.students for run in student_runs(student, budgets[student], seeds)]
    results = run_grid("accuracy-full" if args.full else "accuracy", runs, fresh=args.fresh)
    arms = list(dict.fromkeys(arm for _, arm, _, _ in runs))
    print(f"machine: {machine()}")
    for student in args.students:
        per_class, per_test, epochs, _, _ = budgets[student]
        print(
            f"settings {student}: {10 * per_class} train / {10 * per_test} test CIFAR-10 JPEG images, "
            f"{epochs} epochs, SGD one-cycle peak 0.05, batch 64, gradient norm clipped at 2, no augmentation, "
            f"seeds {seeds}; online kd at the defaults T={DEFAULT_TEMPERATURE:g}, alpha={DEFAULT_ALPHA:g}"
        )
    print(table(["student", "arm", "test accuracy % (mean ± std)", "s/run"], summarise(results, args.students, arms)))


if __name__ == "__main__":
    main()
