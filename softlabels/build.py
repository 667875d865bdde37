"""The teacher pass: run a teacher once over a dataset and write its logits to a cache."""

from __future__ import annotations

import datetime
import queue
import threading
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from softlabels import progress, store
from softlabels.build_config import (
    BuildConfig,
    BuildResult,
    BuildViews,
)
from softlabels.data import DatasetSource, key_text, open_dataset
from softlabels.data.sample_errors import SampleError, reading
from softlabels.models.inputs import data_input
from softlabels.models.teachers import RANDOM_INIT_SEED, Teacher, load_teacher
from softlabels.runtime import (
    autocast,
    cpu_threads,
    current_rank,
    end_workers,
    prepare_model,
    resolve_device,
)
from softlabels.shards import merge_caches, rank_shard_path, shard_range, stale_rank_shards
from softlabels.stopping import Stopped, StopRequest, ignore_in_worker, stop_on_signals
from softlabels.views import (
    Augment,
    Normalize,
    ViewPipeline,
    augment_record,
    flatten_views,
    parse_augment,
    stack,
    to_device,
)


class BuildInterrupted(RuntimeError):
    """The pass stopped early (Ctrl-C); the partial file is flushed and resumable."""

    exit_code = 130


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


def _check_paths(config: BuildConfig, out: Path) -> None:
    """Before any work: the output can be written and nothing finished would be silently replaced."""
    runtime = config.runtime
    if not out.parent.exists():
        raise FileNotFoundError(f"output directory {out.parent} does not exist")
    if out.exists() and not runtime.overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")
    partial = store.partial_path(out)
    if partial.exists() and not (runtime.resume or runtime.overwrite):
        raise FileExistsError(
            f"a partial build exists at {partial}: add --resume to continue it or --overwrite to start again"
        )


def cache_metadata(
    config: BuildConfig, teachers: list[Teacher], source: DatasetSource, augment: Augment
) -> store.Metadata:
    """What the cache records about how it was made (`augment`: the parsed `--augment`)."""
    storage = config.storage
    dataset = source.describe()
    return store.Metadata(
        teacher=teachers[0].record(),
        dataset=store.DatasetRecord(
            **{**dataset, "fingerprint": store.dataset_fingerprint(source.keys, source.labels)},
            digests=f"sha256 of {source.digest_source}",
        ),
        preprocessing=teachers[0].input,
        augment=augment_record(augment, config.augmentation.seed, config.augmentation.views),
        build=store.BuildRecord(
            dtype=storage.dtype,
            storage=storage.mode,
            topk=storage.topk,
            amp=config.model.amp,
            compression=storage.compression,
        ),
        teachers=member_records(teachers) if len(teachers) > 1 else None,
    )


def member_records(teachers: list[Teacher]) -> tuple[store.TeacherRecord, ...]:
    """Every teacher's record with a unique name (its spec, numbered when repeated) and its input."""
    names: list[str] = []
    for teacher in teachers:
        name = teacher.spec if teacher.spec not in names else f"{teacher.spec}#{names.count(teacher.spec) + 1}"
        names.append(name)
    return tuple(replace(t.record(), name=name, input=t.input.to_dict()) for t, name in zip(teachers, names))


def resume_differences(recorded: store.Metadata, wanted: store.Metadata) -> list[str]:
    """What differs between a partial file's metadata and what this command would write."""
    checks = [
        (
            "teacher",
            [m.identity() for m in recorded.teachers or (recorded.teacher,)],
            [m.identity() for m in wanted.teachers or (wanted.teacher,)],
        ),
        ("dataset", recorded.dataset.identity(), wanted.dataset.identity()),
        ("preprocessing", recorded.preprocessing, wanted.preprocessing),
        ("augment", recorded.augment.to_dict(), wanted.augment.to_dict()),
        ("build", recorded.build.to_dict(), wanted.build.to_dict()),
    ]
    return [f"{name}: partial has {a!r}, this command {b!r}" for name, a, b in checks if a != b]


