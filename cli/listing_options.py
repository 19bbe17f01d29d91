"""``swapmeet publish``'s options, made from the one listing shape (``ListingSpec``): one option per field.

A field's type says how it is typed on the command line and sent to the node:
text as is (a choice where the field lists its ``choices``), items as
repeatable ``QTY [UNIT] x ITEM`` (checked here against the protocol's limits),
tags as repeatable words, a time as ``WHEN`` (a duration from now, Unix seconds
or an ISO date), a window as ``START..END``, hashes (photos) as repeatable
``--photo FILE``: the file is read here (a regular file, at most
:data:`MAX_PHOTO_FILE` bytes) and sent to the node, which re-encodes it and
answers with the hash the listing names (:func:`upload_files`); listing ids
(``--accept LISTING``) as full ids or short prefixes, looked up on the node
and sent as the listing's (author, series) (:func:`resolve_refs`). The two expiry fields are one
option, ``--expires WHEN``: a duration goes to the node as relative (its clock
decides), anything else as absolute. A new field of ``ListingSpec`` gets its
option here without an edit, as long as its type is one of these.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import MISSING, Field, dataclass, fields
from typing import TYPE_CHECKING, Any, get_type_hints

import click
from swapmeet.ledger.localfile import open_regular
from swapmeet.protocol.errors import InvalidObject
from swapmeet.protocol.listing_spec import HASH_FIELDS, REF_FIELDS, ListingSpec
from swapmeet.protocol.objects import Item

from .parsing import parse_expires, parse_items, parse_when, parse_window

if TYPE_CHECKING:
    from .client import ApiClient

EXPIRES_HELP = "7d, 12h, 30m, Unix seconds or an ISO date [default: 7d]."


@dataclass(frozen=True)
class _Kind:
    """How one type of listing field is typed on the command line and sent to the node."""

    multiple: bool
    metavar: str | None
    to_json: Callable[[Any, str, int], Any]  # (value, option, now) -> what the API takes
    example: str = ""


_KINDS: dict[Any, _Kind] = {
    str: _Kind(False, None, lambda v, option, now: v),
    str | None: _Kind(False, None, lambda v, option, now: v),
    Sequence[str]: _Kind(True, None, lambda v, option, now: list(v)),
    Sequence[Item]: _Kind(True, "'QTY [UNIT] x ITEM'", lambda v, option, now: parse_items(v, option)),
    int | None: _Kind(
        False, "WHEN", lambda v, option, now: parse_when(v, now, option), " (7d, Unix seconds, ISO date)"
    ),
    tuple[int, int] | None: _Kind(False, "START..END", lambda v, option, now: parse_window(v, now), ", e.g. 1d..3d"),
    # files read here, uploaded by upload_files(): the node re-encodes them and names them by hash
    Sequence[bytes]: _Kind(True, "FILE", lambda v, option, now: [read_file(p, option) for p in v]),
    # listing ids or prefixes as typed, made (author, series) references by resolve_refs(): the node knows them
    tuple[tuple[bytes, bytes], ...]: _Kind(True, "LISTING", lambda v, option, now: list(v)),
}
MAX_PHOTO_FILE = 16 * 1024 * 1024  # bytes, what the node's upload endpoint accepts (a phone photo is 2-8 MB)


def read_file(path: str, option: str) -> bytes:
    """The bytes of a local file given to ``option``; a one-line refusal for anything but a regular file."""
    try:
        f = open_regular(path)
    except OSError as exc:
        raise InvalidObject(option, f"cannot read {path!r}: {exc.strerror}", "file") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_PHOTO_FILE:
            raise InvalidObject(option, f"{path!r} is {size} bytes, over {MAX_PHOTO_FILE}", "file")
        return f.read(MAX_PHOTO_FILE + 1)


_TYPES = get_type_hints(ListingSpec)
_OPTION_OF = {f.name: "--" + f.metadata.get("option", f.name) for f in fields(ListingSpec)}


def _content_fields() -> list[Field[Any]]:
    return [f for f in fields(ListingSpec) if not f.metadata.get("expiry")]


def _option_name(f: Field[Any]) -> str:
    return "--" + f.metadata.get("option", f.name).replace("_", "-")


def listing_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add one option per listing field (and ``--expires``) to ``command``, in the fields' order."""
    options = []
    for f in _content_fields():
        kind = _KINDS[_TYPES[f.name]]
        required = f.default is MISSING
        default = None if required or f.default is None else f.default
        if kind.multiple:
            default = ()
        extra: dict[str, Any] = {}
        if "choices" in f.metadata:
            extra = {"type": click.Choice(f.metadata["choices"]), "show_default": True}
        options.append(
            click.option(
                _option_name(f),
                f.name,
                multiple=kind.multiple,
                required=required or bool(f.metadata.get("min_items")),
                default=default,
                metavar=f.metadata.get("metavar", kind.metavar),
                help=f.metadata["help"].rstrip(".") + kind.example + ".",
                **extra,
            )
        )
    options.append(click.option("--expires", "expires", metavar="WHEN", help=EXPIRES_HELP))
    for option in reversed(options):
        command = option(command)
    return command


