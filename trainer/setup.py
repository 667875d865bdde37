"""Run set-up: what a config asks for, assembled before the first epoch (`build_run` -> `Run`).

`load_data` is shared by every kind of student: the torch engine builds a `Run` around it, the
scikit-learn path (`trainer.classic`) fits on its samples. Targets come from one of three places, in
one code path: a cache (`--cache`, the teacher is never loaded), a teacher run inside the loop on the
student's exact batch (`--teacher`, online KD), or the labels alone.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from softlabels.data import DatasetSource, open_dataset
from softlabels.models.inputs import data_input
from softlabels.models.preprocessing import Preprocessing
from softlabels.models.teachers import load_teacher
from softlabels.replay import EpochSampler
from softlabels.runtime import Rank, prepare_model
from softlabels.stopping import StopRequest
from softlabels.views import Normalize, parse_augment, stack
from trainer.combined import combine
from trainer.config import FitConfig, NoAccuracyWarning, check_cache_targets, check_labels, check_mixed_views
from trainer.data import (
    TrainingData,
    cached_training_data,
    close_loader,
    eval_dataset,
    labelled_training_data,
    make_loader,
)
from trainer.losses import Objective
from trainer.optim import make_optimizer, make_scheduler
from trainer.projection import make_projection
from trainer.students import create_student, labelled_input, probe_student, student_input


@dataclass
class Teacher:
    """An online teacher: model in eval mode and the normalisation it expects."""

    model: nn.Module
    normalize: nn.Module


@dataclass
class Run:
    """What `build_run` assembles from a config before the first epoch."""

    config: FitConfig
    rank: Rank
    device: torch.device
    data: TrainingData
    sampler: EpochSampler
    train_loader: torch.utils.data.DataLoader
    eval_loader: torch.utils.data.DataLoader | None
    student: nn.Module  # DDP-wrapped under torchrun
    normalize: nn.Module
    student_prep: Preprocessing
    teacher: Teacher | None
    objective: Objective
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    steps_per_epoch: int = 0
    stop: StopRequest = field(default_factory=StopRequest)
    projection: nn.Module | None = None  # losses from embeddings: student features -> teacher embedding

    @property
    def bare_student(self) -> nn.Module:
        return getattr(self.student, "module", self.student)

    @property
    def items_per_batch(self) -> int:
        """Sampler items in a batch: --batch-size / --views-per-decode (R views of each decoded sample)."""
        return items_per_batch(self.config)

    @property
    def input_dtype(self) -> torch.dtype | None:
        return input_dtype(self.bare_student)

    @functools.cached_property
    def input_spec(self) -> InputSpec:
        return input_spec(self.bare_student, self.student_prep)

    def close(self) -> None:
        """End the loaders' persistent workers (also when the run failed)."""
        close_loader(self.train_loader)
        close_loader(self.eval_loader)


def items_per_batch(config: FitConfig) -> int:
    return config.optim.batch_size // config.data.views_per_decode


