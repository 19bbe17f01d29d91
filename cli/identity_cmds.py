"""``swapmeet init`` and ``swapmeet id``: create and show the node identity.

Both print the PeerID (which *is* the trading identity) and the Ed25519 public
key in hex, the form other tools and the audit reports use; ``--json`` gives
the same as stable fields (docs/GUIDE.md, section 4).
"""

from __future__ import annotations

import click
from swapmeet.node import identity_store

from .context import App, pass_app
from .output import print_json


@click.command("init")
@click.option(
    "--no-passphrase",
    is_flag=True,
    help="Store the key unencrypted (anyone who can read the file can trade as you).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: peer_id, public_key, key_file, encrypted.")
@pass_app
def init(app: App, no_passphrase: bool, as_json: bool) -> None:
    """Create this node's identity key in the home directory.

    The key is encrypted with a passphrase (asked twice on a terminal, or taken
    from SWAPMEET_PASSPHRASE) unless --no-passphrase is given. An existing key
    is never overwritten.
    """
    home = app.home()
    identity_store.check_no_identity(home)  # refuse before asking for a passphrase
    passphrase = None
    if not no_passphrase:
        passphrase = identity_store.resolve_passphrase(
            confirm=True,
            prompt="New passphrase: ",
            hint=f"set {identity_store.PASSPHRASE_ENV}, or use --no-passphrase to store the key unencrypted",
        )
    identity = identity_store.create_identity(home, passphrase)
    if as_json:
        from swapmeet.node import jsonview

        print_json(
            jsonview.identity_created(
                identity.peer_id, identity.public_key, str(home.identity_key), passphrase is not None
            )
        )
        return
    protection = "encrypted with your passphrase" if passphrase else "NOT encrypted"
    click.echo(f"created identity {identity.peer_id}")
    click.echo(f"public key {identity.public_key.hex()}")
    click.echo(f"key file {home.identity_key} ({protection})")


@click.command("id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def id_(app: App, as_json: bool) -> None:
    """Show this node's peer id and public key."""
    home = app.home()
    identity = identity_store.load_identity(home)
    from swapmeet.node import jsonview

    from .client import live_addrs  # [] unless a node runs for this home

    info = jsonview.identity(identity.peer_id, identity.public_key, live_addrs(home))
    if as_json:
        print_json(info)
        return
    rows = [
        ("peer id", info["peer_id"]),
        ("public key", info["public_key"]),
        *(("addrs" if i == 0 else "", a) for i, a in enumerate(info["addrs"] or ["(none: no node is running)"])),
        ("key file", str(home.identity_key)),
    ]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        click.echo(f"{label:<{width}}  {value}")


COMMANDS = [init, id_]
