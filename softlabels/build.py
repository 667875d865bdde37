"""The teacher pass: run a teacher once over a dataset and write its logits to a cache."""
from __future__ import annotations

import datetime
import queue
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from softlabels import format as fmt
from softlabels.datasets import DatasetSource, open_dataset
from softlabels.runtime import autocast, cpu_threads, current_rank, default_workers, prepare_model, resolve_device
from softlabels.shards import merge_caches, rank_shard_path, shard_range, stale_rank_shards
from softlabels.teachers import Teacher, load_teacher
from softlabels.transforms import Preprocessing, get_augment, make_views, sample_views

DEFAULT_BLOCK_ROWS = 1024


@dataclass(frozen=True)
class BuildConfig:
    """Everything `softlabels build` needs; the CLI fills it from its options."""

    dataset: str
    teacher: str
    out: str
    split: str = "train"
    weights: str | None = None
    num_classes: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    image_size: int | None = None
    batch_size: int = 128
    workers: int = field(default_factory=default_workers)
    threads: int | None = None  # CPU intra-op threads; None: cores left free by the workers
    device: str = "auto"
    amp: bool = True
    dtype: str = "float16"
    data_root: str = "data"
    download: bool = False
    views: int = 1
    augment: str = "none"
    seed: int = 0
    topk: int | None = None
    compression: str = "none"
    trust_checkpoint: bool = False
    resume: bool = False
    overwrite: bool = False
    block_rows: int | None = None
    shard: tuple[int, int] | None = None
    progress: bool = True


@dataclass
class BuildResult:
    path: Path
    num_samples: int
    num_views: int
    teacher_accuracy: float
    seconds: float
    images_per_second: float
    resumed_from: int = 0


class BuildInterrupted(RuntimeError):
    """The pass stopped early (Ctrl-C); the partial file is flushed and resumable."""


def resolve_preprocessing(config: BuildConfig, teacher: Teacher, source: DatasetSource) -> Preprocessing:
    """Flags override the teacher's zoo entry, which overrides the dataset's defaults."""
    chosen = dict(source.defaults)
    chosen.update({k: v for k, v in (teacher.preprocessing or {}).items() if v is not None})
    flags = {"mean": config.mean, "std": config.std, "image_size": config.image_size}
    chosen.update({k: v for k, v in flags.items() if v is not None})
    prep = Preprocessing(tuple(chosen["mean"]), tuple(chosen["std"]), int(chosen["image_size"]))
    if len(prep.mean) != len(prep.std) or len(prep.mean) not in (1, 3):
        raise ValueError(f"--mean and --std need 1 or 3 values each, got {prep.mean} and {prep.std}")
    return prep


class TeacherInputs(Dataset):
    """Sample i -> (i, its V views as one (V, C, S, S) tensor, their (V, P) parameters).

    The image is decoded once for all its views; parameters come from (seed, key) alone, so the
    file is the same whatever the batch size, worker count or rank.
    """

    def __init__(self, source: DatasetSource, prep: Preprocessing, augment: str, views: int, seed: int):
        self.source, self.prep, self.views, self.seed = source, prep, views, seed
        self.augment = get_augment(augment)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int):
        image = self.source.load(index)
        width, height = image.size
        params = sample_views(self.augment, self.seed, self.source.keys[index], self.views,
                              height, width, self.prep.image_size)
        return index, make_views(image, self.augment, params, self.prep), torch.from_numpy(params)


def make_loader(inputs: TeacherInputs, rows: range, config: BuildConfig, device: torch.device) -> DataLoader:
    """Batches of `rows` in order; pinned host memory feeds non-blocking copies on CUDA."""
    return DataLoader(torch.utils.data.Subset(inputs, rows), batch_size=config.batch_size,
                      num_workers=config.workers, pin_memory=device.type == "cuda", shuffle=False,
                      prefetch_factor=4 if config.workers else None)


def _check_paths(config: BuildConfig, out: Path) -> None:
    """Before any work: the output can be written and nothing finished would be silently replaced."""
    if not out.parent.exists():
        raise FileNotFoundError(f"output directory {out.parent} does not exist")
    if out.exists() and not config.overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")
    partial = fmt.partial_path(out)
    if partial.exists() and not (config.resume or config.overwrite):
        raise FileExistsError(f"a partial build exists at {partial}: add --resume to continue it "
                              f"or --overwrite to start again")


