"""Options declared once: each is a field of a config dataclass whose metadata says how it appears on
the command line (`option`), and configs made of option groups (`Options`).

A field declared with `option(default, help=...)` (or `field(metadata=declare(help=...))` when it has
no default) carries its flag, type, default, help and
validation; the commands build their click options from these declarations (`softlabels.clitools`)
and a `--config` file goes through the same types, so a default or a check is written in one place.
This module imports no torch: `--help` and the metadata commands start without it. A fact that lives
in a module that does (a loss's default temperature, the names of a registry) is named with
`deferred("module:attribute")` and looked up only when a value or a help text needs it.

A config is a frozen dataclass whose fields are groups (frozen dataclasses of options) and maybe a few
plain fields. The group named `runtime` holds what may change between a run and its resume (where
and how fast it runs); everything else shapes the result, so a resume must agree on it: by
construction, since `identity()` is every group but `runtime`.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import typing
from collections.abc import Callable, Sequence
from typing import Any

import click

RUNTIME = "runtime"
OPTION = "softlabels.option"  # the key of a field's metadata that holds its `Declaration`


class Deferred:
    """A value computed when it is first needed rather than at import: a default that depends on the
    machine, or a fact from a module too heavy to import for `--help`. Calling it gives the value;
    `str()` gives the text a help line shows (click calls a callable default, and prints its str)."""

    def __init__(self, compute: Callable[[], Any], text: str = "{}"):
        self.compute = compute
        self.text = text

    def __call__(self) -> Any:
        return self.compute()

    def __str__(self) -> str:
        return self.text.format(self())

    def __repr__(self) -> str:
        return f"Deferred({self.text!r})"


def deferred(reference: str, form: Callable[[Any], Any] | None = None, text: str = "{}") -> Deferred:
    """`module:attribute`, imported on first use (then `form(value)` where given): e.g.
    `deferred("trainer.losses:LOSSES", tuple)`."""
    module, _, name = reference.partition(":")

    def compute():
        value = getattr(importlib.import_module(module), name)
        return form(value) if form is not None else value

    found = Deferred(compute, text)
    found.reference = reference  # type: ignore[attr-defined]  # tests check that every reference resolves
    return found


def names(registry: Any) -> str:
    """A registry's names as a help text lists them: `a, b, c`."""
    return ", ".join(registry)


@dataclasses.dataclass(frozen=True)
class Declaration:
    """How a config field appears on the command line. `flags` defaults to `--field-name`; a bool
    field is a flag (`--x`, or `--x/--no-x` when it is on by default or `negatable`); `type` defaults
    to the field's annotation (int, float or str)."""

    help: str | Deferred
    type: Any = None
    flags: tuple[str, ...] = ()
    multiple: bool = False
    negatable: bool = False
    metavar: str | None = None
    show_default: str | bool | None = None


def declare(*, help: str | Deferred, **declared: Any) -> dict[str, Declaration]:
    """The metadata of a field that is a command-line option (keywords: those of `Declaration`), for a
    field without a default: `out: str = field(metadata=declare(help=...))`."""
    return {OPTION: Declaration(help, **declared)}


def option(default: Any, *, help: str | Deferred, **declared: Any) -> Any:
    """A dataclass field with a default that is also a command-line option. A callable default (a
    `Deferred`, a function) is computed when the config is made."""
    if callable(default):
        return dataclasses.field(default_factory=default, metadata=declare(help=help, **declared))
    return dataclasses.field(default=default, metadata=declare(help=help, **declared))


def declaration(field: dataclasses.Field) -> Declaration | None:
    return field.metadata.get(OPTION)


def declared_fields(config: type) -> list[tuple[dataclasses.Field, Any, Declaration]]:
    """(field, annotation, declaration) of every option of `config` (and of its groups, when it is
    made of `Options` groups), in field order."""
    return [(f, kind, found) for f, kind in _leaves(config) if (found := declaration(f)) is not None]


