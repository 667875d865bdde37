"""`--probe knn|linear`: the student's features scored without its classifier, as an engine hook.

After the last epoch, the student's penultimate features (`softlabels.models.features`) over the
labelled evaluation set go to `softlabels.probes` (fit on its even rows, scored on its odd rows); the
accuracies join that epoch's record (metrics.jsonl/.csv) and the summary as `probe_knn` and
`probe_linear`. A run asked for probes without a labelled evaluation set is refused before training.

With `--probe-teacher CACHE` (the teacher's cache of the same evaluation set, storing embeddings) the
teacher's stored embeddings (view 0) go through the same probes (`probe_teacher_knn`,
`probe_teacher_linear`), so student and teacher are scored alike, and `probe_nn_overlap` says how much
of each sample's neighbourhood the student shares with the teacher (`softlabels.probes.neighbour_overlap`).
The cache must hold exactly the evaluation set's samples (keys and labels, in order), checked before training.
"""

from __future__ import annotations

from typing import cast

import numpy as np
import torch

from softlabels.cache import Cache
from softlabels.models.features import penultimate_features
from softlabels.probes import DEFAULT_K, neighbour_overlap, probe_accuracy
from softlabels.progress import bar as progress_bar
from softlabels.runtime import autocast
from trainer.data import LabelledDataset
from trainer.engine import Hook, batch_to_device, model_input
from trainer.resume import Progress
from trainer.setup import Run


class Probes(Hook):
    """Adds `probe_<kind>` (and, with `--probe-teacher`, the teacher's and the overlap) to the record of
    the run's last epoch."""

    def __init__(self):
        self.teacher: np.ndarray | None = None  # (n, D) the teacher's embeddings of the evaluation set

    def on_fit_start(self, run: Run, progress: Progress) -> None:
        runtime = run.config.runtime
        if runtime.probe_teacher and not runtime.probe:
            raise ValueError("--probe-teacher compares the teacher with the student's probes: add --probe knn|linear")
        if runtime.probe and run.eval_loader is None:
            raise ValueError(
                f"--probe {' --probe '.join(runtime.probe)} scores the student's features on a "
                f"labelled evaluation set, and this run has none: pass --eval-dataset SPEC"
            )
        if runtime.probe_teacher and run.eval_loader is not None:
            source = cast(LabelledDataset, run.eval_loader.dataset).source
            self.teacher = teacher_embeddings(runtime.probe_teacher, source)

    def on_epoch_end(self, run: Run, progress: Progress, record: dict) -> None:
        kinds = tuple(run.config.runtime.probe)
        if not kinds or record["epoch"] != run.config.optim.epochs or run.eval_loader is None:
            return
        features, labels = student_features(run)
        num_classes = len(run.data.classes)
        record.update(probe_accuracy(features, labels, kinds, num_classes))
        if self.teacher is not None:
            scored = probe_accuracy(self.teacher, labels, kinds, num_classes)
            record.update({name.replace("probe_", "probe_teacher_"): value for name, value in scored.items()})
            record["probe_nn_overlap"] = neighbour_overlap(features, self.teacher, DEFAULT_K)


def teacher_embeddings(path: str, source) -> np.ndarray:
    """(n, D) view-0 embeddings of a cache that holds exactly the evaluation set `source`, in its order."""
    with Cache(path) as cache:
        if not cache.embedding_dim:
            raise ValueError(
                f"--probe-teacher {path} stores no embeddings: build the evaluation set with --targets embedding"
            )
        if len(cache.info.members) > 1:
            raise ValueError(f"--probe-teacher {path} holds several teachers: give a cache of one")
        try:
            cache.check_dataset(source)
        except ValueError as err:
            raise ValueError(f"--probe-teacher: {err}") from None
        return cache.embeddings(list(range(len(cache))), view=0)


@torch.no_grad()
def student_features(run: Run) -> tuple[np.ndarray, np.ndarray]:
    """(n, D) penultimate features of the student over the evaluation set, and its (n,) labels."""
    model = run.bare_student
    was_training = model.training
    model.eval()
    features, labels = [], []
    bar = progress_bar(run.eval_loader, desc="probing", unit="batch", enabled=run.config.runtime.progress, leave=False)
    for batch in bar:
        images, batch_labels, _ = batch_to_device(batch, run.device)
        inputs = model_input(images, run.device, run.normalize, run.input_dtype, run.input_spec.channels_last)
        with autocast(run.device, run.config.optim.amp):
            _, batch_features = penultimate_features(model, inputs)
        features.append(batch_features.float().cpu().numpy())
        labels.append(batch_labels.cpu().numpy())
    model.train(was_training)
    return np.concatenate(features), np.concatenate(labels)
