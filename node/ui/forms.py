"""The publish form, made from the one listing shape (``ListingSpec``) as ``swapmeet publish``'s options are.

Each field's *type* says how it is shown and read, nothing is named field by
field (except that ``desc`` gets a text area): text as a text box (a choice
list where the field has ``choices``), items one ``QTY [UNIT] x ITEM`` per line,
tags separated by spaces or commas, a time as ``WHEN`` (``7d``, ``12h``, an ISO
date or Unix seconds), a window as ``START..END``, photos as image files
(uploaded to the node, which re-encodes them and names them by hash). The
checks are the protocol's, run by the node when it signs; an error is shown
next to the field its path names.
"""

from __future__ import annotations

import datetime
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, fields
from typing import Any, get_type_hints

from swapmeet.protocol.build import parse_item
from swapmeet.protocol.errors import InvalidObject
from swapmeet.protocol.listing_spec import CONTENT_FIELDS, ListingSpec
from swapmeet.protocol.objects import Item

_TYPES = get_type_hints(ListingSpec)
_DURATION = re.compile(r"(\d+)\s*([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
LONG_TEXT = {"desc"}  # shown as a text area
DEFAULT_EXPIRES = "7d"


@dataclass(frozen=True)
class FormField:
    """One control of the publish form: ``widget`` is text, textarea, select, items, words, when, window or file."""

    name: str
    label: str
    widget: str
    help: str
    required: bool
    choices: tuple[str, ...] = ()


_WIDGETS: dict[Any, str] = {
    str: "text",
    str | None: "text",
    Sequence[str]: "words",
    Sequence[Item]: "items",
    int | None: "when",
    tuple[int, int] | None: "window",
    Sequence[bytes]: "file",
}


def form_fields() -> list[FormField]:
    """Every content field of ListingSpec, in its order, as a form control."""
    out = []
    for f in fields(ListingSpec):
        if f.name not in CONTENT_FIELDS or f.metadata.get("form") is False:
            continue
        widget = _WIDGETS[_TYPES[f.name]]
        if "choices" in f.metadata:
            widget = "select"
        elif f.name in LONG_TEXT:
            widget = "textarea"
        required = f.default is MISSING and f.default_factory is MISSING  # type: ignore[misc]
        out.append(
            FormField(
                f.name,
                f.metadata.get("option", f.name).replace("_", " ").capitalize(),
                widget,
                f.metadata["help"],
                required or bool(f.metadata.get("min_items")),
                tuple(f.metadata.get("choices", ())),
            )
        )
    return out


def parse_when(text: str, now: int, path: str) -> int:
    """``7d``/``12h``/``30m`` from now, Unix seconds, or an ISO date/time (UTC unless it says otherwise)."""
    text = text.strip()
    if re.fullmatch(rf"(?:{_DURATION.pattern}\s*)+", text):
        return now + sum(int(n) * _UNIT_S[u] for n, u in _DURATION.findall(text))
    if text.isdigit():
        return int(text)
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidObject(path, f"expected 7d, 12h, Unix seconds or an ISO date, got {text!r}", "format") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return int(when.timestamp())


def spec_from_form(form: Mapping[str, str], photos: Sequence[bytes], now: int | None = None) -> ListingSpec:
    """A ListingSpec from the publish form's text values and the hashes of its uploaded photos.

    Raises :class:`InvalidObject` whose path names the field.
    """
    now = int(time.time()) if now is None else now
    values: dict[str, Any] = {}
    for f in form_fields():
        raw = (form.get(f.name) or "").strip()
        if f.widget == "items":
            lines = [line for line in raw.splitlines() if line.strip()]
            values[f.name] = tuple(parse_item(line, f"{f.name}[{i}]") for i, line in enumerate(lines))
        elif f.widget == "words":
            values[f.name] = tuple(w for w in re.split(r"[\s,]+", raw) if w)
        elif f.widget == "file":
            values[f.name] = tuple(photos)
        elif f.widget == "when":
            values[f.name] = parse_when(raw, now, f.name) if raw else None
        elif f.widget == "window":
            if raw:
                start, sep, end = raw.partition("..")
                if not sep:
                    raise InvalidObject(f.name, f"expected START..END (e.g. 1d..3d), got {raw!r}", "format")
                values[f.name] = (parse_when(start, now, f.name), parse_when(end, now, f.name))
            else:
                values[f.name] = None
        elif raw:
            values[f.name] = raw  # left empty: the field's default (goods, no location...)
    if not values.get("title"):
        raise InvalidObject("title", "a listing needs a title", "missing-field")
    expires = (form.get("expires") or DEFAULT_EXPIRES).strip()
    values["expires"] = parse_when(expires, now, "expires")
    return ListingSpec(**values)


def field_of(path: str) -> str:
    """The form field an error path names: ``listing.body.have[1].qty`` -> ``have``; ``window`` -> ``window``."""
    for prefix in ("listing.body.", "listing."):
        if path.startswith(prefix):
            path = path[len(prefix) :]
    name = re.split(r"[.\[]", path, maxsplit=1)[0]
    return name if name in CONTENT_FIELDS or name == "expires" else "_form"


def form_values(listing: Mapping[str, Any]) -> dict[str, str]:
    """A rendered listing (jsonview) as the form's text values (to replace it)."""
    out: dict[str, str] = {}
    for f in form_fields():
        value = listing.get(f.name)
        if value is None or f.widget == "file":
            continue
        if f.widget == "items":
            out[f.name] = "\n".join(
                f"{i['qty']} {'' if i['unit'] == 'pc' else i['unit'] + ' '}x {i['item']}" for i in value
            )
        elif f.widget == "words":
            out[f.name] = " ".join(value)
        elif f.widget == "window":
            out[f.name] = f"{value[0]}..{value[1]}"
        else:
            out[f.name] = str(value)
    return out