def _open_writer(config: BuildConfig, out: Path, layout: store.Layout, source, rows, meta) -> store.CacheWriter:
    partial = store.partial_path(out)
    if config.runtime.resume and partial.exists() and not config.runtime.overwrite:
        writer = store.CacheWriter.resume(out, bars=progress.factory(config.runtime.progress))
        differences = resume_differences(writer.meta, meta)
        if writer.layout != layout:
            differences.append(f"layout: partial has {writer.layout}, this command {layout}")
        if differences:
            writer.close()
            raise ValueError(
                f"cannot resume {partial}: it was built with other settings ({differences[0]}); "
                f"use the original options or --overwrite"
            )
        return writer
    return store.CacheWriter.create(out, layout, source.keys[rows[0] : rows[1]], source.labels[rows[0] : rows[1]], meta)


def _example(source: DatasetSource, prep, views: BuildViews, augment: Augment):
    """Two copies of the first sample's first view: what the teachers are probed with (a real sample,
    so tensor samples of any shape, and dicts of them, probe as they will run)."""
    pipeline = ViewPipeline(prep, augment, source)
    x = pipeline.decode(source.load(0))
    view = pipeline.view(x, pipeline.stored_params(x, views.seed, source.keys[0], 1)[0])
    return stack([view, view])


def _accuracy(info: store.CacheInfo) -> float | None:
    """The teacher's accuracy on the cache's samples; None where they have no labels."""
    return (info.teacher_accuracy or 0.0) if info.layout.labelled else None


def _probe_classes(teacher: Teacher, device, example) -> int:
    prep = teacher.input
    try:
        with torch.inference_mode():
            out = teacher.model(to_device(Normalize(prep).to(device)(to_device(example, device)), device))
    except (RuntimeError, TypeError, ValueError, KeyError, AttributeError) as err:
        raise ValueError(
            f"the teacher {teacher.spec} cannot run on {_shapes(example)} inputs ({str(err).splitlines()[0]}); "
            f"check the model, --image-size, --mean/--std"
        ) from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the teacher must return (batch, classes) logits, got {shape}")
    return int(out.shape[1])


def _shapes(batch) -> str:
    if isinstance(batch, dict):
        return "{" + ", ".join(f"{k}: {tuple(v.shape)} {v.dtype}" for k, v in batch.items()) + "}"
    return f"{tuple(batch.shape)} {batch.dtype}"


def _check_members(teachers: list[Teacher], classes: list[int], dataset: str, num_classes: int) -> None:
    """Several teachers run on the same views: the same classes and the same view geometry."""
    for teacher, count in zip(teachers, classes):
        if count != num_classes:
            raise ValueError(
                f"the teacher {teacher.spec} outputs {count} classes but {dataset} has {num_classes}; "
                f"use a teacher for this dataset (or --num-classes {num_classes})"
            )
    first = teachers[0]
    for teacher in teachers[1:]:
        mine, theirs = first.input, teacher.input
        if mine.geometry != theirs.geometry:
            raise ValueError(
                f"the teachers {first.spec} and {teacher.spec} take different views ({mine.to_dict()} vs "
                f"{theirs.to_dict()}): they must see the same views; pass --image-size (and "
                f"--mean/--std) to make them agree"
            )


