"""Click pieces shared by the `softlabels` and `trainer` commands: clean errors and exit codes, the
options every command has (`--quiet`, `--no-progress`, `--debug`), `--json` output, value parsers.

Exit codes (README, "Scripting"): 0 success; 1 an error the user can act on, printed as one
`error: ...` line (a traceback with `--debug`); 2 bad usage (click); 75 stopped by SIGTERM or
SIGUSR1 with the work saved (rerun with `--resume`); 130 Ctrl-C. Errors that are not the user's
(CUDA out of memory, NCCL, bugs) keep their traceback and exit 1.
"""

from __future__ import annotations

import errno
import json
import re
import sys
import traceback
from dataclasses import dataclass

import click

from softlabels.extras import install_hint

# Errors a user can act on: printed as one line, never as a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, PermissionError, OSError, RuntimeError)
EXIT_ERROR, EXIT_STOPPED, EXIT_INTERRUPTED = 1, 75, 130
WORKER = re.compile(r"Caught (\w+) in DataLoader worker process")
# Exceptions of a DataLoader worker that are the data's fault (their message names the sample or file).
USER_WORKER_ERRORS = ("SampleError", "CacheError")
NOT_THE_USERS = ("CUDA out of memory", "NCCL", "cuDNN error", "CUBLAS_STATUS", "device-side assert")


@dataclass
class Session:
    """What the options every command shares asked for, for the command being run."""

    quiet: bool = False
    progress: bool = True
    debug: bool = False
    json: bool = False

    @property
    def show_progress(self) -> bool:
        return self.progress and not self.quiet


SESSION = Session()


def session() -> Session:
    return SESSION


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
    """A click group that turns library errors into `error: ...` and the documented exit codes; its
    commands refuse options repeated that cannot repeat (`StrictCommand`)."""

    command_class = StrictCommand

    def invoke(self, ctx):
        global SESSION
        SESSION = Session()
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException):
            raise
        except KeyboardInterrupt:
            fail("interrupted", EXIT_INTERRUPTED)
        except Exception as err:
            code = exit_code(err)
            if code is None:  # not the user's: the traceback is what a bug report needs
                raise
            if SESSION.debug:
                traceback.print_exception(type(err), err, err.__traceback__)
                if getattr(err, "worker_traceback", None):
                    click.echo(err.worker_traceback, err=True)
            fail(one_line(err), code)


def fail(message: str, code: int) -> None:
    """Print the error (and, with --json, the JSON object scripts read) and exit with `code`."""
    if SESSION.json:
        click.echo(json.dumps({"ok": False, "error": message, "exit_code": code}))
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def exit_code(err: BaseException) -> int | None:
    """The exit code of a user's error; None for errors that are not the user's (they keep their traceback)."""
    code = getattr(err, "exit_code", None)
    if isinstance(code, int):
        return code
    if not isinstance(err, USER_ERRORS) or is_internal(err):
        return None
    return EXIT_ERROR


def is_internal(err: BaseException) -> bool:
    """CUDA out of memory, NCCL and other device failures, and exceptions of DataLoader workers that are
    not about the data: not something a one-line message helps with."""
    text = str(err)
    if type(err).__name__ in ("OutOfMemoryError", "DistBackendError", "DistNetworkError"):
        return True
    if any(marker in text for marker in NOT_THE_USERS):
        return True
    found = WORKER.search(text)
    return found is not None and found.group(1) not in USER_WORKER_ERRORS


def common_options(progress: bool = True):
    """`--quiet`, `--no-progress` (unless the command has its own) and `--debug` on a command."""

    def set_flag(name):
        def callback(ctx, param, value):
            if value:
                setattr(SESSION, name, name != "progress")
            return value

        return callback

    options = [
        click.option(
            "--quiet",
            "-q",
            is_flag=True,
            expose_value=False,
            callback=set_flag("quiet"),
            help="Print nothing but warnings and errors (no progress, no report lines).",
        ),
        click.option(
            "--debug",
            is_flag=True,
            expose_value=False,
            callback=set_flag("debug"),
            help="Show the full traceback of an error (also a DataLoader worker's).",
        ),
    ]
    if progress:
        options.append(
            click.option(
                "--no-progress",
                "no_progress",
                is_flag=True,
                expose_value=False,
                callback=set_flag("progress"),
                help="No progress bars or progress lines.",
            )
        )

    def decorate(command):
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def json_option(command):
    """`--json`: one JSON object on stdout (also for an error: {"ok": false, "error": ..., "exit_code": ...})."""

    def callback(ctx, param, value):
        SESSION.json = bool(value)
        return value

    return click.option(
        "--json", "as_json", is_flag=True, callback=callback, help="Print one JSON object on stdout (scripts)."
    )(command)


def echo(text: str) -> None:
    """A report line on stdout, unless --quiet or --json."""
    if not (SESSION.quiet or SESSION.json):
        click.echo(text)


def echo_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))


def one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """`warnings.showwarning` for the command lines: `warning: ...` on one line of stderr."""
    click.echo(f"warning: {message}", err=True)


def one_line(err: BaseException) -> str:
    text = worker_message(err) or str(err) or type(err).__name__
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        text = f"{text} (no space left on device)"
    return " ".join(text.split())


def worker_message(err: BaseException) -> str | None:
    """The original message of a data error re-raised from a DataLoader worker (torch wraps it in the
    worker's traceback): the text after its type name on the traceback's last line."""
    text = str(err)
    found = WORKER.search(text)
    if found is None or found.group(1) not in USER_WORKER_ERRORS:
        return None
    marker = f"{found.group(1)}: "
    return text.rsplit(marker, 1)[-1].strip() if marker in text else None


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
            raise ValueError(f"{path} is YAML: {install_hint('yaml')}, or give the config as JSON") from None
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
