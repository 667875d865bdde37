"""Click pieces shared by the `softlabels` and `trainer` commands: clean errors and exit codes, the
options every command has (`--quiet`, `--no-progress`, `--debug`), `--json` output, the click options
made from a config's declarations (`declared_options`) and `--config` files checked by the same types.

Exit codes (README, "Scripting"): 0 success; 1 an error the user can act on, printed as one
`error: ...` line (a traceback with `--debug`); 2 bad usage (click); 75 stopped by SIGTERM or
SIGUSR1 with the work saved (rerun with `--resume`); 130 Ctrl-C. Errors that are not the user's
(CUDA out of memory, NCCL, bugs) keep their traceback and exit 1.
"""

from __future__ import annotations

import errno
import json
import os
import re
import sys
import traceback
import typing
from dataclasses import MISSING, dataclass

import click

from softlabels.extras import install_hint
from softlabels.options import Declaration, declared_fields, default_of, settings_only
from softlabels.stopping import command_signals, command_stop

# Errors a user can act on: printed as one line, never as a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, PermissionError, OSError, RuntimeError)
EXIT_ERROR, EXIT_STOPPED, EXIT_INTERRUPTED = 1, 75, 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader went away
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

    def main(self, *args, **kwargs):
        with command_signals():  # first thing: no moment of a command dies of SIGTERM (softlabels.stopping)
            return super().main(*args, **kwargs)

    def invoke(self, ctx):
        global SESSION
        SESSION = Session()
        try:
            result = super().invoke(ctx)
            _note_late_signal()
            return result
        except (click.exceptions.Exit, click.ClickException):
            raise
        except KeyboardInterrupt:
            fail("interrupted", EXIT_INTERRUPTED)
        except BrokenPipeError:  # `| head`: the reader is gone; the files the command wrote are kept
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
            fail(
                "standard output was closed by the program reading it (a pipe into head?): stopped printing "
                "there; the files written so far are kept",
                EXIT_BROKEN_PIPE,
            )
        except Exception as err:
            code = exit_code(err)
            if code is None:  # not the user's: the traceback is what a bug report needs
                raise
            if SESSION.debug:
                traceback.print_exception(type(err), err, err.__traceback__)
                if getattr(err, "worker_traceback", None):
                    click.echo(err.worker_traceback, err=True)
            fail(one_line(err), code)


def _note_late_signal() -> None:
    """A stop signal that arrived when the work no longer needed stopping: the command finished."""
    stop = command_stop()
    if stop is not None and stop.requested:
        click.echo(f"note: {stop.name} arrived after the work was complete: nothing to resume", err=True)


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


JSON_KINDS = {str: "text", list: "a list", int: "a whole number", float: "a number", bool: "true or false"}


class ConfigValueError(ValueError):
    """A --config file value its option refuses: bad usage, like a bad flag (exit 2)."""

    exit_code = 2


def apply_config_file(
    ctx: click.Context, options: dict, path: str | None, config: type | None = None, lists: dict | None = None
) -> dict:
    """Fill the options left at their defaults on the command line from a config file: flags win.
    Each value goes through the checks its flag gets (`config_value`); names that `config` has as
    settings but not as options (an API setting a run's summary.json records) are ignored; `null`
    leaves an option at its default. `lists` maps a single name to the repeated option that takes it
    (a sweep reads a fit's `student` as its one `students`)."""
    if not path:
        return options
    from click.core import ParameterSource

    values = read_config_file(path)
    for single, many in (lists or {}).items():
        if single in values:
            value = values.pop(single)
            if many not in values and value is not None:
                values[many] = [value]
    unknown = sorted(set(values) - set(options) - (settings_only(config) if config else set()))
    if unknown:
        raise ValueError(f"{path} names unknown option(s): {', '.join(unknown)}")
    params = {param.name: param for param in ctx.command.params}
    merged = dict(options)
    for name, value in values.items():
        if name in options and value is not None and ctx.get_parameter_source(name) in (ParameterSource.DEFAULT, None):
            merged[name] = config_value(params[name], value, f"{path}: {name}", ctx)
    return merged


