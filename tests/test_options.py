"""Options declared once: every option of build, fit and sweep comes from one config field's declaration,
shows in its command's --help, and lists what the registries hold."""

from collections import Counter

import click
import pytest
from click.testing import CliRunner

from softlabels.build.config import BuildConfig
from softlabels.cli import main as softlabels_cli
from softlabels.clitools import DeclaredOption
from softlabels.options import declared_fields, settings_only
from softlabels.store.modes import MODES
from trainer.cli import main as trainer_cli
from trainer.options import FitOptions, SweepOptions

# Options a command has that are not config fields: the config file itself, --json, the common options.
NOT_CONFIG = {"config_file", "as_json", "quiet", "debug", "no_progress", "help"}

COMMANDS = [
    (softlabels_cli, "build", (BuildConfig,), ()),
    (trainer_cli, "fit", (FitOptions,), ()),
    (trainer_cli, "sweep", (SweepOptions, FitOptions), ("student", "temperature", "alpha")),
]


@pytest.mark.parametrize("cli, name, configs, excluded", COMMANDS, ids=[c[1] for c in COMMANDS])
def test_each_option_has_one_declaration_and_shows_in_help(cli, name, configs, excluded):
    command = cli.commands[name]
    options = [p for p in command.params if isinstance(p, click.Option)]
    declared = {f.name: decl for config in configs for f, _, decl in declared_fields(config) if f.name not in excluded}
    counts = Counter(p.name for p in options)
    assert [n for n, c in counts.items() if c > 1] == []  # no option declared twice
    made = {p.name for p in options if isinstance(p, DeclaredOption)}
    assert made == set(declared)  # every declared field is an option, made from its declaration
    assert {p.name for p in options} - made <= NOT_CONFIG  # nothing else declared by hand
    output = CliRunner().invoke(cli, [name, "--help"]).output
    for option in options:
        assert option.opts[0] in output, option.opts[0]


def test_a_field_is_an_option_or_a_setting_of_the_api():
    """A new config field either gets a declaration or is listed here as API-only, on purpose."""
    assert settings_only(BuildConfig) == {"progress", "stop_signals"}  # progress: --no-progress/--quiet
    assert settings_only(FitOptions) == {"stop_signals"}
    assert settings_only(SweepOptions) == {"base"}


def test_help_lists_what_the_registries_hold():
    from softlabels.models.registry import SOURCES
    from softlabels.views import AUGMENTS
    from trainer.losses import DEFAULT_TEMPERATURE, LOSSES

    build = " ".join(CliRunner().invoke(softlabels_cli, ["build", "--help"]).output.split())
    fit = " ".join(CliRunner().invoke(trainer_cli, ["fit", "--help"]).output.split())
    assert f"[{'|'.join(MODES)}]" in build and ", ".join(AUGMENTS) in build
    assert all(source.form in build and source.form in fit for source in SOURCES if source.form)
    assert f"[{'|'.join(LOSSES)}]" in fit and f"[default: {DEFAULT_TEMPERATURE}]" in fit


@pytest.mark.parametrize(
    "cli, name",
    [(softlabels_cli, name) for name in softlabels_cli.commands]
    + [(trainer_cli, name) for name in trainer_cli.commands],
)
def test_every_help_renders(cli, name):
    """Help texts and choices looked up from modules named by text (`deferred`): a module that moved
    fails here, not in a user's terminal."""
    result = CliRunner().invoke(cli, [name, "--help"], catch_exceptions=False)
    assert result.exit_code == 0 and "Usage:" in result.output
