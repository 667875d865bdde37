"""The one place an `--augment` text becomes an `Augment`, and where a cache's augment record is
written from one and read back into one.

    augment = parse_augment("imagenet+mixup:0.4")       # at the edge: the CLI's or a config's text
    record = augment_record(augment, seed=0, views=4)   # what the cache records (store.AugmentRecord)
    augment = recorded_augment(info.augment)            # a cache's augmentation, to replay its views

Everything between passes the object (or the record), never the text.
"""

from __future__ import annotations

from softlabels import store
from softlabels.views.augment import Augment
from softlabels.views.geometric import AUGMENTS
from softlabels.views.mixed import parse_mixed
from softlabels.views.user import identity_differences, is_user_spec, load_user_augment


def parse_augment(text: str) -> Augment:
    """A built-in augmentation by name, `BASE+mixup[:ALPHA]` / `BASE+cutmix[:ALPHA]`
    (`softlabels.views.mixed`), or a user's `FILE.py:NAME` (`softlabels.views.user`)."""
    if text in AUGMENTS:
        return AUGMENTS[text]
    if is_user_spec(text):
        return load_user_augment(text)
    mixed = parse_mixed(text)
    if mixed is not None:
        return mixed
    raise ValueError(
        f"unknown augment {text!r}; choose one of: {', '.join(AUGMENTS)}, BASE+mixup[:ALPHA], BASE+cutmix[:ALPHA], "
        f"or FILE.py:NAME"
    )


def augment_record(augment: Augment, seed: int, views: int) -> store.AugmentRecord:
    """What a cache records about how its views were made (its parameter names and types included)."""
    return store.AugmentRecord(
        name=augment.name,
        seed=seed,
        views=views,
        param_names=tuple(augment.param_names),
        param_dtypes=tuple(augment.param_dtypes) if "float32" in augment.param_dtypes else None,
        **augment.identity(),
    )


def recorded_augment(record: store.AugmentRecord) -> Augment:
    """The augmentation a cache's record names (a user's loaded from the recorded file)."""
    return parse_augment(record.name)


def require_unchanged(record: store.AugmentRecord, augment: Augment, cache: str) -> None:
    """Refuse to replay with a user augmentation that changed since the cache was built."""
    if not record.source_sha256:
        return
    changed = identity_differences(record.identity(), augment)
    if changed:
        raise ValueError(
            f"the augmentation {record.name} changed since {cache} was built "
            f"({changed[0]}): its views would not replay; rebuild the cache, or pass "
            f"--inconsistent-augment to train on them anyway"
        )
