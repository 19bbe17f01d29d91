"""The identity key file format: the 32-byte Ed25519 seed, sealed (or not) as bytes.

Pure: bytes in, bytes out. Reading and writing the file is ``swapmeet.node.identity_store``.

A key file is one deterministic CBOR map (``swapmeet.protocol.cbor``, i.e.
``cbor2.dumps(..., canonical=True)``, decoded strictly: no tags, no trailing or
non-shortest bytes),
versioned by its ``format`` field and self-describing, so a future format or KDF
can be added without guessing. Two shapes exist in ``swapmeet-key/1``:

Encrypted (the default)::

    {"format": "swapmeet-key/1", "kdf": "argon2id",
     "opslimit": int, "memlimit": int,      # argon2id cost, stored so it can change
     "salt": 16 bytes, "nonce": 24 bytes,
     "box": 48 bytes}                        # SecretBox(XSalsa20-Poly1305) of the seed

The SecretBox key is ``argon2id(passphrase, salt, opslimit, memlimit)``. The
header is not MAC'd separately, but every header field feeds the key derivation
or the decryption one-to-one (``memlimit`` must be whole KiB, the unit libsodium
uses) or is checked exactly, so changing any of them makes opening fail.

Unencrypted (the explicit ``--no-passphrase`` opt-out)::

    {"format": "swapmeet-key/1", "kdf": "none", "seed": 32 bytes,
     "public_key": 32 bytes}                 # a check value: damage is detected

The public key is stored only in the unencrypted shape, where nothing else
would notice a flipped bit in the seed; the encrypted shape has the MAC.

Passphrases are Unicode-normalised (NFC) and UTF-8 encoded, so the same
passphrase typed on different systems opens the same file.

:func:`open_seed` raises :class:`KeyFileError` -- and nothing else -- for every
problem: wrong passphrase, missing passphrase, truncated, garbage, non-canonical
or unknown-format data.
"""

from __future__ import annotations

import unicodedata
from typing import Any

import nacl.exceptions
import nacl.pwhash.argon2id as argon2id
import nacl.secret
import nacl.utils

from . import cbor
from .errors import InvalidObject, KeyFileError
from .identity import PUBLIC_KEY_SIZE, SEED_SIZE, Identity

FORMAT = "swapmeet-key/1"

#: argon2id cost for new key files: ~0.4 s and 128 MiB on a 2024 laptop core.
DEFAULT_OPSLIMIT = 4
DEFAULT_MEMLIMIT = 128 * 1024 * 1024

#: The cheapest limits libsodium allows. For tests only: they protect nothing.
FAST_OPSLIMIT = argon2id.OPSLIMIT_MIN
FAST_MEMLIMIT = argon2id.MEMLIMIT_MIN

# Limits accepted when *opening* a file, so a damaged or hostile file cannot
# make us spin for minutes or allocate gigabytes before failing.
MAX_OPSLIMIT = 32
MAX_MEMLIMIT = 1024 * 1024 * 1024

#: No valid key file is anywhere near this big; larger input is rejected unparsed.
MAX_KEY_FILE_SIZE = 4096

SALT_SIZE = argon2id.SALTBYTES
NONCE_SIZE = nacl.secret.SecretBox.NONCE_SIZE
BOX_SIZE = SEED_SIZE + nacl.secret.SecretBox.MACBYTES

_ENCRYPTED_FIELDS = {
    "format": str,
    "kdf": str,
    "opslimit": int,
    "memlimit": int,
    "salt": bytes,
    "nonce": bytes,
    "box": bytes,
}
_PLAIN_FIELDS = {"format": str, "kdf": str, "seed": bytes, "public_key": bytes}
_SIZES = {
    "salt": SALT_SIZE,
    "nonce": NONCE_SIZE,
    "box": BOX_SIZE,
    "seed": SEED_SIZE,
    "public_key": PUBLIC_KEY_SIZE,
}


def seal_seed(
    seed: bytes,
    passphrase: str | None,
    *,
    opslimit: int = DEFAULT_OPSLIMIT,
    memlimit: int = DEFAULT_MEMLIMIT,
    salt: bytes | None = None,
    nonce: bytes | None = None,
) -> bytes:
    """The key file bytes for ``seed``.

    ``passphrase=None`` writes the seed unencrypted (the explicit opt-out); an
    empty passphrase is refused rather than silently giving no protection.
    ``opslimit``/``memlimit`` set the argon2id cost (tests pass
    :data:`FAST_OPSLIMIT`/:data:`FAST_MEMLIMIT`); ``salt``/``nonce`` are random
    unless given (for test vectors).
    """
    if len(seed) != SEED_SIZE:
        raise KeyFileError(f"an Ed25519 seed is {SEED_SIZE} bytes, got {len(seed)}")
    if passphrase is None:
        plain = {
            "format": FORMAT,
            "kdf": "none",
            "seed": bytes(seed),
            "public_key": Identity(bytes(seed)).public_key,
        }
        return cbor.encode(plain)
    if passphrase == "":
        raise KeyFileError("empty passphrase: choose one, or opt out of encryption explicitly")
    _check_limits(opslimit, memlimit)
    salt = nacl.utils.random(SALT_SIZE) if salt is None else bytes(salt)
    nonce = nacl.utils.random(NONCE_SIZE) if nonce is None else bytes(nonce)
    if len(salt) != SALT_SIZE or len(nonce) != NONCE_SIZE:
        raise KeyFileError(f"salt must be {SALT_SIZE} bytes and nonce {NONCE_SIZE} bytes")
    key = _derive_key(passphrase, salt, opslimit, memlimit)
    box = nacl.secret.SecretBox(key).encrypt(bytes(seed), nonce).ciphertext
    return cbor.encode(
        {
            "format": FORMAT,
            "kdf": "argon2id",
            "opslimit": opslimit,
            "memlimit": memlimit,
            "salt": salt,
            "nonce": nonce,
            "box": box,
        }
    )