class _BackgroundWriter:
    """Writes blocks on a thread so the teacher never waits for the disk (torch and h5py release the GIL)."""

    def __init__(self, writer: store.CacheWriter):
        self.writer = writer
        self.queue: queue.Queue = queue.Queue(maxsize=4)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while (rows := self.queue.get()) is not None:
            if self.error is None:
                try:
                    self.writer.write(rows)
                except BaseException as err:  # reported to the main thread on its next put/close
                    self.error = err

    def put(self, rows: store.Rows) -> None:
        self._raise()
        self.queue.put(rows)

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

    Raises:
        ValueError, FileNotFoundError, FileExistsError: bad options or inputs, before any teacher time.
        OSError: the disk (full, file-size limit); what was written is kept for --resume.
        BuildInterrupted: Ctrl-C; the partial is resumable.
    """
    augment = _check_options(config)
    rank = current_rank()
    if rank.distributed:
        if config.data.shard:
            raise ValueError("--shard is for separate jobs; under torchrun the ranks split the data themselves")
        return _build_distributed(config, rank, augment)
    _check_paths(config, Path(config.out))
    stale = stale_rank_shards(config.out, 1)
    if stale and not config.runtime.overwrite:
        raise ValueError(
            f"shards of a torchrun build of {config.out} exist ({stale[0].name}): rerun it under "
            f"torchrun with as many processes to resume, or pass --overwrite to start again"
        )
    return _build_shard(config, Path(config.out), config.data.shard, augment)


def _check_options(config: BuildConfig) -> Augment:
    """Refuse bad options before any work; returns the augmentation `--augment` names (parsed here only)."""
    views = config.augmentation
    if views.views > 1 and views.augment == "none":
        raise ValueError(
            "--views > 1 needs an augmentation (--augment cifar|imagenet|flip): "
            "views of the un-augmented image would all be identical"
        )
    for name, value in (("views", views.views), ("batch_size", config.runtime.batch_size)):
        if value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    augment = parse_augment(views.augment)
    if config.storage.dtype not in store.DTYPES:
        raise ValueError(f"unknown --dtype {config.storage.dtype!r}; choose one of: {', '.join(store.DTYPES)}")
    return augment


def load_build_teachers(config: BuildConfig, source: DatasetSource) -> list[Teacher]:
    """Every teacher, with the input `resolve_input` gives it on this dataset."""
    model = config.model
    teachers = []
    for spec, weights in model.members:
        torch.manual_seed(RANDOM_INIT_SEED)  # a teacher without --weights is initialised identically in every process
        teachers.append(
            load_teacher(
                spec,
                weights=weights,
                num_classes=model.num_classes or len(source.classes) or None,  # unlabelled: the weights say
                trust_checkpoint=model.trust_checkpoint,
                data=data_input(source.defaults),
                mean=model.mean,
                std=model.std,
                image_size=model.image_size,
            )
        )
    return teachers


def _build_shard(config: BuildConfig, out: Path, shard: tuple[int, int] | None, augment: Augment) -> BuildResult:
    """One process's pass over the rows of `shard` (all rows when None), written to `out`."""
    device = resolve_device(config.runtime.device)
    data = config.data
    source = open_dataset(data.dataset, data.split, data.data_root, data.download)
    teachers = load_build_teachers(config, source)
    for teacher in teachers:
        teacher.model = prepare_model(teacher.model, device).eval()
    example = _example(source, teachers[0].input, config.augmentation, augment)
    probed = [_probe_classes(t, device, example) for t in teachers]
    num_classes = len(source.classes) if source.labelled else probed[0]  # unlabelled: the teacher's classes
    _check_members(teachers, probed, data.dataset, num_classes)
    rows = shard_range(*shard, len(source)) if shard else (0, len(source))
    storage, views = config.storage, config.augmentation
    meta = cache_metadata(config, teachers, source, augment)
    layout = store.Layout(
        num_samples=rows[1] - rows[0],
        num_classes=num_classes,
        num_views=views.views,
        storage=storage.mode,
        dtype=storage.dtype,
        topk=storage.topk,
        param_names=meta.augment.param_names,  # the layout's `views/params` names are the record's
        compression=storage.compression,
        block_rows=config.block_rows,
        num_teachers=len(teachers),
        sample_digests=True,
        labelled=source.labelled,
    )
    if shard:
        keys, labels = source.keys[rows[0] : rows[1]], source.labels[rows[0] : rows[1]]
        meta = meta.replace(
            shard=store.ShardRecord(
                index=shard[0],
                count=shard[1],
                start=rows[0],
                stop=rows[1],
                fingerprint=store.dataset_fingerprint(keys, labels),
            )
        )
    _check_replay(source, ViewPipeline(teachers[0].input, augment, source), views, rows[0])
    writer = _open_writer(config, out, layout, source, rows, meta)
    with (
        cpu_threads(device, config.runtime.workers, config.runtime.threads),
        stop_on_signals(config.runtime.stop_signals) as stop,
    ):
        return _run_pass(config, writer, source, rows[0], teachers, device, stop, augment)


