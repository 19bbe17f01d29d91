"""What the root ``swapmeet`` group hands to every subcommand (``ctx.obj``).

Command modules take it with ``@pass_app`` and ask it for resources such as the
home directory or a client of the node running for it, so global options are
parsed in exactly one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import click
from swapmeet.node.home import Home

if TYPE_CHECKING:
    from .client import ApiClient


@dataclass
class App:
    """Global options of the ``swapmeet`` command."""

    home_option: str | None = None
    debug: bool = False

    def home(self) -> Home:
        """The home directory: ``--home`` > ``$SWAPMEET_HOME`` > the platform default."""
        return Home.resolve(self.home_option)

    def client(self, timeout: float | None = None) -> ApiClient:
        """A client of the node running for :meth:`home` (found through ``<home>/api.cookie``)."""
        from .client import DEFAULT_TIMEOUT, ApiClient  # only commands that talk to a node need it

        return ApiClient.for_home(self.home(), timeout=timeout or DEFAULT_TIMEOUT)


pass_app = click.make_pass_decorator(App, ensure=True)
