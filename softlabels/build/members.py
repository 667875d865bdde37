"""The teachers of a build: loaded for the data, probed on a real sample, checked to agree on classes and
views, and recorded in the cache (`load_build_teachers`, `cache_metadata`)."""

from __future__ import annotations

from dataclasses import replace

import torch

from softlabels import store
from softlabels.build.config import BuildConfig
from softlabels.data import DatasetSource
from softlabels.models.inputs import data_input
from softlabels.models.teachers import RANDOM_INIT_SEED, Teacher, load_teacher
from softlabels.views import Augment, augment_record


def cache_metadata(
    config: BuildConfig, teachers: list[Teacher], source: DatasetSource, augment: Augment
) -> store.Metadata:
    """What the cache records about how it was made (`augment`: the parsed `--augment`)."""
    storage = config.storage
    dataset = source.describe()
    return store.Metadata(
        teacher=teacher_record(teachers[0]),
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
            **storage.embedding_record(),
        ),
        teachers=member_records(teachers) if len(teachers) > 1 else None,
    )


def teacher_record(teacher: Teacher) -> store.TeacherRecord:
    """Provenance for a cache: spec, weights file name and hash, size and class of the model."""
    return store.TeacherRecord(
        spec=teacher.spec,
        weights=teacher.weights,
        weights_name=teacher.weights_name,
        weights_sha256=teacher.weights_sha256,
        num_params=teacher.num_params,
        model_class=getattr(teacher.model, "original_name", type(teacher.model).__name__),
        # timm's models carry their class count; 0 only where the source builds encoders (`--num-classes 0`)
        num_classes=0 if getattr(teacher.model, "num_classes", None) == 0 else None,
    )


def member_records(teachers: list[Teacher]) -> tuple[store.TeacherRecord, ...]:
    """Every teacher's record with a unique name (its spec, numbered when repeated) and its input."""
    names: list[str] = []
    for teacher in teachers:
        name = teacher.spec if teacher.spec not in names else f"{teacher.spec}#{names.count(teacher.spec) + 1}"
        names.append(name)
    return tuple(replace(teacher_record(t), name=name, input=t.input.to_dict()) for t, name in zip(teachers, names))


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


def check_members(
    teachers: list[Teacher], classes: list[int], dataset: str, num_classes: int, logits: bool = True
) -> None:
    """Several teachers run on the same views: the same classes (when logits are stored) and the same
    view geometry."""
    for teacher, count in zip(teachers, classes):
        if logits and count != num_classes:
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
                num_classes=model.num_classes if model.num_classes is not None else len(source.classes) or None,
                trust_checkpoint=model.trust_checkpoint,
                data=data_input(source.defaults),
                mean=model.mean,
                std=model.std,
                image_size=model.image_size,
            )
        )
    return teachers
