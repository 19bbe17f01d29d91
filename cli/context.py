"""What the root ``swapmeet`` group hands to every subcommand (``ctx.obj``).

Command modules take it with ``@pass_app`` and ask it for resources such as the
home directory, so global options are parsed in exactly one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import click
from swapmeet.node.home import Home


@dataclass
class App:
    """Global options of the ``swapmeet`` command."""

    home_option: str | None = None
    debug: bool = False

    def home(self) -> Home:
        """The home directory: ``--home`` > ``$SWAPMEET_HOME`` > the platform default."""
        return Home.resolve(self.home_option)


pass_app = click.make_pass_decorator(App, ensure=True)