def _check_replay(source: DatasetSource, pipeline: ViewPipeline, views: BuildViews, row: int) -> None:
    """Before any teacher time: one view of the first sample, made twice, must be the same bits."""
    x = pipeline.decode(source.load(row))
    pipeline.check_replay(x, pipeline.stored_params(x, views.seed, source.keys[row], 1)[0])


def _build_distributed(config: BuildConfig, rank, augment: Augment) -> BuildResult:
    """torchrun: rank r writes shard r of world_size; rank 0 merges after a barrier."""
    import torch.distributed as dist

    out, runtime = Path(config.out), config.runtime
    _check_paths(config, out)
    shard_out = rank_shard_path(out, rank.rank, rank.world_size)
    if not (runtime.resume and shard_out.exists()):  # a finished shard of an earlier run is reused
        _check_paths(config, shard_out)
    stale = stale_rank_shards(out, rank.world_size)
    if stale and not runtime.overwrite:
        raise ValueError(
            f"shards of a run with another number of processes exist ({stale[0].name}): "
            f"rerun with that many processes to resume, or pass --overwrite to start again"
        )
    if runtime.device == "auto" and torch.cuda.is_available():
        config = config.replace(device=f"cuda:{rank.local_rank}")
    # gloo on every device: the ranks only ever meet at barriers, no tensors are exchanged.
    dist.init_process_group("gloo", timeout=datetime.timedelta(hours=2))
    try:
        if runtime.resume and shard_out.exists():
            store.verify(shard_out)
            result = None
        else:
            result = _build_shard(
                config.replace(progress=runtime.progress and rank.is_main),
                shard_out,
                (rank.rank, rank.world_size),
                augment,
            )
        dist.barrier()
        if rank.is_main:
            shards = [rank_shard_path(out, r, rank.world_size) for r in range(rank.world_size)]
            merge_caches(shards, out, overwrite=runtime.overwrite, progress=runtime.progress)
            for path in shards:
                path.unlink()
            store.partial_path(out).unlink(missing_ok=True)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    info = store.read_info(out)
    return BuildResult(
        out,
        info.layout.num_samples,
        info.layout.num_views,
        _accuracy(info),
        result.seconds if result else 0.0,
        result.images_per_second if result else 0.0,
        result.resumed_from if result else 0,
    )


def _run_pass(
    config: BuildConfig,
    writer: store.CacheWriter,
    source,
    first_row: int,
    teachers: list[Teacher],
    device,
    stop: StopRequest,
    augment: Augment,
) -> BuildResult:
    """Compute rows `first_row + writer.done_rows ...` of the dataset into `writer`, then finish it."""
    resumed = writer.done_rows
    total = writer.layout.num_samples
    views = config.augmentation
    inputs = TeacherInputs(source, ViewPipeline(teachers[0].input, augment, source), views.views, views.seed)
    loader = make_loader(inputs, range(first_row + resumed, first_row + total), config, device)
    members = [(t.model, Normalize(t.input).to(device)) for t in teachers]  # each normalises the same views
    background = _BackgroundWriter(writer)
    started = time.perf_counter()
    bar = progress.bar(
        total=total,
        initial=resumed,
        unit="view" if views.views > 1 else "img",
        desc="teacher pass",
        enabled=config.runtime.progress,
        unit_scale=views.views if views.views > 1 else False,
    )
    try:
        _compute(loader, members, background, writer, source, device, config, bar, stop)
        background.close()
    except (KeyboardInterrupt, Stopped) as err:
        _stop(background, writer)
        saved = f"{writer.done_rows} of {total} samples are saved in {store.partial_path(writer.path)}"
        if isinstance(err, Stopped):
            raise Stopped(f"stopped by {stop.name}: {saved}; run the same command with --resume to continue") from None
        raise BuildInterrupted(f"interrupted: {saved}; run the same command with --resume to continue") from None
    except SampleError as err:
        _stop(background, writer)
        raise SampleError(
            f"{err}; the {writer.done_rows} samples written to {store.partial_path(writer.path)} are kept: "
            f"fix or remove the file and rerun with --resume"
        ) from err
    except OSError as err:
        _stop(background, writer)
        if err is not background.error:
            raise
        raise OSError(
            f"writing {store.partial_path(writer.path)} failed ({store.short_reason(err)}); the "
            f"{writer.done_rows} samples written are kept: fix the cause and rerun with --resume"
        ) from None
    except BaseException:
        _stop(background, writer)
        raise
    finally:
        bar.close()
    path = _finish(writer, config.runtime.progress)
    seconds = time.perf_counter() - started  # includes the final re-verification: storing's full cost
    accuracy = _accuracy(store.read_info(path))
    return BuildResult(
        path,
        total,
        views.views,
        accuracy,
        seconds,
        (total - resumed) * views.views / max(seconds, 1e-9),
        resumed_from=resumed,
    )