def listing_body(values: dict[str, Any], now: int) -> dict[str, Any]:
    """The API's request body for the options' values: every given field, in the node's terms.

    Raises :class:`InvalidObject` naming the option for a value the protocol would refuse.
    """
    body: dict[str, Any] = {}
    for f in _content_fields():
        value = values.get(f.name)
        if value is None:
            continue
        body[f.name] = _KINDS[_TYPES[f.name]].to_json(value, _option_name(f), now)
    if values["expires"] is not None:
        body.update(parse_expires(values["expires"]))
    return body


def record_body(record: object, where: str, base: str, now: int) -> dict[str, Any]:
    """A catalogue record's API request body (:func:`listing_body` of :func:`_record_values`); errors name
    the record's key (``shop.json[3].have``), not the option."""
    try:
        return listing_body(_record_values(record, where, base), now)
    except InvalidObject as err:
        if not err.path.startswith("--"):
            raise
        raise InvalidObject(err.path[2:], err.reason, err.code).under(where) from None


def _record_values(record: object, where: str, base: str) -> dict[str, Any]:
    """A catalogue record (``swapmeet import``) as the options' values :func:`listing_body` takes.

    ``record``: a JSON object keyed by the option names without ``--`` (``title``, ``have``, ``tag``,
    ``photo``, ``expires``...), each a string (a number for a time), or a list of them for a repeatable
    option; photo paths are relative to ``base``. Raises :class:`InvalidObject` at ``where``.
    """
    if not isinstance(record, dict):
        raise InvalidObject(where, f"expected an object of the publish options, got {json_type(record)}", "type")
    by_key = {_option_name(f)[2:]: f for f in _content_fields()}
    unknown = sorted(set(record) - set(by_key) - {"expires"})
    if unknown:
        raise InvalidObject(f"{where}.{unknown[0]}", f"no such option; one of {', '.join([*by_key, 'expires'])}", "key")
    values: dict[str, Any] = {"expires": None}
    for key, value in record.items():
        path = f"{where}.{key}"
        if key == "expires":
            values["expires"] = _text(value, path)
            continue
        f = by_key[key]
        if not _KINDS[_TYPES[f.name]].multiple:
            values[f.name] = _text(value, path)
            continue
        texts = [_text(v, f"{path}[{i}]") for i, v in enumerate(value if isinstance(value, list) else [value])]
        if f.name in HASH_FIELDS:
            texts = [os.path.join(base, t) for t in texts]
        values[f.name] = tuple(texts)
    for key, f in by_key.items():
        if (f.default is MISSING and f.name not in values) or (f.metadata.get("min_items") and not values.get(f.name)):
            raise InvalidObject(f"{where}.{key}", "missing: every listing needs one", "missing")
    return values


def _text(value: object, path: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidObject(path, f"expected a string, got {json_type(value)}", "type")
    return str(value)


_JSON_TYPES = {dict: "an object", list: "a list", int: "a number", float: "a number", bool: "a boolean"}


def json_type(value: object) -> str:
    """What a decoded JSON value is, as an error message says it ("an object", "a list"...)."""
    return "null" if value is None else _JSON_TYPES.get(type(value), type(value).__name__)


def resolve_refs(body: dict[str, Any], client: ApiClient) -> dict[str, Any]:
    """``body`` with the listings of its reference fields (``--accept``), typed as ids or short prefixes, made
    ``{"author", "series"}`` references (a listing across its revisions) by asking the node."""
    for name in REF_FIELDS:
        if name in body:
            refs = []
            for text in body[name]:
                found = client.get(client.resolve(text.strip().lower()))
                if found.get("kind") != "listing":
                    raise InvalidObject(_OPTION_OF.get(name, name), f"{text!r} is a {found.get('kind')}, not a listing")
                refs.append({"author": found["author"], "series": found["series"]})
            body[name] = refs
    return body


def upload_files(body: dict[str, Any], client: ApiClient) -> dict[str, Any]:
    """``body`` with the files of its hash fields (``--photo``) sent to the node and replaced by their hashes."""
    for name in HASH_FIELDS:
        if name in body:
            body[name] = [client.add_photo(data)["hash"] for data in body[name]]
    return body
