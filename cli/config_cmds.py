"""``swapmeet config show|path`` and ``swapmeet completion bash|zsh|fish``.

``config show`` prints the configuration a ``swapmeet node run`` for this home
would use without flags (defaults < ``<home>/config.toml`` < ``SWAPMEET_*``
variables, see :mod:`swapmeet.node.config`) and where each value came from.
It reads the file and the environment only: no node, no key, nothing written.

``completion`` prints click's own completion script for the shell. The script
calls ``swapmeet`` back with ``_SWAPMEET_COMPLETE=<shell>_complete`` set, which
click handles in :meth:`click.BaseCommand.main` before any command runs, so
completing is as fast as ``swapmeet --help``.

Both stay light (no rich, no libp2p): they are run from shell start-up files.
"""

from __future__ import annotations

import json
from typing import Any

import click
from swapmeet.node.config import load_config

from .context import App, pass_app

PROG_NAME = "swapmeet"
COMPLETE_VAR = "_SWAPMEET_COMPLETE"
SHELLS = ("bash", "zsh", "fish")


@click.group("config")
def config() -> None:
    """Show the effective node configuration and where each value comes from.

    Precedence, lowest to highest: built-in defaults, <home>/config.toml,
    SWAPMEET_* environment variables, flags of `swapmeet node run`. Example
    config.toml:

    \b
        listen = ["/ip4/0.0.0.0/tcp/4001", "/ip6/::/tcp/4001"]
        bootstrap = ["/dns4/peer.example.org/tcp/4001/p2p/12D3KooW..."]
        net = "main"
        api_port = 0        # 0: any free port
        mdns = true
        dht = true
        archive = false     # true: replicate every ledger chain heard of
        follow = []         # PeerIDs whose ledger chains to replicate
    """


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return ", ".join(value) if value else "(none)"
    return str(value)


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help='Print {"key": {"value": ..., "source": ...}}.')
@pass_app
def show(app: App, as_json: bool) -> None:
    """Print each setting, its value and its source.

    The source is "default", the config file's path, "env SWAPMEET_<KEY>", or
    (for a running node) "flag --<key>".
    """
    effective = load_config(app.home())
    if as_json:
        click.echo(json.dumps(effective.to_json(), ensure_ascii=False))
        return
    # Plain aligned columns, not rich: this runs from scripts and shell start-up, and rich costs ~0.1 s.
    rows = [("KEY", "VALUE", "SOURCE")] + [(k, _shown(s.value), s.source) for k, s in effective.settings().items()]
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    for key, value, source in rows:
        click.echo(f"{key:<{widths[0]}}  {value:<{widths[1]}}  {source}")


@config.command("path")
@pass_app
def path(app: App) -> None:
    """Print the path of this home's config file (it may not exist yet)."""
    click.echo(str(app.home().config))


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the shell completion script for SHELL (bash, zsh or fish).

    \b
    To enable it for the current shell:
        bash:  eval "$(swapmeet completion bash)"
        zsh:   eval "$(swapmeet completion zsh)"
        fish:  swapmeet completion fish | source
    \b
    To enable it for good, add the line to ~/.bashrc or ~/.zshrc, or for fish:
        swapmeet completion fish > ~/.config/fish/completions/swapmeet.fish
    """
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    if cls is None:  # click knows all three; a guard against a click without one of them
        raise click.UsageError(f"no completion support for {shell} in this version of click")
    root = ctx.find_root().command
    click.echo(cls(root, {}, PROG_NAME, COMPLETE_VAR).source())


COMMANDS = [config, completion]
