"""A requeued build: `softlabels build ... --resume` where the cache is already complete (a job
pre-empted just after it finished, then started again) exits 0 and says so, where a plain rerun
refuses to replace the file. A complete cache built with other settings is still refused."""

from __future__ import annotations

from pathlib import Path

from softlabels import store
from softlabels.build.config import BuildConfig, BuildResult
from softlabels.models.weights import sha256_file
from softlabels.views import Augment


def already_built(config: BuildConfig, augment: Augment) -> BuildResult | None:
    """The complete cache at `--out` when `--resume` asks for it again (None: there is work to do).

    Raises:
        FileExistsError: the cache there was built with other settings (naming the first difference).
        softlabels.CacheError: the file there is not a complete, intact cache.
    """
    out, runtime = Path(config.out), config.runtime
    if not runtime.resume or runtime.overwrite or not out.exists():
        return None
    info = store.read_complete_info(out)
    differences = settings_differences(info, config, augment)
    if differences:
        raise FileExistsError(
            f"{out} is complete but was built with other settings ({differences[0]}): pass --overwrite to "
            f"replace it, or choose another --out"
        )
    layout = info.layout
    return BuildResult(
        out, layout.num_samples, layout.num_views, info.teacher_accuracy or 0.0, 0.0, 0.0, layout.num_samples, True
    )


def settings_differences(info: store.CacheInfo, config: BuildConfig, augment: Augment) -> list[str]:
    """What this command would build differently from the cache `info` describes."""
    members = config.model.members
    checks = [
        ("--dataset", info.dataset.spec, config.data.dataset),
        ("--split", info.dataset.split, config.data.split),
        ("--teacher", [m.spec for m in info.members], [spec for spec, _ in members]),
        ("--weights", [m.weights_sha256 for m in info.members], [_sha256(weights) for _, weights in members]),
        ("--views", info.layout.num_views, config.augmentation.views),
        ("--augment", info.augment.name, augment.name),
        ("--seed", info.view_seeds, [config.augmentation.seed] * config.augmentation.views),
        ("--storage", info.layout.storage, config.storage.mode),
        ("--dtype", info.layout.dtype, config.storage.dtype),
        ("--topk", info.layout.topk, config.storage.topk),
    ]
    return [
        f"{flag}: the cache has {have}, this command {want}"
        for flag, have, want in checks
        if have != _given(have, want)
    ]


def _sha256(path: str | None) -> str | None:
    return sha256_file(path) if path is not None and Path(path).is_file() else None


def _given(have, want):
    """`want` with what the command leaves to defaults (None) taken from the cache."""
    if isinstance(want, list) and isinstance(have, list) and len(want) == len(have):
        return [h if w is None else w for h, w in zip(have, want)]
    return have if want is None else want
