"""Reading and writing the node's identity key file (``<home>/identity.key``).

The bytes are produced and checked by ``swapmeet.protocol.keyfile``; this module
does the file handling around them:

* :func:`create_identity` generates a key and writes it once: never over an
  existing file, crash-safely and mode 0600 from the moment the file exists
  (``swapmeet.ledger.durable``).
* :func:`load_identity` reads it back and never writes.
* :func:`resolve_passphrase` finds the passphrase: explicit argument, else
  ``$SWAPMEET_PASSPHRASE``, else an interactive prompt -- only when stdin is a
  terminal; otherwise a clear error instead of hanging on a prompt.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from swapmeet.ledger.durable import write_durably
from swapmeet.ledger.localfile import open_regular
from swapmeet.protocol import keyfile
from swapmeet.protocol.errors import KeyFileError, SwapmeetError
from swapmeet.protocol.identity import Identity

from .home import Home, HomeError

PASSPHRASE_ENV = "SWAPMEET_PASSPHRASE"


class IdentityExistsError(SwapmeetError):
    """Refused: the home already has a key file (it is never overwritten)."""

    exit_code = 1  # refused (see swapmeet.cli.main for the exit code table)


class NoIdentityError(KeyFileError):
    """The home has no key file yet."""


class PassphraseError(SwapmeetError):
    """No passphrase could be obtained, or the two entries did not match."""


def resolve_passphrase(
    explicit: str | None = None,
    *,
    confirm: bool = False,
    hint: str = f"set {PASSPHRASE_ENV}",
    prompt: str = "Passphrase: ",
    env: Mapping[str, str] | None = None,
) -> str:
    """The passphrase to use: ``explicit`` > ``$SWAPMEET_PASSPHRASE`` > a prompt on a TTY.

    ``confirm`` asks twice (for a new key). Without a terminal on stdin there is
    no prompt: :class:`PassphraseError` says what to do instead (``hint``).
    Empty values count as unset.
    """
    if explicit:
        return explicit
    env = os.environ if env is None else env
    if env.get(PASSPHRASE_ENV):
        return env[PASSPHRASE_ENV]
    stdin = sys.stdin
    if stdin is None or not stdin.isatty():
        raise PassphraseError(f"a passphrase is needed and there is no terminal to ask: {hint}")
    import getpass

    first = getpass.getpass(prompt)
    if not first:
        raise PassphraseError(f"empty passphrase: {hint}" if confirm else "empty passphrase")
    if confirm and getpass.getpass("Repeat passphrase: ") != first:
        raise PassphraseError("the two passphrases do not match; nothing was written")
    return first


def create_identity(home: Home, passphrase: str | None) -> Identity:
    """Generate a new identity and write it to ``home.identity_key``.

    ``passphrase=None`` stores the key unencrypted (the explicit opt-out);
    resolving a passphrase from the environment or a prompt is the caller's job
    (:func:`resolve_passphrase`). Refuses, with :class:`IdentityExistsError`, if
    a key file is already there.
    """
    path = home.identity_key
    check_no_identity(home)
    identity = Identity.generate()
    blob = keyfile.seal_seed(identity.seed, passphrase)  # before touching the disk
    home.ensure()
    _write_new_file(path, blob)
    return identity


def check_no_identity(home: Home) -> None:
    """Raise :class:`IdentityExistsError` if ``home`` already has a key file.

    For callers that want to refuse early, e.g. before prompting for a passphrase;
    :func:`create_identity` checks again (atomically) when it writes.
    """
    if os.path.lexists(home.identity_key):
        raise _exists(home.identity_key)


def load_identity(home: Home, passphrase: str | None = None) -> Identity:
    """Read the identity in ``home``. Never writes.

    If the key is encrypted and ``passphrase`` is None, it is resolved with
    :func:`resolve_passphrase` (environment, then a prompt on a terminal).
    """
    path = home.identity_key
    blob = read_key_file(path)
    try:
        if keyfile.is_encrypted(blob) and passphrase is None:
            passphrase = resolve_passphrase(
                hint=f"set {PASSPHRASE_ENV} to unlock the encrypted key {path}",
                prompt=f"Passphrase for {path}: ",
            )
        seed = keyfile.open_seed(blob, passphrase)
    except KeyFileError as exc:
        raise KeyFileError(f"{path}: {exc}") from None
    return Identity(seed)


def read_key_file(path: Path) -> bytes:
    """The raw bytes of a key file, with errors that say what to do."""
    try:
        with open_regular(path) as f:
            return f.read(keyfile.MAX_KEY_FILE_SIZE + 1)
    except FileNotFoundError:
        raise NoIdentityError(
            f"no identity key at {path}: create one with `swapmeet init`"
            " (or point --home / SWAPMEET_HOME at an existing home)"
        ) from None
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror or exc}") from None


def _exists(path: Path) -> IdentityExistsError:
    return IdentityExistsError(
        f"an identity already exists at {path}; refusing to overwrite it"
        " (move it away first if you really want a new identity)"
    )


def _write_new_file(path: Path, data: bytes) -> None:
    """Durably create ``path`` with ``data`` and mode 0600; fail if it exists (never a clobber)."""
    try:
        write_durably(path, data, mode=0o600, replace=False)
    except FileExistsError:
        raise _exists(path) from None
    except OSError as exc:
        raise HomeError(f"cannot write {path}: {exc.strerror or exc}") from None
