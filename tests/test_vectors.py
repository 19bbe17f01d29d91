"""The code against the wire test vectors in tests/vectors/ (format: tests/vectors/README.md).

Other implementations check themselves against the same files. Here we also
check that the generator still reproduces the committed files byte for byte,
so the files cannot silently drift away from the code.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from swapmeet.cli import parsing
from swapmeet.protocol import boundary, build, cbor, evidence, gossip
from swapmeet.protocol.booksync import frames as syncwire
from swapmeet.protocol.errors import InvalidObject
from swapmeet.protocol.identity import Identity, peer_id, peer_id_bytes, public_key_from_peer_id
from swapmeet.protocol.objects import DOMAIN, KINDS, Exchange, Notice

VECTORS = Path(__file__).resolve().parent / "vectors"
SIGNED_KIND_FILES = [  # one file per signed kind
    "listing.json",
    "withdrawal.json",
    "offer.json",
    "exchange.json",
    "rating.json",
    "receipt.json",
    "entry.json",
    "notice.json",
]
KIND_FILES = [*SIGNED_KIND_FILES, "encoding.json", "envelope.json"]


def _load(name: str) -> dict[str, Any]:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


def _cases(section: str, files: list[str]) -> list[Any]:
    return [pytest.param(vector, id=f"{name}:{vector['name']}") for name in files for vector in _load(name)[section]]


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("swapmeet_vectors_generate", VECTORS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- signed objects


@pytest.mark.parametrize("vector", _cases("valid", KIND_FILES))
def test_valid_vector_decodes(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["bytes"])
    obj = boundary.decode(data, kind=vector["kind"], now=vector.get("now"))
    assert obj.kind == vector["kind"]
    assert obj.raw == data
    assert obj.id.hex() == vector["id"]
    # The id: SHA-256 of the whole object, or for an exchange of its signing bytes (no signatures).
    hashed = vector["signing_bytes"] if obj.kind == "exchange" else vector["bytes"]
    assert hashlib.sha256(bytes.fromhex(hashed)).hexdigest() == vector["id"]


@pytest.mark.parametrize("vector", _cases("valid", KIND_FILES))
def test_valid_vector_resigns_to_the_same_bytes(vector: dict[str, Any]) -> None:
    """Ed25519 is deterministic: the seed(s) and the signing bytes give back the exact object."""
    data = bytes.fromhex(vector["bytes"])
    signing = bytes.fromhex(vector["signing_bytes"])
    value = cbor.decode(data, max_size=boundary.MAX_ANY_SIZE)
    if vector["kind"] == "exchange":
        # [domain, "exchange", body, signatures]; everyone signs [domain, "exchange", body].
        assert signing == cbor.encode(value[:3]) == b"\x83" + data[1 : len(data) - len(cbor.encode(value[3]))]
        parties, signatures = value[2]["parties"], value[3]
        assert len(vector["seeds"]) == len(parties) == len(signatures)
        for seed, party, signature in zip(vector["seeds"], parties, signatures, strict=True):
            if seed is None:
                assert signature is None
            else:
                who = Identity(bytes.fromhex(seed))
                assert who.public_key == party
                assert who.sign(signing) == signature
        assert cbor.encode([DOMAIN, "exchange", value[2], signatures]) == data
    else:
        # [domain, kind, author, body, signature]; the author signs the first four: 0x85 -> 0x84, minus 66 bytes.
        assert signing == cbor.encode(value[:4]) == b"\x84" + data[1:-66]
        (seed,) = vector["seeds"]
        who = Identity(bytes.fromhex(seed))
        assert who.public_key == value[2]
        assert build.sign(who, vector["kind"], value[3]) == data


@pytest.mark.parametrize("vector", _cases("invalid", KIND_FILES))
def test_invalid_vector_is_refused(vector: dict[str, Any]) -> None:
    with pytest.raises(InvalidObject) as info:
        boundary.decode(bytes.fromhex(vector["bytes"]), kind=vector["decode_kind"], now=vector.get("now"))
    assert {"code": info.value.code, "path": info.value.path} == vector["error"], info.value.reason


def test_every_kind_has_valid_and_invalid_vectors() -> None:
    kinds = {v["kind"] for name in KIND_FILES for v in _load(name)["valid"]}
    assert kinds == set(KINDS) == {name.removesuffix(".json") for name in SIGNED_KIND_FILES}
    for name in SIGNED_KIND_FILES:
        assert len(_load(name)["invalid"]) >= 3, name


def test_vector_names_are_unique() -> None:
    names = [v["name"] for name in [*KIND_FILES, "proofs.json"] for s in ("valid", "invalid") for v in _load(name)[s]]
    names += [c["name"] for c in _load("gossip.json")["message_ids"]]
    assert len(names) == len(set(names))


# --------------------------------------------------------------------------- proofs, identity, item text


@pytest.mark.parametrize("vector", _cases("valid", ["proofs.json"]))
def test_valid_proof(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["bytes"])
    assert evidence.decode_proof(data).raw == data


@pytest.mark.parametrize("vector", _cases("invalid", ["proofs.json"]))
def test_invalid_proof(vector: dict[str, Any]) -> None:
    with pytest.raises(InvalidObject) as info:
        evidence.decode_proof(bytes.fromhex(vector["bytes"]))
    assert {"code": info.value.code, "path": info.value.path} == vector["error"], info.value.reason


@pytest.mark.parametrize("key", _load("identity.json")["keys"], ids=lambda k: k["name"])
def test_identity_vector(key: dict[str, Any]) -> None:
    who = Identity(bytes.fromhex(key["seed"]))
    assert who.public_key.hex() == key["public_key"]
    assert peer_id_bytes(who.public_key).hex() == key["peer_id_bytes"]
    assert peer_id(who.public_key) == who.peer_id == key["peer_id"]
    assert public_key_from_peer_id(key["peer_id"]) == who.public_key


def test_identity_vector_matches_rfc8032() -> None:
    keys = {k["name"]: k["public_key"] for k in _load("identity.json")["keys"]}
    assert keys["alice"] == "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"  # RFC 8032 TEST 1


@pytest.mark.parametrize("case", _load("item-text.json")["valid"], ids=lambda c: c["text"])
def test_item_text_parses(case: dict[str, Any]) -> None:
    item = build.parse_item(case["text"])
    assert (item.qty, item.unit, item.item) == (case["qty"], case["unit"], case["item"])
    assert str(item) == case["str"]
    assert build.parse_item(str(item)) == item
    # Within the item limits: the CLI's checks pass it too.
    assert parsing.parse_items([case["text"]], "item") == [item.to_cbor()]


@pytest.mark.parametrize("case", _load("item-text.json")["invalid"], ids=lambda c: c["text"])
def test_item_text_refused(case: dict[str, Any]) -> None:
    with pytest.raises(InvalidObject) as info:
        build.parse_item(case["text"])
    assert {"code": info.value.code, "path": info.value.path} == case["error"]
    with pytest.raises(InvalidObject) as info:
        parsing.parse_items([case["text"]], "item")  # the CLI reports the parser's error, at the option
    assert {"code": info.value.code, "path": info.value.path} == case["error"]


@pytest.mark.parametrize("case", _load("item-text.json")["unchecked"], ids=lambda c: c["text"][:40])
def test_item_text_parses_without_limit_checks(case: dict[str, Any]) -> None:
    """The parser checks the form only; the CLI checks the item limits after it (PROTOCOL.md 10.8)."""
    item = build.parse_item(case["text"])
    assert (item.qty, item.unit, item.item) == (case["qty"], case["unit"], case["item"])
    with pytest.raises(InvalidObject) as info:
        parsing.parse_items([case["text"]], "item")
    assert {"code": info.value.code, "path": info.value.path} == case["error"]
    # ...and no object can hold it: the trust boundary refuses a listing with this item.
    with pytest.raises(InvalidObject) as info:
        build.make_listing(Identity(bytes(32)), title="t", have=[item], created=1, expires=2)
    assert info.value.code == case["error"]["code"]
    assert info.value.path.startswith("listing.body.have[0].")


# --------------------------------------------------------------------------- gossip message ids


@pytest.mark.parametrize("case", _load("gossip.json")["message_ids"], ids=lambda c: c["name"])
def test_gossip_message_id(case: dict[str, Any]) -> None:
    topics, data = case["topics"], bytes.fromhex(case["data"])
    publisher, seqno = bytes.fromhex(case["publisher"]), bytes.fromhex(case["seqno"])
    per_publication = any(t.split("/")[3] in gossip.PER_PUBLICATION_TOPICS for t in topics)
    assert case["per_publication"] == per_publication
    if per_publication:
        got = gossip.message_id(topics, data, publisher, seqno)
    else:
        got = gossip.message_id(topics, data)
        assert gossip.message_id(topics, data, publisher, seqno) != got  # the suffix would change it
    assert got.hex() == case["id"]
    # The layout of PROTOCOL.md 13.1, spelled out.
    preimage = b"".join(len(t.encode()).to_bytes(4, "big") + t.encode() for t in topics) + data
    if per_publication:
        preimage += b"\x00publication\x00" + publisher + b"\x00" + seqno
    assert hashlib.sha256(preimage).hexdigest() == case["id"]


def test_gossip_vectors_show_what_the_id_covers() -> None:
    by_name = {c["name"]: c["id"] for c in _load("gossip.json")["message_ids"]}
    assert _load("gossip.json")["per_publication_topics"] == list(gossip.PER_PUBLICATION_TOPICS) == ["settle"]
    # Content-only: another publisher of the same bytes is the same message.
    assert by_name["gossip-id-listing-batch"] == by_name["gossip-id-listing-batch-other-publisher"]
    # Per publication: a retry or another publisher is a new message.
    settle = {by_name[n] for n in ("gossip-id-settle", "gossip-id-settle-retry", "gossip-id-settle-other-publisher")}
    assert len(settle) == 3
    assert by_name["gossip-id-two-topics"] != by_name["gossip-id-two-topics-swapped"]
    assert len(set(by_name.values())) == len(by_name) - 1


# --------------------------------------------------------------------------- book sync sessions


@pytest.mark.parametrize("session", _load("sync.json")["sessions"], ids=lambda s: s["name"])
def test_sync_session_transcript(session: dict[str, Any]) -> None:
    """node/sync.py, run on the vector's two sets, sends exactly the vector's frames (PROTOCOL.md 14.4)."""

    def side(name: str) -> tuple[list[tuple[int, bytes]], list[bytes]]:
        items = [(t, bytes.fromhex(i)) for t, i in session[name]["items"]]
        return items, [bytes.fromhex(raw) for raw in session[name]["objects"]]

    frames, fetched, pushed = _generator().run_sync_session(side("initiator"), side("responder"))
    assert [{"from": who, "frame": f.hex()} for who, f in frames] == [
        {"from": f["from"], "frame": f["frame"]} for f in session["frames"]
    ]
    assert [boundary.object_id(r).hex() for r in fetched] == session["initiator_received"]
    assert [boundary.object_id(r).hex() for r in pushed] == session["responder_received"]

    # What the transcript shows, stated once more against the frames themselves.
    decoded = [
        (who, *syncwire.decode_frame(bytes.fromhex(f["frame"]))) for f in session["frames"] for who in [f["from"]]
    ]
    tags = [tag for who, tag, _ in decoded if who == "initiator"]
    assert tags[-1] == "end" and tags.count("end") == 1
    assert tags == sorted(tags, key=["rec", "get", "put", "end"].index)  # rec+ get* put* end
    recs = [(who, payload) for who, tag, payload in decoded if tag == "rec"]
    assert [who for who, _ in recs] == ["initiator", "responder"] * (len(recs) // 2)  # strictly alternating
    assert all(payload != b"\x01" for who, payload in recs if who == "initiator")  # the empty answer is not sent
    assert all(who == "initiator" for who, tag, _ in decoded if tag in ("get", "put", "end"))
    assert all(who == "responder" for who, tag, _ in decoded if tag == "objs")


# --------------------------------------------------------------------------- the files match the code


def test_generator_reproduces_the_files() -> None:
    rendered = _generator().render()
    on_disk = {p.name for p in VECTORS.glob("*.json")}
    assert on_disk == set(rendered), "run: python tests/vectors/generate.py"
    for name, text in rendered.items():
        assert (VECTORS / name).read_text(encoding="utf-8") == text, f"{name} is stale: run tests/vectors/generate.py"


def test_exchange_ids_ignore_signatures() -> None:
    by_name = {v["name"]: v for v in _load("exchange.json")["valid"]}
    ids = {by_name[n]["id"] for n in ("exchange-proposed", "exchange-maker-signed", "exchange-complete")}
    assert len(ids) == 1
    complete = boundary.decode(bytes.fromhex(by_name["exchange-complete"]["bytes"]), kind="exchange")
    assert isinstance(complete, Exchange) and complete.complete


def test_notice_vectors_name_their_target() -> None:
    """A notice carries the offer or exchange it is about; every valid one is by a party allowed to say it."""
    for vector in _load("notice.json")["valid"]:
        notice = boundary.decode(bytes.fromhex(vector["bytes"]), kind="notice")
        assert isinstance(notice, Notice)
        assert (notice.offer is None) != (notice.exchange is None)
        if notice.offer is not None:
            allowed = notice.offer.recipient if notice.action == "decline" else notice.offer.author
            assert notice.author == allowed, vector["name"]
        else:
            assert notice.exchange is not None and notice.action == "cancel"
            assert notice.author in notice.exchange.parties
            assert notice.author not in notice.exchange.signed_by, vector["name"]