def _compute(loader, members, background, writer, source, device, config, bar, stop: StopRequest) -> None:
    """The teacher over every batch; on a stop signal, up to the end of the block being computed."""
    block_rows, rows = writer.layout.block_rows, writer.done_rows
    stop_at: int | None = None
    batches = iter(loader)
    try:
        with torch.inference_mode():
            for indices, batch, params, digests in batches:
                if stop.requested and stop_at is None:
                    stop_at = -(-rows // block_rows) * block_rows  # the end of the block in progress
                if stop_at is not None and rows >= stop_at:
                    raise Stopped(stop.name)
                logits = _forward(members, batch, device, config.model.amp)
                background.put(_encode(logits, params, digests, indices, writer.layout, source))
                rows += len(indices)
                bar.update(len(indices))
    finally:
        end_workers(batches)  # also on an error: its workers hold the partial open (and locked)
    if stop.requested and rows < writer.layout.num_samples:
        raise Stopped(stop.name)


def _finish(writer: store.CacheWriter, show_progress: bool = True) -> Path:
    try:
        return writer.finish(bars=progress.factory(show_progress))
    except OSError as err:
        store.close_quietly(writer)
        raise OSError(
            f"finishing {writer.path} failed ({store.short_reason(err)}); all rows are "
            f"kept in {store.partial_path(writer.path)}: fix the cause and rerun with --resume"
        ) from None


def _stop(background: _BackgroundWriter, writer: store.CacheWriter) -> None:
    """Drain what is queued (complete blocks get written), then close the partial cleanly."""
    try:
        background.close()
    except BaseException:
        pass
    store.close_quietly(writer)


def _forward(members: list, views, device, amp: bool) -> torch.Tensor:
    """(B, V, C) logits of one teacher, or (B, V, M, C) of M teachers, on the same views (a tensor,
    or a dict of tensors for tensor samples)."""
    batch, num_views = _leading(views)
    images = to_device(flatten_views(views), device)
    outputs = []
    for model, normalize in members:
        normalised = normalize(images)  # float32, outside autocast
        with autocast(device, amp):
            logits = model(normalised)
        outputs.append(logits.float().view(batch, num_views, -1))
    return outputs[0] if len(outputs) == 1 else torch.stack(outputs, dim=2)


def _leading(views) -> tuple[int, int]:
    first = next(iter(views.values())) if isinstance(views, dict) else views
    return int(first.shape[0]), int(first.shape[1])


def _encode(logits, params, digests, indices, layout: store.Layout, source: DatasetSource) -> store.Rows:
    try:
        return store.Rows.encode(
            layout.mode,
            logits,
            params.numpy() if layout.param_names else None,
            digests.numpy() if layout.sample_digests else None,
        )
    except store.NonFiniteOutputs as err:
        keys = [key_text(source.keys[int(indices[row])]) for row in err.rows[:5]]
        raise ValueError(
            f"the teacher produced NaN/inf logits for {len(err.rows)} sample(s) in a batch, "
            f"first keys: {', '.join(keys)}; nothing was marked complete "
            f"(fp16 overflow? try --no-amp or --dtype float32)"
        ) from None
