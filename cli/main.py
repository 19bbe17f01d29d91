"""The ``swapmeet`` command: the root group, global options and error handling.

Each command group lives in its own module (``identity_cmds`` for ``init`` and
``id``, later ``ledger``, ``audit``, ``node``...) and is registered on the root
group in :func:`_register`. What several command modules share has modules of
its own: :mod:`.context` (the global options), :mod:`.output` (short ids, tables,
JSON, relative times), :mod:`.parsing` (items and times as typed) and
:mod:`.client` (the running node's local API); command modules import those,
never each other. Keep this import path light: command modules must
import heavy things (libp2p, rich, ...) inside the command function, never at
module level, so ``swapmeet --help`` and ``swapmeet id`` stay fast.

Errors are handled here and only here: a :class:`SwapmeetError` is printed as
one line ``swapmeet: error: <message>`` on stderr; a traceback is shown only
with ``--debug``. Exit codes:

====  ===============================================================
0     success
1     refused (e.g. would overwrite a key), or findings (audit)
2     bad usage or bad input (wrong passphrase, damaged file, ...)
3     the node is not running (commands that need the local API)
70    internal error (a bug: rerun with --debug and report it)
====  ===============================================================

A ``SwapmeetError`` subclass picks its code with an ``exit_code`` class
attribute; without one it is 2. Click's own usage errors also exit 2.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click
from swapmeet.protocol.errors import SwapmeetError

from .context import App

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3
EXIT_INTERNAL = 70


def exit_code_for(err: SwapmeetError) -> int:
    """The process exit code for a SwapmeetError (its ``exit_code``, default 2)."""
    code = getattr(err, "exit_code", EXIT_USAGE)
    return code if isinstance(code, int) else EXIT_USAGE


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "(no message)"


class SwapmeetGroup(click.Group):
    """The root group: turns exceptions into one-line messages and exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort, EOFError):
            raise  # click's own handling (EOF at a prompt is an abort)
        except BrokenPipeError:
            # The reader went away (`swapmeet ledger show | head`): not an error. Point stdout
            # at /dev/null so the interpreter's final flush does not complain either.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(EXIT_OK)
        except SwapmeetError as err:
            if _debug(ctx):
                raise
            click.echo(f"swapmeet: error: {_one_line(str(err))}", err=True)
            ctx.exit(exit_code_for(err))
        except Exception as err:
            if _debug(ctx):
                raise
            click.echo(
                f"swapmeet: internal error: {type(err).__name__}: {_one_line(str(err))}"
                " (rerun with --debug for the traceback)",
                err=True,
            )
            ctx.exit(EXIT_INTERNAL)


def _debug(ctx: click.Context) -> bool:
    app = ctx.find_object(App)
    return bool(app and app.debug)


@click.group(cls=SwapmeetGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    "home",
    metavar="DIR",
    default=None,
    help="Node home directory [env: SWAPMEET_HOME; default: the platform user data dir].",
)
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(package_name="swapmeet", prog_name="swapmeet")
@click.pass_context
def cli(ctx: click.Context, home: str | None, debug: bool) -> None:
    """swapmeet: a peer-to-peer barter exchange."""
    ctx.obj = App(home_option=home, debug=debug)


def _register(group: click.Group) -> None:
    from . import (
        audit_cmd,
        config_cmds,
        demo_cmd,
        identity_cmds,
        ledger_cmds,
        match_cmds,
        node_cmds,
        trade_cmds,
        ui_cmd,
    )

    for command in (
        *identity_cmds.COMMANDS,
        *node_cmds.COMMANDS,
        *trade_cmds.COMMANDS,
        *match_cmds.COMMANDS,
        ledger_cmds.ledger,
        audit_cmd.audit,
        demo_cmd.demo,
        *ui_cmd.COMMANDS,
    ):
        group.add_command(command)
    for command in config_cmds.COMMANDS:
        group.add_command(command)


_register(cli)


def main(argv: list[str] | None = None) -> None:
    """Console script entry point (``swapmeet = "swapmeet.cli.main:main"``)."""
    cli.main(args=argv, prog_name="swapmeet")


if __name__ == "__main__":
    main()