def input_dtype(model: nn.Module) -> torch.dtype | None:
    """The floating dtype of a model's parameters: floating tensor samples are cast to it."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), None)


@dataclass(frozen=True)
class InputSpec:
    """What turns a batch of un-normalised views into a model's input: the statistics it is normalised
    with (None: tensor samples, taken as they are), its dtype, and its memory layout. Models with equal
    specs take the same tensor, so a sweep prepares it once per batch for all of them."""

    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    dtype: torch.dtype | None
    channels_last: bool


def input_spec(model: nn.Module, prep: Preprocessing) -> InputSpec:
    image = prep.is_image
    return InputSpec(
        prep.mean if image else None, prep.std if image else None, input_dtype(model), takes_channels_last(model)
    )


def takes_channels_last(model: nn.Module) -> bool:
    """Whether a model takes its images in channels_last: one with convolutions (4-D weights) runs them
    faster so; one without (linear, mlp) flattens its input, which from channels_last is a full copy."""
    return any(p.ndim == 4 for p in model.parameters())


def load_data(config: FitConfig) -> tuple[TrainingData, Teacher | None, Preprocessing]:
    """The training data, the online teacher when there is one, and the student's input.

    With a cache or an online teacher the views are the teacher's, and the student takes them as they
    are (only its statistics resolve); from labels alone the views are made for the student's own input.
    """
    training, teacher = load_views(config)
    check_mixed_views(config, training.caches)
    check_cache_targets(config, training.caches)
    return training, teacher, student_prep(config, training)


def load_views(config: FitConfig) -> tuple[TrainingData, Teacher | None]:
    """The training data and the online teacher when there is one: what every run with the same data
    schedule shares (from labels, the views are made for this config's student)."""
    data, runtime, seed = config.data, config.runtime, config.optim.seed
    augment = parse_augment(data.augment)
    if runtime.cache:
        parts = [
            cached_training_data(
                cache,
                data.dataset,
                data_root=runtime.data_root,
                download=runtime.download,
                memory_budget=runtime.cache_memory_mb << 20,
                subset=data.subset if len(runtime.cache) == 1 else None,
                augment=augment,
                seed=seed,
                allow_changed_augment=data.inconsistent_augment,
                ensemble=config.objective.ensemble,
                temperature=config.objective.temperature,
                views_per_decode=data.views_per_decode,
                verify=runtime.verify,
                check_content=runtime.check_content,
                embeddings=config.make_objective().needs_embedding,
            )
            for cache in runtime.cache
        ]
        training = parts[0] if len(parts) == 1 else combine(parts, data.subset)
        check_labels(config, training.source)
        return training, None
    assert data.dataset is not None  # check_config: --cache or --dataset
    source = open_dataset(data.dataset, data.split, runtime.data_root, runtime.download)
    check_labels(config, source)
    if not config.objective.teacher:
        return labelled_training_data(source, data.subset, augment, seed, labelled_prep(config, source)), None
    if not source.labelled:
        raise ValueError(
            f"{data.dataset} is unlabelled: online KD (--teacher) needs the dataset's classes; build a cache of it "
            f"(softlabels build --num-classes C) and train from that with --cache"
        )
    loaded = load_teacher(
        config.objective.teacher,
        runtime.weights,
        num_classes=len(source.classes),
        trust_checkpoint=runtime.trust_checkpoint,
        data=data_input(source.defaults),
    )
    training = labelled_training_data(source, data.subset, augment, seed, loaded.input)
    return training, Teacher(loaded.model.eval(), Normalize(loaded.input))


def labelled_prep(config: FitConfig, source: DatasetSource) -> Preprocessing:
    """The student's input learning from labels alone: the views are made for it."""
    model, runtime = config.model, config.runtime
    return labelled_input(
        model.student,
        data_input(source.defaults),
        runtime.weights,
        runtime.trust_checkpoint,
        model.mean,
        model.std,
        model.image_size,
    )


def student_prep(config: FitConfig, data: TrainingData) -> Preprocessing:
    """A student's input on `data`'s views: the teacher's views (a cache, an online teacher) with the
    student's own statistics, or, from labels, the student's own input (its views must be `data`'s)."""
    model = config.model
    if not (config.runtime.cache or config.objective.teacher):
        return labelled_prep(config, data.source)
    return student_input(model.student, data.image_prep, model.mean, model.std, data_input(data.source.defaults))


@dataclass
class Feed:
    """The batches of a run: its data, sampler, loaders and online teacher. Every run of a shared-stream
    sweep (`trainer.stream`) trains from one `Feed`."""

    data: TrainingData
    sampler: EpochSampler
    train_loader: torch.utils.data.DataLoader
    eval_loader: torch.utils.data.DataLoader | None
    teacher: Teacher | None

    def close(self) -> None:
        """End the loaders' persistent workers (also when the run failed)."""
        close_loader(self.train_loader)
        close_loader(self.eval_loader)


def build_feed(
    config: FitConfig, rank: Rank, device: torch.device, data: TrainingData, teacher: Teacher | None, prep
) -> Feed:
    """The sampler and loaders over `data` (views of `prep`'s geometry) and the teacher on the device."""
    per_decode = config.data.views_per_decode
    sampler = EpochSampler(
        data.indices,
        config.optim.seed,
        data.schedule,
        rank=rank.rank,
        world_size=rank.world_size,
        per_decode=per_decode,
    )
    train_loader = make_loader(
        data.dataset,
        items_per_batch(config),
        config.runtime.workers,
        device,
        sampler,
        config.runtime.start_method,
    )
    eval_loader = _eval_loader(config, data, prep, rank, device)
    if teacher is not None:
        teacher = Teacher(prepare_model(teacher.model, device).eval(), teacher.normalize.to(device))
    return Feed(data, sampler, train_loader, eval_loader, teacher)


def build_run(config: FitConfig, rank: Rank, device: torch.device, stop: StopRequest, feed: Feed | None = None) -> Run:
    """A run's student, optimizer and schedule around its `feed` (its own when None: `trainer fit`).

    The student's weights draw from torch's global RNG seeded with --seed here, so a run built on a
    shared feed starts from the same weights as the same run alone.
    """
    if feed is None:
        data, teacher, prep = load_data(config)
        feed = build_feed(config, rank, device, data, teacher, prep)
    else:
        check_mixed_views(config, feed.data.caches)
        check_cache_targets(config, feed.data.caches)
        prep = student_prep(config, feed.data)
        if prep.geometry != feed.data.image_prep.geometry:
            raise ValueError(f"{config.model.student} needs views of {prep.describe()}: it cannot share this feed")
    torch.manual_seed(config.optim.seed)
    student = _student(config, feed.data, prep, rank, device)
    objective = config.make_objective()
    projection = None
    if objective.loss.projection:
        assert feed.data.cache is not None  # a loss from embeddings trains from a cache (load_data checks)
        projection = make_projection(getattr(student, "module", student), feed.data.cache.layout.embedding_dim, device)
    optimizer = make_optimizer(student if projection is None else nn.ModuleList([student, projection]), config)
    scheduler = make_scheduler(optimizer, config, len(feed.train_loader))
    scaler = torch.amp.GradScaler("cuda", enabled=config.optim.amp and device.type == "cuda")
    return Run(
        config,
        rank,
        device,
        feed.data,
        feed.sampler,
        feed.train_loader,
        feed.eval_loader,
        student,
        Normalize(prep).to(device),
        prep,
        feed.teacher,
        objective,
        optimizer,
        scheduler,
        scaler,
        steps_per_epoch=len(feed.train_loader),
        stop=stop,
        projection=projection,
    )


def _eval_loader(config: FitConfig, data: TrainingData, prep: Preprocessing, rank: Rank, device: torch.device):
    """The held-out loader; rank 0 alone evaluates."""
    runtime = config.runtime
    held_out = eval_dataset(runtime.eval_dataset, data.source, prep, runtime.data_root, runtime.download, data.classes)
    if held_out is None and not data.source.labelled and rank.is_main and runtime.eval_dataset != "none":
        warnings.warn(
            f"{data.source.spec} is unlabelled and no labelled evaluation set was found: this run reports "
            f"no accuracy; pass --eval-dataset SPEC (a labelled set of the same classes)",
            NoAccuracyWarning,
            stacklevel=2,
        )
    if held_out is None or not rank.is_main:
        return None
    return make_loader(
        held_out, max(config.optim.batch_size, 256), runtime.workers, device, start_method=runtime.start_method
    )


def _student(config: FitConfig, data: TrainingData, prep: Preprocessing, rank: Rank, device: torch.device):
    """The student on its device (channels_last), checked on a real sample, DDP-wrapped under torchrun."""
    # channels_last everywhere: on this 2-core CPU a small_cnn training step ran 1.7x faster, cifar_resnet20 1.2x.
    num_classes = len(data.classes)
    weights = None if config.objective.teacher else config.runtime.weights  # else: the online teacher's
    first = (int(data.indices[0]), 0, 0)  # view 0 of epoch 0: a plain index would ask for set_epoch
    example = None if prep.is_image else stack([data.dataset[first][0]] * 2)  # a real sample
    try:
        student = create_student(
            config.model.student, num_classes, *prep.model_geometry, weights, config.runtime.trust_checkpoint
        )
    except ValueError as err:
        if prep.is_image:
            raise
        raise ValueError(
            f"student {config.model.student} cannot take these samples ({err}): it expects images; "
            f"for tensor or dict samples use a FILE.py:FUNC model that takes them, or linear / mlp "
            f"for flat features"
        ) from None
    student = prepare_model(student, device)
    probe_student(student, config.model.student, prep, num_classes, example)
    if rank.distributed:
        student = nn.parallel.DistributedDataParallel(
            student, device_ids=[device.index] if device.type == "cuda" else None
        )
    return student
