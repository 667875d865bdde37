"""The one place that decides what a model takes as input (`resolve_input`): channels, size, the
resize before the centre crop, its interpolation, and the statistics.

`resolve_input` answers "what input does this model take here?" for every caller: the teacher pass,
online KD, students and `verify --recompute`. Precedence, field by field:

1. flags (`--mean`, `--std`, `--image-size`); their length is the channel count; an explicit
   size on a model with a published eval transform keeps that transform's crop fraction and scales
   its resize (timm's `resolve_data_config` + `create_transform`: 160 px at crop_pct 0.95 resizes to
   168, not to the 235 that 224 px takes);
2. what the weights were trained with, when they record it (checkpoints written by `trainer fit`);
3. what the model declares: a zoo entry's published statistics, when its channel count matches the
   data's (RGB statistics do not fit grey images); the eval transform of timm and torchvision
   weights (their channels, size, resize, interpolation and statistics; grey images become RGB);
4. the data's own defaults (channels, size and statistics of the dataset).

When the views are given (a student learning from a cache, or beside an online teacher), only the
statistics resolve (flags, else the model's where they fit the views' channels, else the data's
fitted to them); the views' geometry stays. An input a cache records (`verify --recompute`) is
taken whole.
"""

from __future__ import annotations

import math

from softlabels.models.preprocessing import Preprocessing, fit_statistics
from softlabels.models.registry import declared_input


def data_input(defaults: dict, channels: int | None = None, image_size: int | None = None) -> Preprocessing:
    """A dataset's defaults (`DatasetSource.defaults`) as an input, optionally for another channel count
    (grey statistics repeated, RGB averaged) or size."""
    mean, std = tuple(defaults["mean"]), tuple(defaults["std"])
    if defaults.get("sample") == "tensor":
        return Preprocessing(mean, std, 1, sample="tensor", features=defaults.get("features"))
    channels = channels or len(mean)
    return Preprocessing(
        fit_statistics(mean, channels),
        fit_statistics(std, channels),
        image_size or defaults["image_size"],
        pixels="uint8",
    )


def resolve_input(
    spec: str,
    data: Preprocessing,
    *,
    views: Preprocessing | None = None,
    recorded: Preprocessing | None = None,
    weights: str | None = None,
    trained: Preprocessing | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    image_size: int | None = None,
) -> Preprocessing:
    """The input model `spec` takes on this data (precedence in the module docstring).

    Args:
        spec: a model spec (zoo name, `timm:NAME`, `torchvision:NAME`, `FILE.py:FUNC`, archive path).
        data: the data's own input (its channels, size and statistics: `data_input(source.defaults)`).
        views: the views the model is given (a cache's recorded input, an online teacher's): their
            geometry stays and only the statistics resolve.
        recorded: the input a cache records for this model (`verify --recompute`): taken whole.
        weights: the `--weights` value (named weights such as `DEFAULT` declare their own transform).
        trained: the input recorded with the model's weights, if any.
        mean, std, image_size: explicit overrides (flags).
    Returns:
        The resolved `Preprocessing`.
    Raises:
        ValueError: for inconsistent overrides (e.g. a mean of 3 values and a std of 1).
    """
    if recorded is not None:
        return recorded
    if views is not None:
        return _on_views(spec, data, views, mean, std)
    if mean is not None and std is not None and len(mean) == len(std) != data.channels and data.is_image:
        data = data.fit_channels(len(mean))  # --mean/--std name the channel count the model is built for
    chosen = data.to_dict()
    declared = dict(declared_input(spec, weights, data.channels) or {})
    declared_crop = declared.pop("crop_pct", None)
    chosen.update({key: value for key, value in declared.items() if value is not None})
    if trained is not None:
        chosen.update(trained.to_dict())
    if not data.is_image:  # tensor samples are fed as they are: no geometry or statistics to resolve
        return data
    crop, size = _crop_fraction(chosen, declared, declared_crop), chosen["image_size"]
    flags = {"mean": mean, "std": std, "image_size": image_size}
    chosen.update({key: value for key, value in flags.items() if value is not None})
    _check_statistics(chosen)
    if crop is not None and image_size is not None and image_size != size:
        chosen["resize"] = math.floor(image_size / crop)  # the model's own rule for another size
    if chosen.get("resize") is not None and chosen["resize"] < chosen["image_size"]:
        chosen["resize"] = chosen["image_size"]  # a recorded size above the declared resize: no up-then-crop
    return Preprocessing.from_dict(chosen)


def _crop_fraction(chosen: dict, declared: dict, declared_crop: float | None) -> float | None:
    """The centre crop's fraction of the resized side (timm's crop_pct), where the input has a resize:
    the declared one as published while the declared size and resize stand, else size / resize."""
    if chosen.get("resize") is None:
        return None
    standing = (chosen["image_size"], chosen["resize"]) == (declared.get("image_size"), declared.get("resize"))
    return declared_crop if declared_crop is not None and standing else chosen["image_size"] / chosen["resize"]


def _on_views(
    spec: str,
    data: Preprocessing,
    views: Preprocessing,
    mean: tuple[float, ...] | None,
    std: tuple[float, ...] | None,
) -> Preprocessing:
    """Statistics for given views: flags, else the model's where they fit the views' channels, else
    the data's fitted to them; the views' geometry stays."""
    if not views.is_image:
        return views
    base = data.fit_channels(views.channels) if data.is_image else views
    chosen = {"mean": base.mean, "std": base.std}
    declared = declared_input(spec, None, views.channels) or {}
    chosen.update({key: declared[key] for key in ("mean", "std") if declared.get(key) is not None})
    if len(chosen["mean"]) != views.channels:  # RGB statistics do not fit grey views
        chosen = {"mean": base.mean, "std": base.std}
    chosen.update({key: value for key, value in {"mean": mean, "std": std}.items() if value is not None})
    _check_statistics(chosen)
    if len(chosen["mean"]) != views.channels:
        raise ValueError(f"--mean/--std give {len(chosen['mean'])} channel(s) but the images have {views.channels}")
    return views.with_statistics(tuple(chosen["mean"]), tuple(chosen["std"]))


def _check_statistics(chosen: dict) -> None:
    if len(chosen["mean"]) != len(chosen["std"]):
        raise ValueError(f"--mean and --std need as many values (1 or 3), got {chosen['mean']} and {chosen['std']}")
