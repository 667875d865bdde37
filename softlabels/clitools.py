"""Click pieces shared by the `softlabels` and `trainer` commands: clean errors and value parsers."""

from __future__ import annotations

import errno
import sys

import click

# Errors a user can act on: printed as one line, never as a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, PermissionError, OSError, RuntimeError)


class StrictCommand(click.Command):
    """A command that refuses an option given twice unless it may repeat: click would keep the last
    one silently (`--teacher A --teacher B` building with B alone)."""

    def parse_args(self, ctx, args):
        counts: dict[str, int] = {}
        names: dict[str, str] = {}
        for param in self.params:
            if isinstance(param, click.Option) and not param.multiple and not param.count:
                for opt in (*param.opts, *param.secondary_opts):
                    names[opt] = param.opts[0]
        for token in args:
            if token == "--":
                break
            opt = token.split("=", 1)[0]
            if opt in names:
                counts[names[opt]] = counts.get(names[opt], 0) + 1
        repeated = [opt for opt, count in counts.items() if count > 1]
        if repeated:
            raise click.UsageError(
                f"{repeated[0]} is given {counts[repeated[0]]} times but takes one value (only the last would count)",
                ctx,
            )
        return super().parse_args(ctx, args)


class CleanErrors(click.Group):
    """A click group that turns library errors into `error: ...` and a non-zero exit; its commands
    refuse options repeated that cannot repeat (`StrictCommand`)."""

    command_class = StrictCommand

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            sys.exit(130)
        except USER_ERRORS as err:
            click.echo(f"error: {one_line(err)}", err=True)
            sys.exit(1)


def one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """`warnings.showwarning` for the command lines: `warning: ...` on one line of stderr."""
    click.echo(f"warning: {message}", err=True)


def one_line(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        text = f"{text} (no space left on device)"
    return " ".join(text.split())


def _parse_floats(value: str) -> tuple[float, ...]:
    try:
        numbers = tuple(float(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of numbers, e.g. 0.5,0.5,0.5") from None
    if len(numbers) not in (1, 3):
        raise click.BadParameter(f"give 1 or 3 values, got {len(numbers)}")
    return numbers


class _Floats(click.ParamType):
    name = "R,G,B"

    def convert(self, value, param, ctx):
        return value if isinstance(value, tuple) else _parse_floats(value)


floats = _Floats()


def int_range(minimum: int, maximum: int | None = None) -> click.IntRange:
    return click.IntRange(min=minimum, max=maximum)


def require(options: dict, *names: str) -> None:
    """Options a command needs, given as flags or in its --config file."""
    for name in names:
        if options.get(name) is None:
            raise click.UsageError(f"Missing option '--{name.replace('_', '-')}' (on the command line or in --config)")


def read_config_file(path: str) -> dict:
    """Options from a JSON (or, with PyYAML, YAML) file: flat names, option groups, or a run's
    summary.json (its `config`), all as flat option names."""
    from pathlib import Path

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    text = file.read_text()
    if file.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ValueError(f"{path} is YAML: pip install 'softlabels[yaml]' (or give the config as JSON)") from None
        data = yaml.safe_load(text)
    else:
        import json

        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of option names to values")
    data = data.get("config", data)  # a run's summary.json
    flat: dict = {}
    for name, value in data.items():
        flat.update(value if isinstance(value, dict) else {name: value})
    return flat


def apply_config_file(ctx: click.Context, options: dict, path: str | None, ignore: tuple[str, ...] = ()) -> dict:
    """Fill the options left at their defaults on the command line from a config file: flags win."""
    if not path:
        return options
    from click.core import ParameterSource

    values = read_config_file(path)
    unknown = sorted(set(values) - set(options) - set(ignore))
    if unknown:
        raise ValueError(f"{path} names unknown option(s): {', '.join(unknown)}")
    merged = dict(options)
    for name, value in values.items():
        if name in options and ctx.get_parameter_source(name) in (ParameterSource.DEFAULT, None):
            merged[name] = tuple(value) if isinstance(value, list) else value
    return merged
