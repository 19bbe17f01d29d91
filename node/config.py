"""The node's configuration: built-in defaults < ``<home>/config.toml`` < ``SWAPMEET_*`` variables < flags.

Nine settings, each with one name used everywhere (TOML key, ``SWAPMEET_<NAME>``
variable, ``--<name>`` flag of ``swapmeet node run``):

=============  ================================  ===========================================
key            default                           meaning
=============  ================================  ===========================================
listen         ``["/ip4/0.0.0.0/tcp/4001"]``     libp2p listen addresses (``/ip4|ip6/.../tcp/PORT``)
bootstrap      ``[]``                            peers to dial (``.../tcp/PORT/p2p/<peer id>``)
net            ``"main"``                        network name: separate markets never mix
api_port       ``0``                             local API port on 127.0.0.1 (0: any free port)
mdns           ``true``                          discover peers on the local network
dht            ``true``                          run the Kademlia DHT (peer routing)
relay_service  ``true``                          offer a capped Circuit Relay v2 service to peers
archive        ``false``                         replicate every ledger chain heard of
follow         ``[]``                            PeerIDs whose ledger chains to replicate
=============  ================================  ===========================================

Without ``archive`` a node replicates the chains of its counterparties (parties
to its exchanges) and of the authors in ``follow``.

:func:`load_config` merges the layers and returns an :class:`EffectiveConfig`
that records, for every value, where it came from: ``"default"``, the config
file's path, ``"env SWAPMEET_NET"`` or ``"flag --net"`` (``swapmeet config show``
prints them). In the environment, list values are comma-separated, booleans are
``true/false/1/0/yes/no``, and an empty variable counts as unset (as
``SWAPMEET_HOME`` does), so ``SWAPMEET_NET= swapmeet ...`` means "not set here".

Every bad input raises :class:`ConfigError` (exit code 2) whose message is one
line naming what is wrong and where: the file and key, the variable, or the flag.

This module must stay light: ``swapmeet config show`` and every ``--help`` import
it, so no libp2p, not even the ``multiaddr`` package (~0.2 s): addresses get a
shape check here with the standard library, and libp2p parses them for real when
the node starts. :func:`validate_net` is the one network-name rule
(the host, ``node/host/names.py``, uses it too).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from swapmeet.ledger.localfile import open_regular
from swapmeet.protocol.errors import InvalidObject, SwapmeetError
from swapmeet.protocol.identity import public_key_from_peer_id

from .home import Home

DEFAULT_PORT = 4001
# A fixed, documented port (not 0) so LAN peers and bootstrap lists can name a node by its host alone.
DEFAULT_LISTEN: tuple[str, ...] = (f"/ip4/0.0.0.0/tcp/{DEFAULT_PORT}",)
DEFAULT_NET = "main"
ENV_PREFIX = "SWAPMEET_"
SOURCE_DEFAULT = "default"

# The name goes into every topic and protocol id (node/host/names.py uses this rule too).
_NET_RE = re.compile(r"[a-z0-9-]{1,32}")
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


class ConfigError(SwapmeetError):
    """A configuration value (file, environment or flag) is malformed. One line: what and where."""

    exit_code = 2


# --- checks of single values (raise ValueError with the reason; the caller adds "where") ---


def validate_net(net: str) -> str:
    """Return ``net`` if it is a valid network name, else raise ValueError."""
    if not isinstance(net, str) or not _NET_RE.fullmatch(net):
        raise ValueError(f"invalid network name {net!r}: use 1-32 characters from a-z, 0-9 and '-'")
    return net


def _port(text: str, addr: str) -> None:
    if not text.isascii() or not text.isdigit() or not 0 <= int(text) <= 65535:
        raise ValueError(f"bad TCP port {text!r} in {addr!r} (expected 0-65535)")


def _ip(proto: str, text: str, addr: str) -> None:
    try:
        (ipaddress.IPv4Address if proto == "ip4" else ipaddress.IPv6Address)(text)
    except ValueError:
        raise ValueError(f"bad {proto} address {text!r} in {addr!r}") from None


def _hostname(text: str, addr: str) -> None:
    labels = text.rstrip(".").split(".")
    if len(text) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"bad DNS name {text!r} in {addr!r}")


def _parts(addr: str, example: str) -> list[str]:
    if not isinstance(addr, str) or not addr.startswith("/") or "//" in addr or addr.endswith("/") or " " in addr:
        raise ValueError(f"not a multiaddr: {addr!r} (expected e.g. {example})")
    return addr[1:].split("/")


def validate_listen_addr(addr: str) -> str:
    """A listen address: exactly ``/ip4/<addr>/tcp/<port>`` or ``/ip6/<addr>/tcp/<port>``.

    TCP only, as the host requires (``node/host/host.py``): listen addresses also choose
    the transports libp2p starts, and the node runs TCP and nothing else.
    """
    parts = _parts(addr, DEFAULT_LISTEN[0])
    if len(parts) != 4 or parts[0] not in ("ip4", "ip6") or parts[2] != "tcp":
        raise ValueError(f"listen address must be /ip4|ip6/<addr>/tcp/<port>, got {addr!r}")
    _ip(parts[0], parts[1], addr)
    _port(parts[3], addr)
    return addr


def validate_dial_addr(addr: str) -> str:
    """A bootstrap address: ``/ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>/p2p/<peer id>`` or
    ``/dnsaddr/<host>/p2p/<peer id>``; the peer id must be an Ed25519 PeerID (``12D3KooW...``),
    since a swapmeet peer's PeerID is its trading identity.
    """
    parts = _parts(addr, f"/ip4/192.0.2.7/tcp/{DEFAULT_PORT}/p2p/12D3KooW...")
    shape = f"expected /ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>/p2p/<peer id>, got {addr!r}"
    if len(parts) == 4 and parts[0] == "dnsaddr" and parts[2] == "p2p":
        _hostname(parts[1], addr)
    elif len(parts) == 6 and parts[2] == "tcp" and parts[4] == "p2p":
        if parts[0] in ("ip4", "ip6"):
            _ip(parts[0], parts[1], addr)
        elif parts[0] in ("dns", "dns4", "dns6"):
            _hostname(parts[1], addr)
        else:
            raise ValueError(shape)
        _port(parts[3], addr)
    else:
        raise ValueError(shape)
    try:
        public_key_from_peer_id(parts[-1])
    except InvalidObject:
        raise ValueError(f"bad peer id {parts[-1]!r} in {addr!r} (expected an Ed25519 PeerID, 12D3KooW...)") from None
    return addr


def validate_peer_id(text: str) -> str:
    """A PeerID to follow: an Ed25519 PeerID (``12D3KooW...``), the form of every trading identity."""
    try:
        public_key_from_peer_id(text)
    except InvalidObject:
        raise ValueError(f"bad peer id {text!r} (expected an Ed25519 PeerID, 12D3KooW...)") from None
    return text


def _api_port(port: int) -> int:
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range (0-65535; 0 picks any free port)")
    return port


# --- the keys ---


@dataclass(frozen=True, slots=True)
class _Key:
    name: str
    kind: str  # "list", "str", "int" or "bool": the TOML type and how the environment spells it
    default: Any
    check: Callable[[Any], Any]  # one item (lists) or the value; raises ValueError

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    def flag(self, value: Any) -> str:
        """The flag as the user typed it (booleans: ``--mdns`` or ``--no-mdns``)."""
        name = self.name.replace("_", "-")
        return f"--{name}" if self.kind != "bool" or value else f"--no-{name}"


_KEYS: tuple[_Key, ...] = (
    _Key("listen", "list", DEFAULT_LISTEN, validate_listen_addr),
    _Key("bootstrap", "list", (), validate_dial_addr),
    _Key("net", "str", DEFAULT_NET, validate_net),
    _Key("api_port", "int", 0, _api_port),
    _Key("mdns", "bool", True, lambda v: v),
    _Key("dht", "bool", True, lambda v: v),
    _Key("relay_service", "bool", True, lambda v: v),
    _Key("archive", "bool", False, lambda v: v),
    _Key("follow", "list", (), validate_peer_id),
)
KEYS: tuple[str, ...] = tuple(k.name for k in _KEYS)
ENV_VARS: tuple[str, ...] = tuple(k.env for k in _KEYS)
_BY_NAME = {k.name: k for k in _KEYS}
_TOML_TYPE = {"list": "an array of strings", "str": "a string", "int": "an integer", "bool": "true or false"}


def _toml_value(value: Any) -> str:
    """``string "x"``, ``boolean true``...: the value as the user wrote it in TOML, with its type."""
    names = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array", dict: "table"}
    shown = json.dumps(value, ensure_ascii=False, default=str)  # JSON spells scalars as TOML does
    return f"{names.get(type(value), type(value).__name__)} {shown if len(shown) <= 60 else shown[:57] + '...'}"


def _from_toml(key: _Key, value: Any) -> Any:
    """Type-check and validate a value read from the TOML file (raises ValueError)."""
    wrong = ValueError(f"expected {_TOML_TYPE[key.kind]}, got {_toml_value(value)}")
    if key.kind == "list":
        if not isinstance(value, list):
            raise wrong
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise ValueError(f"item {i}: expected a string, got {_toml_value(item)}")
        return _check_list(key, value)
    # bool is a subclass of int in Python, but `api_port = true` is a mistake, not port 1
    if key.kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        raise wrong
    if (key.kind == "str" and not isinstance(value, str)) or (key.kind == "bool" and not isinstance(value, bool)):
        raise wrong
    return key.check(value)


def _check_list(key: _Key, items: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    if key.name == "listen" and not items:
        # an empty list would silently mean "the default" further down (run_node); say so instead
        raise ValueError("needs at least one address")
    return tuple(key.check(item) for item in items)


def _from_env(key: _Key, text: str) -> Any:
    """Parse and validate a (non-empty) environment value (raises ValueError)."""
    text = text.strip()
    if key.kind == "list":
        return _check_list(key, [item.strip() for item in text.split(",") if item.strip()])
    if key.kind == "int":
        if not (text.isascii() and text.isdigit()):
            raise ValueError(f"expected an integer 0-65535, got {text!r}")
        return key.check(int(text))
    if key.kind == "bool":
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError(f"expected true/false/1/0/yes/no, got {text!r}")
    return key.check(text)


def _from_flag(key: _Key, value: Any) -> Any:
    if key.kind == "list":
        return _check_list(key, [str(v) for v in value])
    return key.check(value)


# --- the result ---


@dataclass(frozen=True, slots=True)
class Setting:
    """One effective value and where it came from."""

    value: Any
    source: str


@dataclass(frozen=True, slots=True)
class EffectiveConfig:
    """The merged configuration; ``sources[key]`` is ``"default"``, a file path, ``"env X"`` or ``"flag --x"``."""

    listen: tuple[str, ...]
    bootstrap: tuple[str, ...]
    net: str
    api_port: int
    mdns: bool
    dht: bool
    relay_service: bool
    archive: bool
    follow: tuple[str, ...]
    sources: Mapping[str, str]
    file: str  # the config file that was (or would have been) read

    def settings(self) -> dict[str, Setting]:
        """Every key in documentation order, with its value and source."""
        return {name: Setting(getattr(self, name), self.sources[name]) for name in KEYS}

    def to_json(self) -> dict[str, dict[str, Any]]:
        """``{"key": {"value": ..., "source": ...}}`` (lists as JSON arrays)."""
        return {
            name: {"value": list(s.value) if isinstance(s.value, tuple) else s.value, "source": s.source}
            for name, s in self.settings().items()
        }


def read_file(path: os.PathLike[str] | str) -> dict[str, Any]:
    """The validated keys of a config file; ``{}`` when it does not exist."""
    shown = str(path)
    try:
        with open_regular(path) as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{shown}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{shown}: not valid TOML: the file is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {shown}: {exc.strerror or exc}") from None
    values: dict[str, Any] = {}
    for name, value in data.items():
        key = _BY_NAME.get(name)
        if key is None:
            raise ConfigError(f"{shown}: unknown key {name!r}{_did_you_mean(name)} (known keys: {', '.join(KEYS)})")
        try:
            values[name] = _from_toml(key, value)
        except ValueError as exc:
            raise ConfigError(f"{shown}: key {name!r}: {exc}") from None
    return values


def _did_you_mean(name: str) -> str:
    import difflib  # only on this error path

    close = difflib.get_close_matches(name.lower().replace("-", "_"), KEYS, n=1)
    return f", did you mean {close[0]!r}?" if close else ""


def load_config(
    home: Home,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> EffectiveConfig:
    """Merge defaults < ``home.config`` < ``SWAPMEET_*`` in ``env`` (default ``os.environ``) < ``flags``.

    ``flags`` maps keys to command-line values; ``None`` (or an empty tuple for
    the list keys, as click gives for a repeatable option never used) means the
    flag was not given. Raises :class:`ConfigError` on any bad value.
    """
    env = os.environ if env is None else env
    flags = flags or {}
    unknown = set(flags) - set(KEYS)
    if unknown:
        raise ValueError(f"load_config: unknown flag keys {sorted(unknown)}")  # a caller's bug, not user input
    path = str(home.config)
    from_file = read_file(home.config)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key in _KEYS:
        value, source = key.default, SOURCE_DEFAULT
        if key.name in from_file:
            value, source = from_file[key.name], path
        text = env.get(key.env)
        if text is not None and text.strip() != "":
            try:
                value, source = _from_env(key, text), f"env {key.env}"
            except ValueError as exc:
                raise ConfigError(f"environment variable {key.env}: {exc}") from None
        given = flags.get(key.name)
        if given is not None and not (key.kind == "list" and len(given) == 0):
            try:
                value, source = _from_flag(key, given), f"flag {key.flag(given)}"
            except ValueError as exc:
                raise ConfigError(f"{key.flag(given)}: {exc}") from None
        values[key.name] = tuple(value) if key.kind == "list" else value
        sources[key.name] = source
    return EffectiveConfig(**values, sources=MappingProxyType(sources), file=path)
