"""The node's home directory and the names of the files inside it.

Which directory: the explicit ``--home DIR`` option, else the ``SWAPMEET_HOME``
environment variable, else the platform's per-user data directory
(``platformdirs.user_data_dir("swapmeet")``, e.g. ``~/.local/share/swapmeet``).

Every file name the node uses is a property of :class:`Home`, so there is one
place to look them up. Creating the directory is explicit (:meth:`Home.ensure`):
read-only commands such as ``swapmeet id`` never create anything.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from swapmeet.protocol.errors import SwapmeetError

HOME_ENV = "SWAPMEET_HOME"
APP_NAME = "swapmeet"


class HomeError(SwapmeetError):
    """The home directory cannot be created or is not a directory."""


@dataclass(frozen=True, slots=True)
class Home:
    """A node home directory. ``root`` is absolute; nothing is touched until :meth:`ensure`."""

    root: Path

    @classmethod
    def resolve(cls, explicit: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Home:
        """``explicit`` > ``$SWAPMEET_HOME`` > the platform user data dir (empty = unset)."""
        env = os.environ if env is None else env
        if explicit is not None and str(explicit) != "":
            chosen = Path(explicit)
        elif env.get(HOME_ENV):
            chosen = Path(env[HOME_ENV])
        else:
            import platformdirs

            chosen = Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))
        return cls(chosen.expanduser().absolute())

    # --- the files inside (one place for their names) ---

    @property
    def identity_key(self) -> Path:
        """The node's Ed25519 key, see ``swapmeet.protocol.keyfile``."""
        return self.root / "identity.key"

    @property
    def ledger_db(self) -> Path:
        return self.root / "ledger.sqlite"

    @property
    def book_db(self) -> Path:
        return self.root / "book.sqlite"

    @property
    def api_cookie(self) -> Path:
        """The local API token (0600), the bitcoind cookie convention."""
        return self.root / "api.cookie"

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def node_lock(self) -> Path:
        """Held (flock) by the running node, so two nodes never share one home."""
        return self.root / "node.lock"

    @property
    def peers_file(self) -> Path:
        """Multiaddrs of the peers this node knew, redialled at the next start."""
        return self.root / "peers.json"

    @property
    def settlement_state(self) -> Path:
        """The settlement machine's state, rewritten durably before every message the node sends."""
        return self.root / "settlement.cbor"

    @property
    def forked_file(self) -> Path:
        """Fork proofs received for authors whose chains this node does not hold."""
        return self.root / "forked.cbor"

    @property
    def photos_dir(self) -> Path:
        """Listing photos, one file per photo named by the hex SHA-256 of its bytes (node/photos.py)."""
        return self.root / "photos"

    def ensure(self) -> Home:
        """Create the directory (mode 0700, parents as needed) if it does not exist.

        An existing directory is used as is: its permissions are the owner's choice.
        """
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        except FileExistsError:
            raise HomeError(f"home {self.root} exists and is not a directory") from None
        except OSError as exc:
            raise HomeError(f"cannot create home directory {self.root}: {exc.strerror}") from exc
        if not self.root.is_dir():
            raise HomeError(f"home {self.root} exists and is not a directory")
        return self

    def __str__(self) -> str:
        return str(self.root)