def is_encrypted(blob: bytes) -> bool:
    """Whether opening ``blob`` needs a passphrase. Raises :class:`KeyFileError` if damaged."""
    return _parse(blob)["kdf"] != "none"


def open_seed(blob: bytes, passphrase: str | None) -> bytes:
    """The 32-byte seed inside key file bytes ``blob``.

    A passphrase given for an unencrypted file is ignored. Every failure is a
    :class:`KeyFileError` with a one-line message.
    """
    fields = _parse(blob)
    if fields["kdf"] == "none":
        if Identity(fields["seed"]).public_key != fields["public_key"]:
            raise _damaged("the seed does not match the stored public key")
        return fields["seed"]
    if passphrase is None:
        raise KeyFileError("key file is encrypted: a passphrase is needed to open it")
    try:
        key = _derive_key(passphrase, fields["salt"], fields["opslimit"], fields["memlimit"])
    except Exception as exc:  # libsodium refusing the limits, out of memory, ...
        raise KeyFileError(f"key file is damaged: cannot derive its key ({exc})") from exc
    try:
        seed = nacl.secret.SecretBox(key).decrypt(fields["box"], fields["nonce"])
    except nacl.exceptions.CryptoError:
        raise KeyFileError("wrong passphrase for key file (or the file was altered)") from None
    except Exception as exc:
        raise KeyFileError(f"key file is damaged: {exc}") from exc
    if len(seed) != SEED_SIZE:  # cannot happen given BOX_SIZE, but never return a bad seed
        raise KeyFileError("key file is damaged: sealed seed has the wrong size")
    return seed


def _derive_key(passphrase: str, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    secret = unicodedata.normalize("NFC", passphrase).encode("utf-8", "surrogateescape")
    return argon2id.kdf(nacl.secret.SecretBox.KEY_SIZE, secret, salt, opslimit=opslimit, memlimit=memlimit)


def _check_limits(opslimit: Any, memlimit: Any) -> None:
    if type(opslimit) is not int or not argon2id.OPSLIMIT_MIN <= opslimit <= MAX_OPSLIMIT:
        raise KeyFileError(f"argon2id opslimit must be an integer in {argon2id.OPSLIMIT_MIN}..{MAX_OPSLIMIT}")
    # libsodium uses memlimit // 1024 (KiB); requiring whole KiB means one set of
    # parameters has one spelling (the header is not MAC'd, see the module doc)
    if type(memlimit) is not int or not argon2id.MEMLIMIT_MIN <= memlimit <= MAX_MEMLIMIT or memlimit % 1024:
        raise KeyFileError(f"argon2id memlimit must be a multiple of 1024 in {argon2id.MEMLIMIT_MIN}..{MAX_MEMLIMIT}")


def _damaged(reason: str) -> KeyFileError:
    return KeyFileError(f"key file is damaged: {reason}")


def _parse(blob: bytes) -> dict[str, Any]:
    """Decode and check the structure of key file bytes (no cryptography yet)."""
    try:
        value = cbor.decode(blob, max_size=MAX_KEY_FILE_SIZE, max_depth=2)
    except InvalidObject as exc:
        raise _damaged(f"not a valid CBOR key file ({exc})") from None
    except Exception as exc:  # belt and braces: nothing but KeyFileError leaves this module
        raise _damaged(f"not a valid CBOR key file ({type(exc).__name__})") from None
    if not isinstance(value, dict):
        raise _damaged("not a CBOR map")
    fmt = value.get("format")
    if fmt != FORMAT:
        if isinstance(fmt, str) and fmt.startswith("swapmeet-key/"):
            raise KeyFileError(f"unsupported key file format {fmt!r} (this swapmeet reads {FORMAT!r})")
        raise _damaged(f"not a swapmeet key file (no {FORMAT!r} format marker)")
    kdf = value.get("kdf")
    if kdf == "argon2id":
        expected = _ENCRYPTED_FIELDS
    elif kdf == "none":
        expected = _PLAIN_FIELDS
    else:
        raise KeyFileError(f"key file uses an unknown kdf {kdf!r}")
    if set(value) != set(expected):
        extra = sorted(set(value) - set(expected))
        missing = sorted(set(expected) - set(value))
        raise _damaged(f"unexpected fields {extra}, missing fields {missing}")
    for name, kind in expected.items():
        if type(value[name]) is not kind:
            raise _damaged(f"field {name!r} must be {kind.__name__}")
        if name in _SIZES and len(value[name]) != _SIZES[name]:
            raise _damaged(f"field {name!r} must be {_SIZES[name]} bytes")
    if kdf == "argon2id":
        try:
            _check_limits(value["opslimit"], value["memlimit"])
        except KeyFileError as exc:
            raise _damaged(str(exc)) from None
    return value
