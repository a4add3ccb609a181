"""The commands are declared once, in cli/args.py COMMANDS: each names the function that runs
it by module path, imported only when it runs. These check that every name resolves."""

from __future__ import annotations

import argparse

import pytest

from reconciler.cli import args as cli_args
from reconciler.core.errors import UsageError
from reconciler.pipeline import keys


@pytest.mark.parametrize("command", cli_args.COMMANDS, ids=lambda c: c.name)
def test_every_command_parses_and_names_a_function_that_exists(command):
    words = {
        "diff": ["diff", "main"],
        "accept-history": ["accept-history", "HEAD", "--reason", "r"],
        "queue": ["queue", "list"],
        "audit": ["audit", "verify"],
        "vault": ["vault", "keygen"],
        "keys": ["keys", "status"],
        "approve": ["approve", "prod/deploy", "--key", "k"],
        "run": ["run", "prod/deploy", "--reason", "r"],
    }.get(command.name, [command.name])
    parsed = cli_args.build_parser().parse_args(words)
    assert parsed.command == command.name
    assert parsed.handler == command.run
    assert callable(cli_args.handler(parsed))


def test_command_names_are_unique():
    names = [command.name for command in cli_args.COMMANDS]
    assert len(names) == len(set(names))


def test_format_is_offered_by_the_commands_that_write_it():
    parser = cli_args.build_parser()
    with pytest.raises(UsageError, match="unrecognized arguments: --format"):
        parser.parse_args(["codeowners", "--format", "json"])
    parsed = parser.parse_args(["plan", "--format", "markdown"])
    assert parsed.writable_formats == ("text", "json", "markdown")
    assert parser.parse_args(["vault", "list", "ops"]).writable_formats == ("text", "json")


def test_the_help_shows_the_defaults_the_keys_command_uses():
    assert cli_args.AUTHORIZED_KEYS == keys.DEFAULT_AUTHORIZED_KEYS
    parsed = cli_args.build_parser().parse_args(["keys", "status"])
    assert parsed.authorized_keys == keys.DEFAULT_AUTHORIZED_KEYS


def test_an_unknown_handler_path_is_an_import_error_not_a_silent_no_op():
    with pytest.raises(ModuleNotFoundError):
        cli_args.handler(argparse.Namespace(handler="reconciler.cli.no_such_cmd:run"))