def _cache_attrs(config: BuildConfig, teacher: Teacher, source: DatasetSource, prep: Preprocessing) -> dict:
    dataset = source.describe()
    dataset["fingerprint"] = fmt.dataset_fingerprint(source.keys, source.labels)
    augment = get_augment(config.augment)
    return {
        "teacher": teacher.describe(),
        "dataset": dataset,
        "preprocessing": prep.to_dict(),
        "augment": {"name": augment.name, "seed": config.seed, "views": config.views,
                    "param_names": list(augment.param_names)},
        "build": {"dtype": config.dtype, "storage": "topk" if config.topk else "logits", "topk": config.topk,
                  "amp": config.amp, "compression": config.compression},
    }


# What must agree between a partial file and the command resuming it.
_RESUME_CHECKS = {
    "teacher": ("spec", "weights_sha256", "num_params"),
    "dataset": ("spec", "split", "fingerprint"),
    "preprocessing": None,
    "augment": None,
    "build": None,
}


def _resume_differences(writer: fmt.CacheWriter, attrs: dict) -> list[str]:
    differences = []
    for name, fields in _RESUME_CHECKS.items():
        stored = fmt.read_json_attr(writer.file, name)
        wanted = attrs[name]
        for key in fields or sorted(set(stored) | set(wanted)):
            if stored.get(key) != wanted.get(key):
                differences.append(f"{name}.{key}: partial has {stored.get(key)!r}, this command {wanted.get(key)!r}")
    return differences


def _open_writer(config, out, layout: fmt.Layout, source, rows, attrs) -> fmt.CacheWriter:
    partial = fmt.partial_path(out)
    if config.resume and partial.exists() and not config.overwrite:
        writer = fmt.CacheWriter.resume(out)
        differences = _resume_differences(writer, attrs)
        if writer.layout != layout:
            differences.append(f"layout: partial has {writer.layout}, this command {layout}")
        if differences:
            writer.close()
            raise ValueError(f"cannot resume {partial}: it was built with other settings ({differences[0]}); "
                             f"use the original options or --overwrite")
        return writer
    return fmt.CacheWriter.create(out, layout, source.keys[rows[0]:rows[1]], source.labels[rows[0]:rows[1]], attrs)


def _probe_classes(model: torch.nn.Module, prep: Preprocessing, device) -> int:
    probe = torch.zeros(2, prep.channels, prep.image_size, prep.image_size, device=device)
    try:
        with torch.inference_mode():
            out = model(probe.contiguous(memory_format=torch.channels_last))
    except RuntimeError as err:
        raise ValueError(f"the teacher cannot run on {prep.channels}x{prep.image_size}x{prep.image_size} "
                         f"inputs ({str(err).splitlines()[0]}); check --image-size, --mean/--std") from None
    if out.ndim != 2:
        raise ValueError(f"the teacher must return (batch, classes) logits, got shape {tuple(out.shape)}")
    return int(out.shape[1])


class _BackgroundWriter:
    """Writes blocks on a thread so the teacher never waits for the disk (torch and h5py release the GIL)."""

    def __init__(self, writer: fmt.CacheWriter):
        self.writer = writer
        self.queue: queue.Queue = queue.Queue(maxsize=4)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while (arrays := self.queue.get()) is not None:
            if self.error is None:
                try:
                    self.writer.write(arrays)
                except BaseException as err:  # reported to the main thread on its next put/close
                    self.error = err

    def put(self, arrays: dict) -> None:
        self._raise()
        self.queue.put(arrays)

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        self._raise()

    def _raise(self):
        if self.error is not None:
            raise self.error


def build_cache(config: BuildConfig) -> BuildResult:
    """Run the teacher pass described by `config`; returns where the verified cache is.

    Under torchrun every rank computes its own contiguous shard, then rank 0 merges them.
    """
    _check_options(config)
    rank = current_rank()
    if rank.distributed:
        if config.shard:
            raise ValueError("--shard is for separate jobs; under torchrun the ranks split the data themselves")
        return _build_distributed(config, rank)
    _check_paths(config, Path(config.out))
    stale = stale_rank_shards(config.out, 1)
    if stale and not config.overwrite:
        raise ValueError(f"shards of a torchrun build of {config.out} exist ({stale[0].name}): rerun it under "
                         f"torchrun with as many processes to resume, or pass --overwrite to start again")
    return _build_shard(config, Path(config.out), config.shard)