def config_value(param: click.Parameter, value, where: str, ctx: click.Context):
    """A config file's value through the checks its flag gets. JSON and YAML give typed values that a
    flag never has, so the kind comes first: `true` is a flag's, not a count; 1.7 is not a count;
    "0.1" is text, not a number; a list is only for an option that repeats. Then the option's type
    (its range, its choices). A refusal is one line naming the key, the value and what is expected."""
    if param.multiple:
        items = value if isinstance(value, list) else [value]
        return tuple(_one_value(param, item, where, ctx) for item in items)
    return _one_value(param, value, where, ctx)


def _one_value(param: click.Parameter, value, where: str, ctx: click.Context):
    kinds, expected = _expected(param)
    if isinstance(value, float) and int in kinds and float not in kinds and value.is_integer():
        value = int(value)
    if isinstance(value, bool) != (bool in kinds) or not isinstance(value, kinds):
        raise ConfigValueError(f"{where} = {json.dumps(value)}: expected {expected}")
    if bool in kinds:
        return value
    try:
        return param.type.convert(value, param, ctx)
    except click.BadParameter as err:
        raise ConfigValueError(f"{where} = {json.dumps(value)}: {err.message}") from None


def _expected(param: click.Parameter) -> tuple[tuple[type, ...], str]:
    """The JSON kinds a value of this option may have, and how to say it."""
    kind = param.type
    if isinstance(param, click.Option) and param.is_flag:
        return (bool,), "true or false"
    limits = f" ({kind._describe_range()})" if isinstance(kind, click.types._NumberRangeBase) else ""
    if isinstance(kind, click.types.IntParamType):
        return (int,), f"a whole number{limits}"
    if isinstance(kind, click.types.FloatParamType):
        return (int, float), f"a number{limits}"
    if isinstance(kind, click.Choice):
        return (str,), f"one of: {', '.join(map(str, kind.choices))}"
    config_kinds = getattr(kind, "config_kinds", None)
    if config_kinds:
        return tuple(config_kinds), f"{kind.name} as " + " or ".join(JSON_KINDS[k] for k in config_kinds)
    return (str,), "a path" if isinstance(kind, click.Path) else "text"


class DeclaredOption(click.Option):
    """A click option made from a config field's `Declaration`: its help may be deferred (a registry's
    names, looked up only when the help is shown)."""

    def __init__(self, *args, help=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.help = help  # after click's own __init__, which would clean it up as text

    @property
    def help(self) -> str | None:
        return None if self._help is None else str(self._help)

    @help.setter
    def help(self, value) -> None:
        self._help = value


def declared_options(*configs: type, exclude: tuple[str, ...] = (), required: tuple[str, ...] = ()):
    """Decorate a command with a click option for every declared field of `configs` (and their
    groups), in declaration order; the command receives each by its field name."""
    found = [entry for config in configs for entry in declared_fields(config) if entry[0].name not in exclude]

    def decorate(command):
        for f, kind, decl in reversed(found):
            command = _click_option(f, kind, decl, f.name in required)(command)
        return command

    return decorate


def _click_option(f, kind, decl: Declaration, required: bool):
    flags = decl.flags or ("--" + f.name.replace("_", "-"),)
    default = default_of(f)
    settings: dict = dict(cls=DeclaredOption, required=required, help=decl.help, show_default=decl.show_default)
    if default is not MISSING:  # none at all, not None: click 8.3 would take None as a value given
        settings["default"] = default
    if decl.type is None and _base_type(kind) is bool:
        negatable = default is True or decl.negatable
        names = (f"{flags[0]}/--no-{flags[0][2:]}",) if negatable else flags
        return click.option(*names, f.name, is_flag=True, **settings)
    param_type = decl.type if decl.type is not None else _base_type(kind)
    if param_type not in (int, float, str) and not isinstance(param_type, click.ParamType):
        raise TypeError(f"option {f.name}: declare its type (type=...): {kind} is not int, float, str or bool")
    return click.option(*flags, f.name, type=param_type, multiple=decl.multiple, metavar=decl.metavar, **settings)


def _base_type(kind):
    """`int` for `int | None`, and so on."""
    args = [arg for arg in typing.get_args(kind) if arg is not type(None)]
    return args[0] if len(args) == 1 else kind
