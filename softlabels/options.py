"""Nested option groups for `BuildConfig` and `trainer.FitConfig`.

A config is a frozen dataclass whose fields are groups (frozen dataclasses of options) and maybe a few
plain fields. The group named `runtime` holds what may change between a run and its resume (where
and how fast it runs); everything else shapes the result, so a resume must agree on it: by
construction, since `identity()` is every group but `runtime`.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

RUNTIME = "runtime"


class Options:
    """Mixin for a config made of option groups."""

    @classmethod
    def _groups(cls: Any) -> dict[str, type]:
        hints = typing.get_type_hints(cls)
        return {f.name: hints[f.name] for f in dataclasses.fields(cls) if dataclasses.is_dataclass(hints[f.name])}

    @classmethod
    def from_options(cls: Any, **options: Any) -> Any:
        """Build the config from flat options (`--epochs 3` -> epochs=3), each sent to the group that
        declares it; options left at None take the group's default. Unknown names raise TypeError."""
        groups = cls._groups()
        owners = {f.name: group for group, kind in groups.items() for f in dataclasses.fields(kind)}
        plain = {f.name for f in dataclasses.fields(cls)} - set(groups)
        values: dict[str, dict] = {group: {} for group in groups}
        top: dict[str, Any] = {}
        for name, value in options.items():
            if name in plain:
                top[name] = value
            elif name in owners:
                values[owners[name]][name] = value
            else:
                raise TypeError(f"unknown option {name!r}")
        return cls(**top, **{group: groups[group](**values[group]) for group in groups})

    def replace(self, **options: Any) -> Any:
        """A copy with flat options changed."""
        return type(self).from_options(**{**self.flat(), **options})

    def flat(self: Any) -> dict[str, Any]:
        """Every option by its flat name."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out.update(dataclasses.asdict(value) if dataclasses.is_dataclass(value) else {f.name: value})  # type: ignore[arg-type]
        return out

    def to_dict(self: Any) -> dict[str, Any]:
        """The config as nested plain JSON types (tuples as lists)."""
        return _plain(dataclasses.asdict(self))

    def identity(self) -> dict[str, Any]:
        """What a resume must agree on: every group but `runtime` (and plain fields)."""
        return {name: value for name, value in self.to_dict().items() if name != RUNTIME}


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
