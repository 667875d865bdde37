"""The teacher pass: run a teacher once over a dataset and write its logits (and/or embeddings) to a cache."""

from __future__ import annotations

import datetime
import queue
import threading
import time
from pathlib import Path

import torch

from softlabels import progress, store, threads
from softlabels.build.config import BuildConfig, BuildResult
from softlabels.build.forward import TargetKinds, forward, probe, taps
from softlabels.build.inputs import TeacherInputs, check_replay, make_loader, probe_example
from softlabels.build.members import (
    cache_metadata,
    check_members,
    load_build_teachers,
    resume_differences,
)
from softlabels.build.requeue import already_built
from softlabels.build.shards import merge_caches, rank_shard_path, shard_range, stale_rank_shards
from softlabels.data import DatasetSource, key_text, open_dataset
from softlabels.data.sample_errors import SampleError
from softlabels.models.teachers import Teacher
from softlabels.runtime import (
    amp_active,
    cpu_threads,
    current_rank,
    end_workers,
    prepare_model,
    resolve_device,
)
from softlabels.stopping import Stopped, StopRequest, stop_on_signals
from softlabels.views import (
    Augment,
    Normalize,
    ViewPipeline,
    nonfinite_rows,
    parse_augment,
)


class BuildInterrupted(RuntimeError):
    """The pass stopped early (Ctrl-C); the partial file is flushed and resumable."""

    exit_code = 130


def _check_paths(config: BuildConfig, out: Path) -> None:
    """Before any work: the output can be written and nothing finished would be silently replaced."""
    runtime = config.runtime
    if out.parent.exists() and not out.parent.is_dir():  # a missing folder is created with the first file
        raise FileExistsError(f"cannot write {out}: {out.parent} is a file, not a folder")
    if out.exists() and not runtime.overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")
    partial = store.partial_path(out)
    if partial.exists() and not (runtime.resume or runtime.overwrite):
        raise FileExistsError(
            f"a partial build exists at {partial}: add --resume to continue it or --overwrite to start again"
        )


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
    out.parent.mkdir(parents=True, exist_ok=True)  # as `trainer fit --out` does; only once the inputs passed
    return store.CacheWriter.create(out, layout, source.keys[rows[0] : rows[1]], source.labels[rows[0] : rows[1]], meta)


def _accuracy(info: store.CacheInfo) -> float | None:
    """The teacher's accuracy on the cache's samples; None where they have no labels or it stores no logits."""
    return (info.teacher_accuracy or 0.0) if info.layout.labelled and info.layout.has_logits else None


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
    complete = already_built(config, augment)
    if complete is not None:
        return complete
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
    if target_kinds(config).logits and config.model.num_classes == 0:  # also refuses bad --targets now
        raise ValueError(
            "--num-classes 0 builds the teacher as an encoder without its classifier: it has no logits to "
            "store; build its embeddings with --targets embedding"
        )
    if config.storage.dtype not in store.DTYPES:
        raise ValueError(f"unknown --dtype {config.storage.dtype!r}; choose one of: {', '.join(store.DTYPES)}")
    return augment


def target_kinds(config: BuildConfig) -> TargetKinds:
    storage = config.storage
    return TargetKinds.parse(storage.targets, storage.embedding_layer, storage.embedding_dtype)


def _build_shard(config: BuildConfig, out: Path, shard: tuple[int, int] | None, augment: Augment) -> BuildResult:
    """One process's pass over the rows of `shard` (all rows when None), written to `out`."""
    device = resolve_device(config.runtime.device)
    data = config.data
    source = open_dataset(data.dataset, data.split, data.data_root, data.download)
    teachers = load_build_teachers(config, source)
    for teacher in teachers:
        teacher.model = prepare_model(teacher.model, device).eval()
    num_classes = len(source.classes) if source.labelled else None
    example = probe_example(source, teachers[0].input, config.augmentation, augment)
    kinds = target_kinds(config)
    probes = probe(teachers, device, example, kinds, num_classes)
    num_classes = num_classes or probes[0].num_outputs  # unlabelled: the teacher's classes
    check_members(teachers, [p.num_outputs for p in probes], data.dataset, num_classes, kinds.logits)
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
        targets=kinds.kinds,
        embedding_dim=probes[0].embedding_dim,
        embedding_dtype=kinds.dtype,
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
    check_replay(source, ViewPipeline(teachers[0].input, augment, source), views, rows[0], rows[1])
    writer = _open_writer(config, out, layout, source, rows, meta)
    with (
        cpu_threads(device, config.runtime.workers, config.runtime.threads),
        stop_on_signals(config.runtime.stop_signals) as stop,
    ):
        return _run_pass(config, writer, source, rows[0], teachers, device, stop, augment)


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
        with taps(members, target_kinds(config)) as member_taps:
            _compute(loader, members, member_taps, background, writer, source, device, config, bar, stop)
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
            f"fix the file and rerun with --resume, or remove it (the dataset changes) and rerun with --overwrite"
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


def _compute(loader, members, member_taps, background, writer, source, device, config, bar, stop: StopRequest) -> None:
    """The teacher over every batch; on a stop signal, up to the end of the block being computed."""
    block_rows, rows = writer.layout.block_rows, writer.done_rows
    stop_at: int | None = None
    batches = iter(loader)
    try:
        with torch.inference_mode():
            for indices, batch, params, digests in threads.paced(batches):  # threads follow the idle cores
                if stop.requested and stop_at is None:
                    stop_at = -(-rows // block_rows) * block_rows  # the end of the block in progress
                if stop_at is not None and rows >= stop_at:
                    raise Stopped(stop.name)
                logits, features = forward(members, member_taps, batch, device, config.model.amp)
                try:
                    background.put(_encode(logits, features, params, digests, writer.layout))
                except store.NonFiniteOutputs as err:
                    outputs, what = (logits, "logits") if writer.layout.has_logits else (features, "embeddings")
                    raise ValueError(
                        _nonfinite_message(err.rows, batch, outputs, indices, source, config, what)
                    ) from None
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


def _encode(logits, features, params, digests, layout: store.Layout) -> store.Rows:
    return store.Rows.encode(
        layout.mode,
        logits if layout.has_logits else None,
        params.numpy() if layout.param_names else None,
        digests.numpy() if layout.sample_digests else None,
        layout.embedding,
        features,
    )


def _nonfinite_message(rows: list[int], views, outputs, indices, source: DatasetSource, config, what: str) -> str:
    """Why the stored outputs (`what`: logits or embeddings) would be NaN/inf: the inputs themselves
    (named), the float16 storage, fp16 overflow (only when AMP was on), or the teacher."""
    inputs = nonfinite_rows(views)
    named = inputs or rows
    keys = ", ".join(key_text(source.keys[int(indices[row])]) for row in named[:5])
    if inputs:
        return (
            f"the inputs of {len(inputs)} sample(s) in a batch hold NaN/inf values, first keys: {keys}; nothing was "
            f"marked complete: fix or leave out those samples (the dataset returned non-finite values)"
        )
    if bool(torch.isfinite(outputs[rows]).all()):
        cause = "they overflow float16 storage past 65504: use --dtype float32"
    elif amp_active(outputs.device, config.model.amp):
        cause = "fp16 overflow? try --no-amp"
    else:
        cause = "check the teacher's weights: its outputs are non-finite on finite inputs"
    return (
        f"the teacher produced NaN/inf {what} for {len(rows)} sample(s) in a batch, first keys: {keys}; "
        f"nothing was marked complete ({cause})"
    )
