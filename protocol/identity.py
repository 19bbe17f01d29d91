"""Node identity: one Ed25519 key whose public half is both the trading identity
(the ``author`` of everything the node signs) and the libp2p host key.

The PeerID is computed here without importing libp2p (which costs ~0.8 s to
import): it is the base58btc encoding of an *identity* multihash of the
protobuf-encoded libp2p ``PublicKey`` message. For Ed25519 that message is
``08 01`` (field 1 KeyType = 1, Ed25519) ``12 20`` (field 2, 32 bytes) + key, and
since it is at most 42 bytes long libp2p inlines it with multihash code 0x00
(identity) and length 0x24. The result starts with ``12D3KooW``; a test checks
it against ``libp2p.peer.id.ID.from_pubkey`` byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass

import base58
import nacl.exceptions
import nacl.signing

from .errors import InvalidObject

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
SEED_SIZE = 32

_PROTOBUF_ED25519_PREFIX = b"\x08\x01\x12\x20"
_IDENTITY_MULTIHASH_PREFIX = b"\x00\x24"


def peer_id_bytes(public_key: bytes) -> bytes:
    """The binary libp2p PeerID (identity multihash) of an Ed25519 public key."""
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise InvalidObject("public_key", f"must be {PUBLIC_KEY_SIZE} bytes, got {len(public_key)}")
    return _IDENTITY_MULTIHASH_PREFIX + _PROTOBUF_ED25519_PREFIX + public_key


def peer_id(public_key: bytes) -> str:
    """The textual PeerID (``12D3KooW...``) of an Ed25519 public key."""
    return base58.b58encode(peer_id_bytes(public_key)).decode("ascii")


def public_key_from_peer_id(text: str) -> bytes:
    """Inverse of :func:`peer_id`: the Ed25519 public key inside a ``12D3KooW...`` PeerID."""
    try:
        raw = base58.b58decode(text.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise InvalidObject("peer_id", f"not base58: {text!r}") from exc
    prefix = _IDENTITY_MULTIHASH_PREFIX + _PROTOBUF_ED25519_PREFIX
    if len(raw) != len(prefix) + PUBLIC_KEY_SIZE or not raw.startswith(prefix):
        raise InvalidObject("peer_id", f"not an Ed25519 PeerID: {text!r}")
    return raw[len(prefix) :]


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is a valid Ed25519 signature of ``message`` by ``public_key``."""
    try:
        nacl.signing.VerifyKey(public_key).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError):
        return False
    return True


@dataclass(frozen=True, slots=True)
class Identity:
    """A node's signing key. ``seed`` is the 32-byte Ed25519 private seed."""

    seed: bytes

    def __post_init__(self) -> None:
        if len(self.seed) != SEED_SIZE:
            raise ValueError(f"an Ed25519 seed is {SEED_SIZE} bytes, got {len(self.seed)}")

    @classmethod
    def generate(cls) -> Identity:
        return cls(bytes(nacl.signing.SigningKey.generate()))

    @property
    def signing_key(self) -> nacl.signing.SigningKey:
        return nacl.signing.SigningKey(self.seed)

    @property
    def public_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @property
    def peer_id(self) -> str:
        return peer_id(self.public_key)

    def sign(self, message: bytes) -> bytes:
        """The detached 64-byte Ed25519 signature of ``message``."""
        return self.signing_key.sign(message).signature

    def __repr__(self) -> str:  # never print the seed
        return f"Identity({self.peer_id})"
