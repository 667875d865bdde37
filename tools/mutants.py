"""`make mutants`: hand-written mutants of the core, each run against the tests that should kill it.

A mutant is one source edit (replace `old`, which must occur exactly once, with `new` in `file`)
that breaks a promise: replay and the view schedule, sampler offsets, store reads and checksums,
losses and their defaults, input resolution, views per decode, online KD, ensembles. Each runs in a
COPY of the tree (a temporary folder; the repository is never edited) against the test files it
names (the suite's fast tests that cover that code), and is killed when a test fails. Every mutant
must be killed: a survivor means the suite would pass with that promise broken.

    python tools/mutants.py                 # all of them; exit 1 if any survives
    python tools/mutants.py --only kd-t2    # some, by name (repeat --only)
    python tools/mutants.py --list          # names and what each breaks
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    breaks: str


REPLAY = ("tests/invariants/test_replay_matrix.py", "tests/softlabels/test_replay.py")
RESUME = ("tests/invariants/test_resume_matrix.py", "tests/softlabels/test_replay.py")
STORE = ("tests/softlabels/test_format.py", "tests/softlabels/test_reader.py", "tests/invariants/test_verify_matrix.py")
LOSSES = ("tests/trainer/test_losses.py", "tests/trainer/test_cli.py")
INPUTS = ("tests/softlabels/models/test_inputs.py",)
ENSEMBLES = ("tests/softlabels/test_ensembles.py", "tests/invariants/test_replay_matrix.py")

MUTANTS = (
    # ------------------------------------------------------------------ replay and the view schedule
    Mutant(
        "schedule-ignores-epoch",
        "softlabels/replay.py",
        "return int(self.order[index, epoch % self.num_views])",
        "return int(self.order[index, 0])",
        REPLAY,
        "every epoch replays the same view of a sample",
    ),
    Mutant(
        "set-epoch-ignored",
        "softlabels/replay.py",
        "index, epoch = int(item), epoch or 0",
        "index, epoch = int(item), 0",
        REPLAY,
        "Cache.dataset ignores set_epoch",
    ),
    Mutant(
        "replay-plain-view",
        "softlabels/views/replay.py",
        "return pipeline.view(x, rows.params if rows.params is not None else ())",
        "return pipeline.view(x, rows.params * 0 if rows.params is not None else ())",
        REPLAY,
        "replay makes the view of all-zero parameters, not the stored ones",
    ),
    Mutant(
        "per-decode-one-view",
        "softlabels/replay.py",
        "made = [self._one(index, rows.view(v), x, epoch) for v in views]",
        "made = [self._one(index, rows.view(views[0]), x, epoch) for v in views]",
        REPLAY,
        "R views of one decode are R copies of the first",
    ),
    Mutant(
        "targets-of-view-0",
        "softlabels/replay.py",
        "rows = self.targets.rows(index).view(view)  # one read",
        "rows = self.targets.rows(index).view(0)  # one read",
        REPLAY,
        "the served targets (and pixels) are view 0's whatever the schedule says",
    ),
    Mutant(
        "rows-view-keeps-params-of-view-0",
        "softlabels/store/rows.py",
        "None if self.params is None else self.params[view],",
        "None if self.params is None else self.params[0],",
        REPLAY,
        "a view's parameters are view 0's: pixels of another view than the targets",
    ),
    # ------------------------------------------------------------------ sampler offsets
    Mutant(
        "sampler-ignores-start",
        "softlabels/replay.py",
        "for position in order[self.start :].tolist():",
        "for position in order.tolist():",
        RESUME,
        "a resumed epoch replays the items already trained on",
    ),
    Mutant(
        "sampler-per-decode-slots",
        "softlabels/replay.py",
        "slots = range(self.epoch * self.per_decode, (self.epoch + 1) * self.per_decode)",
        "slots = range(self.epoch, self.epoch + self.per_decode)",
        REPLAY,
        "views per decode repeat views across epochs instead of covering all V once per V / R epochs",
    ),
    Mutant(
        "sampler-same-order-every-epoch",
        "softlabels/replay.py",
        "np.random.default_rng([int(self.seed), self.epoch]).permutation(count)",
        "np.random.default_rng([int(self.seed), 0]).permutation(count)",
        ("tests/softlabels/test_replay.py",),
        "every epoch shuffles the same way",
    ),
    # ------------------------------------------------------------------ store reads and checksums
    Mutant(
        "checksums-not-compared",
        "softlabels/store/files.py",
        "if digest != stored_digest(file, block, table):",
        "if digest != digest:",
        STORE,
        "a damaged block reads as good",
    ),
    Mutant(
        "lazy-blocks-unchecked",
        "softlabels/store/reader.py",
        "if not flags[block]:",
        "if False:",
        ("tests/softlabels/test_reader.py", "tests/softlabels/test_faults.py"),
        "rows read lazily (large caches) skip their block's checksum",
    ),
    Mutant(
        "quant8-floor",
        "softlabels/store/modes/quant8.py",
        "q = torch.round((top.float() - values) / step.float())",
        "q = torch.floor((top.float() - values) / step.float())",
        ("tests/softlabels/test_format.py",),
        "quant8 loses up to a whole step, not half",
    ),
    Mutant(
        "topk-tail-mass",
        "softlabels/store/modes/topk.py",
        "out[...] = lse + np.log(tail_mass / (num_classes - k))",
        "out[...] = lse + np.log(tail_mass)",
        ("tests/softlabels/test_format.py", "tests/softlabels/test_reader.py"),
        "top-k expansion gives the tail the wrong mass",
    ),
    Mutant(
        "fingerprint-ignores-labels",
        "softlabels/store/schema.py",
        'digest.update(f"{key}\\t{text}\\n".encode())',
        'digest.update(f"{key}\\n".encode())',
        ("tests/softlabels/test_format.py", "tests/softlabels/test_faults.py", "tests/softlabels/test_api.py"),
        "relabelled samples keep the cache's fingerprint",
    ),
    Mutant(
        "content-digest-unchecked",
        "softlabels/replay.py",
        "if digest != np.asarray(stored, dtype=np.uint8).tobytes():",
        "if False:",
        ("tests/softlabels/test_promises.py", "tests/softlabels/test_faults.py"),
        "--check-content lets changed samples through",
    ),
    # ------------------------------------------------------------------ losses and their defaults
    Mutant(
        "default-temperature",
        "trainer/losses/kd.py",
        "DEFAULT_TEMPERATURE = 4.0",
        "DEFAULT_TEMPERATURE = 3.0",
        LOSSES,
        "the documented default T=4 changes",
    ),
    Mutant(
        "default-alpha",
        "trainer/losses/kd.py",
        "DEFAULT_ALPHA = 0.9",
        "DEFAULT_ALPHA = 0.8",
        LOSSES,
        "the documented default alpha=0.9 changes",
    ),
    Mutant(
        "default-clip",
        "trainer/options.py",
        "clip_grad_norm: float = option(\n        2.0,",
        "clip_grad_norm: float = option(\n        1.0,",
        LOSSES,
        "the default gradient clip of 2 changes",
    ),
    Mutant(
        "kd-t2",
        "trainer/losses/kd.py",
        "loss = loss + alpha * temperature**2 * kl",
        "loss = loss + alpha * kl",
        LOSSES,
        "KD loses its T^2 factor",
    ),
    Mutant(
        "kd-direction",
        "trainer/losses/kd.py",
        "kl = F.kl_div(log_p_student, log_p_teacher,",
        "kl = F.kl_div(log_p_teacher, log_p_student,",
        LOSSES,
        "KL(student || teacher) instead of KL(teacher || student)",
    ),
    Mutant(
        "hard-uses-labels",
        "trainer/losses/hard.py",
        "return F.cross_entropy(student_logits.float(), teacher_logits.argmax(dim=-1),",
        "return F.cross_entropy(student_logits.float(), teacher_logits.argmin(dim=-1),",
        ("tests/trainer/test_losses.py", "tests/trainer/test_loop.py"),
        "--loss hard trains on another class than the teacher's arg-max",
    ),
    # ------------------------------------------------------------------ input resolution
    Mutant(
        "mean-std-flags-ignored",
        "softlabels/models/inputs.py",
        'chosen.update({key: value for key, value in {"mean": mean, "std": std}.items() if value is not None})',
        "pass",
        INPUTS,
        "--mean/--std are ignored on given views",
    ),
    Mutant(
        "crop-fraction-always-declared",
        "softlabels/models/inputs.py",
        "return declared_crop if declared_crop is not None and standing else",
        "return declared_crop if declared_crop is not None else",
        INPUTS,
        "an overridden size keeps the model's published crop fraction",
    ),
    Mutant(
        "eval-fit-no-crop",
        "softlabels/views/pixels.py",
        "return TF.center_crop(img, [size, size])",
        "return TF.resize(img, [size, size])",
        ("tests/softlabels/views/test_pipeline.py", "tests/softlabels/models/test_inputs.py"),
        "an eval transform squashes instead of centre-cropping",
    ),
    # ------------------------------------------------------------------ views per decode
    Mutant(
        "trainer-ignores-views-per-decode",
        "trainer/setup.py",
        "per_decode = config.data.views_per_decode",
        "per_decode = 1",
        ("tests/softlabels/test_replay.py", "tests/invariants/test_replay_matrix.py"),
        "the trainer ignores --views-per-decode",
    ),
    Mutant(
        "views-per-decode-batch",
        "trainer/setup.py",
        "return config.optim.batch_size // config.data.views_per_decode",
        "return config.optim.batch_size",
        ("tests/softlabels/test_replay.py",),
        "views per decode multiply the batch size",
    ),
    # ------------------------------------------------------------------ online KD
    Mutant(
        "online-kd-zero-targets",
        "trainer/engine.py",
        "targets = teacher_logits(run.teacher, images, run.device, run.config.optim.amp)",
        "targets = teacher_logits(run.teacher, images, run.device, run.config.optim.amp) * 0",
        ("tests/trainer/test_loop.py",),
        "online KD's teacher targets are zero",
    ),
    Mutant(
        "online-kd-unnormalised",
        "trainer/engine.py",
        "logits = teacher.model(teacher.normalize(images))",
        "logits = teacher.model(images)",
        ("tests/trainer/test_loop.py",),
        "the online teacher sees un-normalised images",
    ),
    # ------------------------------------------------------------------ ensembles
    Mutant(
        "ensemble-weights-ignored",
        "softlabels/ensemble/weighted.py",
        "return mean_probabilities(logits, np.asarray(self.weights), temperature)",
        "return mean_probabilities(logits, np.full(len(self.weights), 1 / len(self.weights)), temperature)",
        ENSEMBLES,
        "--ensemble 0.7,0.3 averages evenly",
    ),
    Mutant(
        "ensemble-temperature-ignored",
        "softlabels/ensemble/base.py",
        "t = np.float32(temperature)",
        "t = np.float32(1.0)",
        ENSEMBLES,
        "mean-prob averages at T=1 whatever --temperature",
    ),
    Mutant(
        "ensemble-mean-logit",
        "softlabels/ensemble/mean_logit.py",
        "return logits.mean(axis=-2)",
        "return logits[..., 0, :]",
        ENSEMBLES,
        "mean-logit is member 0 alone",
    ),
)


def copy_tree(target: Path) -> None:
    """The working tree's files (tracked and untracked, not ignored) copied to `target`."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def run_mutant(mutant: Mutant, tree: Path, timeout: int) -> tuple[str, str, float]:
    """('killed' | 'SURVIVED' | 'broken', by what, seconds): the mutant applied in `tree`, its tests run, undone."""
    path = tree / mutant.file
    original = path.read_text()
    if original.count(mutant.old) != 1:
        return "broken", f"`old` occurs {original.count(mutant.old)} times in {mutant.file}", 0.0
    path.write_text(original.replace(mutant.old, mutant.new))
    started = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-rf", "-m", "not slow", "-p", "no:cacheprovider"]
            + list(mutant.tests),
            cwd=tree,
            env={**os.environ, "PYTHONPATH": str(tree)},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return "killed", f"timeout after {timeout} s", time.perf_counter() - started
    finally:
        path.write_text(original)
    seconds = time.perf_counter() - started
    if done.returncode == 0:
        return "SURVIVED", "", seconds
    failed = re.findall(r"^FAILED (\S+)", done.stdout, flags=re.M)
    if failed:
        return "killed", failed[0], seconds
    tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or ["?"]
    return "killed", f"pytest exit {done.returncode}: {tail[0]}", seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", help="run only this mutant (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per mutant's test run")
    args = parser.parse_args(argv)
    names = {m.name for m in MUTANTS}
    unknown = set(args.only or ()) - names
    if unknown:
        parser.error(f"unknown mutant(s) {', '.join(sorted(unknown))}; choose from: {', '.join(sorted(names))}")
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    if args.list:
        for m in chosen:
            print(f"{m.name:36} {m.file:36} {m.breaks}")
        return 0
    results = []
    with tempfile.TemporaryDirectory(prefix="mutants-") as folder:
        tree = Path(folder)
        copy_tree(tree)
        for number, mutant in enumerate(chosen, 1):
            outcome, by, seconds = run_mutant(mutant, tree, args.timeout)
            results.append((mutant, outcome, by))
            print(f"[{number}/{len(chosen)}] {mutant.name}: {outcome} {by} ({seconds:.0f} s)", flush=True)
    survivors = [r for r in results if r[1] != "killed"]
    print(f"\n{len(results) - len(survivors)} of {len(results)} mutants killed")
    for mutant, outcome, by in survivors:
        print(f"  {outcome}: {mutant.name} ({mutant.file}): {mutant.breaks} {by}")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