def settings_only(config: type) -> set[str]:
    """The fields of a config (and of its groups) that are API settings, not command-line options."""
    return {f.name for f, _ in _leaves(config) if declaration(f) is None}


def _leaves(config: type) -> list[tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(config)
    found = []
    for f in dataclasses.fields(config):
        kind = hints.get(f.name)
        if issubclass(config, Options) and isinstance(kind, type) and dataclasses.is_dataclass(kind):
            found += _leaves(kind)
        else:
            found.append((f, kind))
    return found


def default_of(field: dataclasses.Field) -> Any:
    """What a command line shows and passes when the option is not given (a callable stays deferred;
    MISSING for a field without a default)."""
    if field.default is not dataclasses.MISSING:
        return field.default
    return field.default_factory


def count(minimum: int, maximum: int | None = None) -> click.IntRange:
    """A whole number in [minimum, maximum]."""
    return click.IntRange(min=minimum, max=maximum)


def _parse_floats(value: str) -> tuple[float, ...]:
    try:
        numbers = tuple(float(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of numbers, e.g. 0.5,0.5,0.5") from None
    return numbers


class Floats(click.ParamType):
    """One number per channel: `R,G,B` or one value for grey (a config file may give a list)."""

    name = "R,G,B"
    config_kinds = (str, list)  # what a --config file may give: "0.5,0.5,0.5" or [0.5, 0.5, 0.5]

    def convert(self, value, param, ctx):
        if isinstance(value, (list, tuple)):
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
                self.fail(f"{list(value)!r} is not a list of numbers", param, ctx)
            numbers = tuple(float(v) for v in value)
        else:
            numbers = _parse_floats(value)
        if len(numbers) not in (1, 3):
            self.fail(f"give 1 or 3 values, got {len(numbers)}", param, ctx)
        return numbers


floats = Floats()


class Choices(click.Choice):
    """A choice among a registry's names, looked up when first needed (`--help` of the group, and
    the commands that never use the option, do not import the registry's module)."""

    def __init__(self, registry: Deferred | Sequence[str]):
        self.registry = registry
        self.case_sensitive = True

    @property
    def choices(self) -> Sequence[str]:  # type: ignore[override]
        return tuple(self.registry() if isinstance(self.registry, Deferred) else self.registry)


def default_workers() -> int:
    """DataLoader workers: leave a core for the main process, cap at 8."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


# Options that `softlabels build`, `trainer fit` (and `softlabels verify`) share, word for word.
def device_option() -> Any:
    return option("auto", help="auto, cpu, cuda or cuda:INDEX.")


def amp_option() -> Any:
    return option(True, help="fp16 autocast on CUDA (ignored on CPU).")


def workers_option() -> Any:
    return option(Deferred(default_workers, "cores - 1, at most 8: {} here"), type=count(0), help="DataLoader workers.")


def threads_option() -> Any:
    return option(
        None,
        type=count(1),
        help="CPU intra-op threads  [default: measured as it runs: the cores other processes leave, "
        "less the workers' when the loop waits for batches]",
    )


def data_root_option() -> Any:
    return option("data", type=click.Path(file_okay=False), help="Root of the built-in datasets.")


def download_option() -> Any:
    return option(False, help="Let torchvision download a built-in dataset (needs a network).")


def trust_checkpoint_option() -> Any:
    return option(False, help="Allow full unpickling of --weights (runs code from the file).")


class Options:
    """Mixin for a config made of option groups."""

    @classmethod
    def _groups(cls: Any) -> dict[str, type]:
        hints = typing.get_type_hints(cls)
        return {f.name: hints[f.name] for f in dataclasses.fields(cls) if dataclasses.is_dataclass(hints[f.name])}

    @classmethod
    def from_options(cls: Any, **options: Any) -> Any:
        """Build the config from flat options (`--epochs 3` -> epochs=3), each sent to the group that
        declares it; options not given take the group's default. Unknown names raise TypeError."""
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