def _check_options(config: BuildConfig) -> None:
    if config.views > 1 and config.augment == "none":
        raise ValueError("--views > 1 needs an augmentation (--augment cifar|imagenet|flip): "
                         "views of the un-augmented image would all be identical")
    for name in ("views", "batch_size"):
        if getattr(config, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(config, name)}")
    get_augment(config.augment)
    if config.dtype not in fmt.DTYPES:
        raise ValueError(f"unknown --dtype {config.dtype!r}; choose one of: {', '.join(fmt.DTYPES)}")


def _build_shard(config: BuildConfig, out: Path, shard: tuple[int, int] | None) -> BuildResult:
    """One process's pass over the rows of `shard` (all rows when None), written to `out`."""
    device = resolve_device(config.device)
    source = open_dataset(config.dataset, config.split, config.data_root, config.download)
    channels = len(config.mean or source.defaults["mean"])
    torch.manual_seed(0)  # a teacher without --weights is initialised identically in every process
    teacher = load_teacher(config.teacher, weights=config.weights, num_classes=config.num_classes or len(source.classes),
                           trust_checkpoint=config.trust_checkpoint, in_channels=channels,
                           image_size=config.image_size or source.defaults["image_size"])
    prep = resolve_preprocessing(config, teacher, source)
    model = prepare_model(teacher.model, device).eval()
    num_classes = _probe_classes(model, prep, device)
    if num_classes != len(source.classes):
        raise ValueError(f"the teacher outputs {num_classes} classes but {config.dataset} has "
                         f"{len(source.classes)}; use a teacher for this dataset (or --num-classes {len(source.classes)})")
    rows = shard_range(*shard, len(source)) if shard else (0, len(source))
    layout = fmt.Layout(num_samples=rows[1] - rows[0], num_classes=num_classes, num_views=config.views,
                        storage="topk" if config.topk else "logits", dtype=config.dtype, topk=config.topk,
                        param_names=tuple(get_augment(config.augment).param_names), compression=config.compression,
                        block_rows=config.block_rows or config.batch_size * max(1, DEFAULT_BLOCK_ROWS // config.batch_size))
    attrs = _cache_attrs(config, teacher, source, prep)
    if shard:
        keys, labels = source.keys[rows[0]:rows[1]], source.labels[rows[0]:rows[1]]
        attrs["shard"] = {"index": shard[0], "count": shard[1], "start": rows[0], "stop": rows[1],
                          "fingerprint": fmt.dataset_fingerprint(keys, labels)}
    writer = _open_writer(config, out, layout, source, rows, attrs)
    with cpu_threads(device, config.workers, config.threads):
        return _run_pass(config, writer, source, rows[0], prep, model, device)


def _build_distributed(config: BuildConfig, rank) -> BuildResult:
    """torchrun: rank r writes shard r of world_size; rank 0 merges after a barrier."""
    import torch.distributed as dist

    out = Path(config.out)
    _check_paths(config, out)
    shard_out = rank_shard_path(out, rank.rank, rank.world_size)
    if not (config.resume and shard_out.exists()):  # a finished shard of an earlier run is reused
        _check_paths(config, shard_out)
    stale = stale_rank_shards(out, rank.world_size)
    if stale and not config.overwrite:
        raise ValueError(f"shards of a run with another number of processes exist ({stale[0].name}): "
                         f"rerun with that many processes to resume, or pass --overwrite to start again")
    if config.device == "auto" and torch.cuda.is_available():
        config = replace(config, device=f"cuda:{rank.local_rank}")
    # gloo on every device: the ranks only ever meet at barriers, no tensors are exchanged.
    dist.init_process_group("gloo", timeout=datetime.timedelta(hours=2))
    try:
        if config.resume and shard_out.exists():
            fmt.verify(shard_out)
            result = None
        else:
            result = _build_shard(replace(config, progress=config.progress and rank.is_main), shard_out,
                                  (rank.rank, rank.world_size))
        dist.barrier()
        if rank.is_main:
            shards = [rank_shard_path(out, r, rank.world_size) for r in range(rank.world_size)]
            merge_caches(shards, out, overwrite=config.overwrite, progress=config.progress)
            for path in shards:
                path.unlink()
            stale_partial = fmt.partial_path(out)
            stale_partial.unlink(missing_ok=True)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    info = fmt.read_info(out)
    return BuildResult(out, info.layout.num_samples, info.layout.num_views, float(info.attrs["teacher_accuracy"]),
                       result.seconds if result else 0.0, result.images_per_second if result else 0.0,
                       result.resumed_from if result else 0)


def _run_pass(config, writer: fmt.CacheWriter, source, first_row: int, prep, model, device) -> BuildResult:
    """Compute rows `first_row + writer.done_rows ...` of the dataset into `writer`, then finish it."""
    resumed = writer.done_rows
    total = writer.layout.num_samples
    inputs = TeacherInputs(source, prep, config.augment, config.views, config.seed)
    loader = make_loader(inputs, range(first_row + resumed, first_row + total), config, device)
    background = _BackgroundWriter(writer)
    started = time.perf_counter()
    bar = tqdm(total=total, initial=resumed, unit="img", desc="teacher pass", disable=not config.progress,
               dynamic_ncols=True, unit_scale=config.views if config.views > 1 else False)
    try:
        with torch.inference_mode():
            for indices, views, params in loader:
                logits = _forward(model, views, device, config.amp)
                background.put(_encode(logits, params, indices, writer.layout, source))
                bar.update(len(indices))
        background.close()
    except KeyboardInterrupt:
        _stop(background, writer)
        raise BuildInterrupted(f"interrupted: {writer.done_rows} of {total} samples are saved in "
                               f"{fmt.partial_path(writer.path)}; run the same command with --resume to continue") from None
    except OSError as err:
        _stop(background, writer)
        raise OSError(f"writing {fmt.partial_path(writer.path)} failed ({fmt.short_reason(err)}); the "
                      f"{writer.done_rows} samples written are kept: fix the cause and rerun with --resume") from None
    except BaseException:
        _stop(background, writer)
        raise
    finally:
        bar.close()
    path = _finish(writer)
    seconds = time.perf_counter() - started  # includes the final re-verification: storing's full cost
    accuracy = float(fmt.read_info(path).attrs["teacher_accuracy"])
    return BuildResult(path, total, config.views, accuracy, seconds,
                       (total - resumed) * config.views / max(seconds, 1e-9), resumed_from=resumed)


def _finish(writer: fmt.CacheWriter) -> Path:
    try:
        return writer.finish()
    except OSError as err:
        _close_quietly(writer)
        raise OSError(f"finishing {writer.path} failed ({fmt.short_reason(err)}); all rows are "
                      f"kept in {fmt.partial_path(writer.path)}: fix the cause and rerun with --resume") from None


def _stop(background: _BackgroundWriter, writer: fmt.CacheWriter) -> None:
    """Drain what is queued (complete blocks get written), then close the partial cleanly."""
    try:
        background.close()
    except BaseException:
        pass
    _close_quietly(writer)


def _close_quietly(writer: fmt.CacheWriter) -> None:
    """Close after a failure: a second error from the same cause (a flush to a full disk) would hide the first."""
    try:
        writer.close()
    except Exception:
        pass


def _forward(model, views: torch.Tensor, device, amp: bool) -> torch.Tensor:
    batch, num_views = views.shape[:2]
    images = views.flatten(0, 1).to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    with autocast(device, amp):
        logits = model(images)
    return logits.float().view(batch, num_views, -1)


def _encode(logits, params, indices, layout: fmt.Layout, source: DatasetSource) -> dict:
    try:
        arrays = fmt.encode_outputs(logits, layout)
    except fmt.NonFiniteOutputs as err:
        keys = [source.keys[int(indices[row])] for row in err.rows[:5]]
        raise ValueError(f"the teacher produced NaN/inf logits for {len(err.rows)} sample(s) in a batch, "
                         f"first keys: {', '.join(keys)}; nothing was marked complete "
                         f"(fp16 overflow? try --no-amp or --dtype float32)") from None
    if layout.param_names:
        arrays["views/params"] = params.numpy().astype(np.int32)
    return arrays
