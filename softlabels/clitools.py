"""Click pieces shared by the `softlabels` and `trainer` commands: clean errors and value parsers."""

from __future__ import annotations

import errno
import sys

import click

# Errors a user can act on: printed as one line, never as a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, PermissionError, OSError, RuntimeError)


class CleanErrors(click.Group):
    """A click group that turns library errors into `error: ...` and a non-zero exit."""

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
