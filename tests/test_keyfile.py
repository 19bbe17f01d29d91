"""swapmeet.protocol.keyfile: sealing the identity seed, and refusing every bad key file.

Most tests use the cheapest argon2id limits (``FAST_OPSLIMIT``/``FAST_MEMLIMIT``);
one round trip uses the real defaults.
"""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from swapmeet.protocol import keyfile
from swapmeet.protocol.errors import KeyFileError
from swapmeet.protocol.identity import Identity

SEED = bytes(range(32))
FAST = {"opslimit": keyfile.FAST_OPSLIMIT, "memlimit": keyfile.FAST_MEMLIMIT}


def sealed_fast(passphrase: str = "correct horse") -> bytes:
    return keyfile.seal_seed(SEED, passphrase, **FAST)


def test_round_trip_with_passphrase() -> None:
    blob = sealed_fast()
    assert keyfile.is_encrypted(blob)
    assert SEED not in blob
    assert keyfile.open_seed(blob, "correct horse") == SEED


def test_round_trip_with_default_limits() -> None:
    blob = keyfile.seal_seed(SEED, "pässwörd")
    fields = cbor2.loads(blob)
    assert fields["opslimit"] == keyfile.DEFAULT_OPSLIMIT
    assert fields["memlimit"] == keyfile.DEFAULT_MEMLIMIT
    assert keyfile.open_seed(blob, "pässwörd") == SEED


def test_round_trip_without_passphrase() -> None:
    blob = keyfile.seal_seed(SEED, None)
    assert not keyfile.is_encrypted(blob)
    assert cbor2.loads(blob) == {
        "format": "swapmeet-key/1",
        "kdf": "none",
        "seed": SEED,
        "public_key": Identity(SEED).public_key,
    }
    assert keyfile.open_seed(blob, None) == SEED
    assert keyfile.open_seed(blob, "ignored for an unencrypted key") == SEED


def test_encrypted_format_is_self_describing_and_canonical() -> None:
    blob = keyfile.seal_seed(SEED, "pw", salt=b"s" * 16, nonce=b"n" * 24, **FAST)
    fields = cbor2.loads(blob)
    assert set(fields) == {"format", "kdf", "opslimit", "memlimit", "salt", "nonce", "box"}
    assert fields["format"] == "swapmeet-key/1"
    assert fields["kdf"] == "argon2id"
    assert len(fields["box"]) == 48
    assert cbor2.dumps(fields, canonical=True) == blob
    # deterministic given salt and nonce
    assert keyfile.seal_seed(SEED, "pw", salt=b"s" * 16, nonce=b"n" * 24, **FAST) == blob
    # random salt and nonce otherwise
    assert sealed_fast("pw") != sealed_fast("pw")


def test_passphrase_is_unicode_normalised() -> None:
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    blob = keyfile.seal_seed(SEED, composed, **FAST)
    assert keyfile.open_seed(blob, decomposed) == SEED


def test_wrong_passphrase() -> None:
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        keyfile.open_seed(sealed_fast("right"), "wrong")


def test_missing_passphrase_for_encrypted_key() -> None:
    with pytest.raises(KeyFileError, match="passphrase is needed"):
        keyfile.open_seed(sealed_fast(), None)


def test_empty_passphrase_is_refused_when_sealing() -> None:
    with pytest.raises(KeyFileError, match="empty passphrase"):
        keyfile.seal_seed(SEED, "", **FAST)


def test_bad_seed_or_limits_when_sealing() -> None:
    with pytest.raises(KeyFileError):
        keyfile.seal_seed(b"short", None)
    with pytest.raises(KeyFileError):
        keyfile.seal_seed(SEED, "pw", opslimit=0, memlimit=keyfile.FAST_MEMLIMIT)


@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted", "plain"])
def test_every_truncation_is_refused(encrypted: bool) -> None:
    blob = sealed_fast() if encrypted else keyfile.seal_seed(SEED, None)
    for size in range(len(blob)):
        with pytest.raises(KeyFileError):
            keyfile.open_seed(blob[:size], "correct horse")


@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted", "plain"])
def test_every_bit_flip_is_refused(encrypted: bool) -> None:
    blob = sealed_fast() if encrypted else keyfile.seal_seed(SEED, None)
    for i in range(len(blob)):
        for bit in range(8):
            damaged = bytearray(blob)
            damaged[i] ^= 1 << bit
            with pytest.raises(KeyFileError):
                keyfile.open_seed(bytes(damaged), "correct horse")


def test_trailing_data_is_refused() -> None:
    with pytest.raises(KeyFileError, match="damaged"):
        keyfile.open_seed(sealed_fast() + b"\x00", "correct horse")


def _encrypted_fields() -> dict:
    return cbor2.loads(sealed_fast())


@pytest.mark.parametrize(
    "change",
    [
        {"opslimit": True},
        {"opslimit": 0},
        {"opslimit": 10**6},
        {"memlimit": 2**40},
        {"memlimit": -1},
        {"memlimit": keyfile.FAST_MEMLIMIT + 1},
        {"salt": b"short"},
        {"nonce": "not bytes"},
        {"box": b"\x00" * 47},
        {"extra": 1},
        {"kdf": "scrypt"},
        {"format": "something-else"},
    ],
)
def test_bad_fields_are_refused(change: dict) -> None:
    fields = _encrypted_fields() | change
    with pytest.raises(KeyFileError):
        keyfile.open_seed(cbor2.dumps(fields, canonical=True), "correct horse")


def test_missing_field_is_refused() -> None:
    fields = _encrypted_fields()
    del fields["salt"]
    with pytest.raises(KeyFileError, match="damaged"):
        keyfile.open_seed(cbor2.dumps(fields, canonical=True), "correct horse")


def test_future_format_is_named() -> None:
    fields = _encrypted_fields() | {"format": "swapmeet-key/2"}
    with pytest.raises(KeyFileError, match="unsupported key file format 'swapmeet-key/2'"):
        keyfile.open_seed(cbor2.dumps(fields, canonical=True), "correct horse")


def test_non_canonical_encoding_is_refused() -> None:
    fields = _encrypted_fields()
    reordered = dict(sorted(fields.items(), reverse=True))
    blob = cbor2.dumps(reordered)  # not canonical: keys out of order
    assert blob != sealed_fast()
    with pytest.raises(KeyFileError, match="deterministic"):
        keyfile.open_seed(blob, "correct horse")


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"\x00",
        b"\xff" * 10,
        b"-----BEGIN OPENSSH PRIVATE KEY-----\n",
        bytes(32),  # a raw seed is not a key file
        cbor2.dumps([1, 2, 3]),
        cbor2.dumps("swapmeet-key/1"),
        b"\x81" * 5000,  # too big, and deeply nested
        b"\x9f" * 1000,  # indefinite arrays, never closed
        b"\x5b\x7f\xff\xff\xff\xff\xff\xff\xff",  # a byte string of 2**63 bytes
        b"\xd8\x1c\x81\xd8\x1d\x00",  # shared reference tags (a cycle)
    ],
)
def test_garbage_is_refused(garbage: bytes) -> None:
    with pytest.raises(KeyFileError):
        keyfile.open_seed(garbage, "pw")
    with pytest.raises(KeyFileError):
        keyfile.is_encrypted(garbage)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_only_ever_raise_key_file_error(data: bytes) -> None:
    with pytest.raises(KeyFileError):
        keyfile.open_seed(data, "pw")
