"""A foundation encoder with no classes: all-MiniLM-L6-v2's sentence embeddings distilled into the
bag-of-n-grams student with each loss from embeddings, probed against the teacher on Debian sections.

    .venv/bin/python -m bench.text_encoder [--per-class 1000] [--epochs 20] [--seeds 3] [--fresh]

The steps are the text example's (`examples/text/__main__.py`: `steps(...)["data"]`, then
`encoder_steps`): the Debian descriptions (`--per-class` train and test descriptions per section at
most; the default takes every one the package lists hold), the encoder's embeddings of both splits
cached with `softlabels build --targets embedding`, then the `ngrams` student trained from the cache
with `embed-cosine`, `embed-cosine-l1` and `embed-relational` (no labels), and from the labels alone
(`--loss ce`, for reference), `--seeds` seeds each, `--threads 1`, in this process. Every run ends with
`--probe knn --probe linear --probe-teacher` on the test split: the student's features and the
teacher's stored embeddings scored by the same probes (`softlabels.probes`: fit on the even rows,
scored on the odd rows), and the mean share of each test description's 10 cosine-nearest neighbours
the two agree on. Results go to data/bench/text_encoder/results.jsonl as they finish (a rerun skips
what is there; --fresh starts again; the caches are kept).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from bench.common import DATA, fit_in_process, machine, table, with_options
from examples.common import run_steps
from examples.text.__main__ import EMBED_LOSSES, TextConfig, dataset, encoder_steps, steps
from softlabels import store

OUT = DATA / "bench" / "text_encoder"
REFERENCE = "ce (labels, reference)"


def config(per_class: int, epochs: int) -> TextConfig:
    return TextConfig(
        root=str(OUT / "data"),
        out=str(OUT),
        train_per_class=per_class,
        test_per_class=per_class,
        student_epochs=epochs,
    )


def arms(c: TextConfig) -> dict[str, list[str]]:
    """{arm: `python -m trainer fit ...` argv}: one per loss from embeddings, and labels alone."""
    plan = encoder_steps(c)
    runs = {loss: plan[f"student-{loss}"] for loss in EMBED_LOSSES}
    first = runs[EMBED_LOSSES[0]]
    i = first.index("--cache")
    runs[REFERENCE] = [*first[:i], "--dataset", dataset(), *first[i + 2 :]]  # the same fit, from the labels
    runs[REFERENCE][runs[REFERENCE].index("--loss") + 1] = "ce"
    return runs


def prepare(c: TextConfig) -> None:
    """The data and both caches, once."""
    if (OUT / "encoder-test.h5").exists():
        return
    plan = encoder_steps(c)
    started = time.perf_counter()
    seconds = run_steps({"data": steps(c)["data"], "encoder-cache": plan["encoder-cache"],
                         "encoder-test-cache": plan["encoder-test-cache"]})  # fmt: skip
    print(f"data and caches in {time.perf_counter() - started:.0f} s ({seconds})", flush=True)


def run(c: TextConfig, seeds: int, log) -> None:
    done = set()
    if log.exists():
        done = {(r["arm"], r["seed"]) for r in map(json.loads, log.read_text().splitlines())}
    for seed in range(seeds):
        for arm, argv in arms(c).items():
            if (arm, seed) in done:
                continue
            folder = OUT / "runs" / f"{arm.split()[0]}-{seed}"
            started = time.perf_counter()
            summary = fit_in_process(with_options(argv, seed=seed, out=folder, threads=1))
            record = {"arm": arm, "seed": seed, "seconds": round(time.perf_counter() - started, 1)}
            record.update({k: v for k, v in summary.items() if k.startswith("probe_")})
            record["train_seconds"] = summary["wall_seconds"]
            print(f"{arm} seed {seed}: {record}", flush=True)
            with log.open("a") as out:
                out.write(json.dumps(record) + "\n")


def spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def rows(results: list[dict]) -> list[list]:
    out = []
    for arm in (*EMBED_LOSSES, REFERENCE):
        hits = list({r["seed"]: r for r in results if r["arm"] == arm}.values())
        if not hits:
            continue

        def values(name, hits=hits):
            return [r[name] for r in hits]

        out.append(
            [
                arm,
                spread(values("probe_linear")),
                spread(sorted(set(values("probe_teacher_linear")))),  # the same stored embeddings every run
                spread(values("probe_nn_overlap")),
                spread(values("probe_knn")),
                spread(sorted(set(values("probe_teacher_knn")))),
                f"{statistics.mean(values('train_seconds')):.0f} / {statistics.mean(values('seconds')):.0f}",
                len(hits),
            ]
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=1000, help="train and test descriptions per section, at most")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--fresh", action="store_true", help="forget earlier student results (the caches are kept)")
    args = parser.parse_args()
    c = config(args.per_class, args.epochs)
    OUT.mkdir(parents=True, exist_ok=True)
    log = OUT / "results.jsonl"
    if args.fresh:
        log.unlink(missing_ok=True)
    prepare(c)
    run(c, args.seeds, log)
    train, test = (store.read_info(OUT / name).layout.num_samples for name in ("encoder.h5", "encoder-test.h5"))
    print(f"\nmachine: {machine()}")
    print(
        f"settings: {train} train / {test} test descriptions ({args.per_class} per section at most), student "
        f"ngrams {args.epochs} epochs, AdamW lr 0.01, no weight decay, batch 64, --threads 1, seeds 0-{args.seeds - 1}"
    )
    header = ["loss", "student linear probe %", "teacher linear probe %", "10-NN overlap %", "student k-NN %",
              "teacher k-NN %", "s/run (train / all)", "seeds"]  # fmt: skip
    print(table(header, rows([json.loads(line) for line in log.read_text().splitlines()])))


if __name__ == "__main__":
    main()
