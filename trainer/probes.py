"""`--probe knn|linear`: the student's features scored without its classifier, as an engine hook.

After the last epoch, the student's penultimate features (`softlabels.models.features`) over the
labelled evaluation set go to `softlabels.probes` (fit on its even rows, scored on its odd rows); the
accuracies join that epoch's record (metrics.jsonl/.csv) and the summary as `probe_knn` and
`probe_linear`. A run asked for probes without a labelled evaluation set is refused before training.
"""

from __future__ import annotations

import numpy as np
import torch

from softlabels.models.features import penultimate_features
from softlabels.probes import probe_accuracy
from softlabels.progress import bar as progress_bar
from softlabels.runtime import autocast
from trainer.engine import Hook, batch_to_device, model_input
from trainer.resume import Progress
from trainer.setup import Run


class Probes(Hook):
    """Adds `probe_<kind>` to the record of the run's last epoch."""

    def on_fit_start(self, run: Run, progress: Progress) -> None:
        if run.config.runtime.probe and run.eval_loader is None:
            raise ValueError(
                f"--probe {' --probe '.join(run.config.runtime.probe)} scores the student's features on a "
                f"labelled evaluation set, and this run has none: pass --eval-dataset SPEC"
            )

    def on_epoch_end(self, run: Run, progress: Progress, record: dict) -> None:
        kinds = run.config.runtime.probe
        if not kinds or record["epoch"] != run.config.optim.epochs or run.eval_loader is None:
            return
        features, labels = student_features(run)
        record.update(probe_accuracy(features, labels, tuple(kinds), len(run.data.classes)))


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
