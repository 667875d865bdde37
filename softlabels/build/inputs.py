"""What the teacher pass reads: each sample decoded once, its V views made by the one pipeline, in
batches whose order never depends on workers or ranks (`TeacherInputs`, `make_loader`)."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from softlabels.build.config import BuildConfig, BuildViews
from softlabels.data import DatasetSource, key_text
from softlabels.data.sample_errors import reading
from softlabels.stopping import ignore_in_worker
from softlabels.views import Augment, ViewPipeline, stack
from softlabels.views.proof import SAMPLES, VIEWS, prove_replay


class TeacherInputs(Dataset):
    """Sample i -> (i, its V un-normalised views as one (V, C, S, S) tensor, their (V, P) parameters,
    the (32,) SHA-256 of its source bytes).

    The sample is decoded once for all its views; parameters come from (seed, key) alone, so the
    file is the same whatever the batch size, worker count or rank.
    """

    def __init__(self, source: DatasetSource, pipeline: ViewPipeline, views: int, seed: int):
        self.source, self.pipeline, self.views, self.seed = source, pipeline, views, seed

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int):
        with reading(self.source, index):
            image, digest = self.source.read(index)
            x = self.pipeline.decode(image)
            params = self.pipeline.stored_params(x, self.seed, self.source.keys[index], self.views)
            views = self.pipeline.views(x, params)
        return index, views, torch.from_numpy(params), torch.frombuffer(bytearray(digest), dtype=torch.uint8)


def make_loader(inputs: TeacherInputs, rows: range, config: BuildConfig, device: torch.device) -> DataLoader:
    """Batches of `rows` in order; pinned host memory feeds non-blocking copies on CUDA."""
    workers = config.runtime.workers
    return DataLoader(
        torch.utils.data.Subset(inputs, rows),
        batch_size=config.runtime.batch_size,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        shuffle=False,
        prefetch_factor=4 if workers else None,
        worker_init_fn=ignore_in_worker if workers else None,
    )


def probe_example(source: DatasetSource, prep, views: BuildViews, augment: Augment):
    """Two copies of the first sample's first view: what the teachers are probed with (a real sample,
    so tensor samples of any shape, and dicts of them, probe as they will run)."""
    pipeline = ViewPipeline(prep, augment, source)
    x = pipeline.decode(source.load(0))
    view = pipeline.view(x, pipeline.stored_params(x, views.seed, source.keys[0], 1)[0])
    return stack([view, view])


def check_replay(source: DatasetSource, pipeline: ViewPipeline, views: BuildViews, start: int, stop: int) -> None:
    """Before any teacher time: views of the first samples, made again with the global RNGs disturbed
    (and, for user code, in a fresh worker process), must be the same bits (`softlabels.views.proof`)."""
    rows = range(start, min(stop, start + SAMPLES))
    samples = []
    for row in rows:
        with reading(source, row):
            x = pipeline.decode(source.load(row))
        count = min(views.views, VIEWS) if pipeline.augment.name != "none" else 1
        samples.append((x, pipeline.stored_params(x, views.seed, source.keys[row], count)))
    names = [key_text(source.keys[row]) for row in rows]
    prove_replay(pipeline, samples, names, in_worker=bool(pipeline.augment.identity()))  # user code
