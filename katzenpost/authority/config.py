"""TOML configuration of the directory authority: the non-voting form
(authority/nonvoting/server/config) and the voting form (authority/voting/server/config), which
adds `[[Authorities]]`, the other authorities of the network.

Strict like the node's loader, and reporting like it: every unknown key and every invalid value
is found in one pass and listed, one line each, naming Section.Field. Parsing and validation
only; it creates no files.
"""
from __future__ import annotations

import base64
import binascii
import ipaddress
import math
import os
import re
import tomllib
from dataclasses import dataclass, field

from katzenpost.keys import decode_key_string
from katzenpost.rules import DEFAULT_PERIOD, discover_global_ipv4, epoch_period_problem, idna_lookup_to_ascii

DEFAULT_PORT = 62472
DEFAULT_SEND_RATE_PER_MINUTE = 100
DEFAULT_LAMBDA = 0.00025
MAX_DELAY_PERCENTILE = 0.99999
ABSOLUTE_MAX_DELAY_MS = 6 * 60 * 60 * 1000
DEFAULT_LAYERS = 3
MAX_LAYERS = 3
DEFAULT_MIN_NODES_PER_LAYER = 2
LOG_LEVELS = ("ERROR", "WARNING", "NOTICE", "INFO", "DEBUG")
IDENTITY_KEY_LEN = 32

_PORT = re.compile(r"[0-9]{1,5}")
_LAMBDAS = (("Mu", "MuMaxDelay"), ("LambdaP", "LambdaPMaxDelay"), ("LambdaL", "LambdaLMaxDelay"),
            ("LambdaD", "LambdaDMaxDelay"), ("LambdaM", "LambdaMMaxDelay"))


class AuthorityConfigError(ValueError):
    """The configuration file is missing, unreadable or invalid; `problems` lists every reason,
    one line each (the node's `ConfigError` format)."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


@dataclass
class LoggingConfig:
    disable: bool = False
    file: str = ""
    level: str = "NOTICE"


@dataclass
class Parameters:
    send_rate_per_minute: int = 0
    mu: float = 0.0
    mu_max_delay: int = 0
    lambda_p: float = 0.0
    lambda_p_max_delay: int = 0
    lambda_l: float = 0.0
    lambda_l_max_delay: int = 0
    lambda_d: float = 0.0
    lambda_d_max_delay: int = 0
    lambda_m: float = 0.0
    lambda_m_max_delay: int = 0


@dataclass
class DebugConfig:
    layers: int = 0
    min_nodes_per_layer: int = 0
    generate_only: bool = False
    # Test networks only: a shorter epoch period in seconds (0 = the reference's 20 minutes).
    epoch_period: int = 0


@dataclass
class Node:
    identifier: str
    identity_key: bytes


@dataclass
class Peer:
    """Another voting authority: its Ed25519 identity key (its name), its X25519 link key (its
    Noise static key) and the addresses it listens on."""
    identity_public_key: bytes
    link_public_key: bytes
    addresses: list[str]

    def dial_addresses(self) -> list[tuple[str, int]]:
        return [_ip_port(a) for a in self.addresses]


@dataclass
class AuthorityConfig:
    identifier: str
    addresses: list[str]
    data_dir: str
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    parameters: Parameters = field(default_factory=Parameters)
    debug: DebugConfig = field(default_factory=DebugConfig)
    mixes: list[Node] = field(default_factory=list)
    providers: list[Node] = field(default_factory=list)
    # The voting form: the other authorities (None for the non-voting form; a voting authority
    # alone, with `Authorities = []`, has an empty list).
    authorities: list[Peer] | None = None

    @property
    def is_voting(self) -> bool:
        return self.authorities is not None

    @property
    def epoch_period(self) -> int:
        return self.debug.epoch_period or DEFAULT_PERIOD

    def listen_addresses(self) -> list[tuple[str, int]]:
        return [_ip_port(a) for a in self.addresses]


# --- generic strict decoding -----------------------------------------------------------------

class _Problems:
    """What one parse found: invalid values (in order) and unknown keys."""

    def __init__(self):
        self.invalid: list[str] = []
        self.undecoded: list[str] = []

    def add(self, problem: str) -> None:
        self.invalid.append(f"config: {problem}")

    def all(self) -> list[str]:
        head = ([f"config: Undecoded keys in config file: [{' '.join(self.undecoded)}]"]
                if self.undecoded else [])
        return head + self.invalid


def _take(table, section: str, spec: dict, found: _Problems) -> dict:
    """Match keys exactly, then case-insensitively; leftover keys are recorded as undecoded and
    values of the wrong type as problems (and left out of the result)."""
    if not isinstance(table, dict):
        found.add(f"{section} must be a table")
        return {}
    lowered = {name.lower(): name for name in spec}
    values = {}
    for key, value in table.items():
        name = key if key in spec else lowered.get(key.lower())
        where = f"{section}.{name or key}" if section else (name or key)
        if name is None:
            found.undecoded.append(where)
        elif name in values:
            found.add(f"{where} is set twice")
        elif _typed(value, spec[name]):
            values[name] = float(value) if spec[name] is float else value
        else:
            found.add(f"{where} has an invalid value {value!r:.60}")
    return values


def _has(table, name: str) -> bool:
    """Whether `table` sets `name` at all (matched like `_take`), valid or not."""
    return isinstance(table, dict) and any(key.lower() == name.lower() for key in table)


def _typed(value, kind) -> bool:
    if isinstance(value, bool):
        return kind is bool
    if kind is int:
        return isinstance(value, int)
    if kind is float:
        return isinstance(value, (int, float))
    if kind is list:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind in (dict, "tables"):
        return True  # checked by the section parser
    return isinstance(value, kind)


def _ip_port(address: str) -> tuple[str, int]:
    """A literal `IP:port` (IPv6 in brackets); hostnames are not allowed (ValueError)."""
    host, sep, port = address.rpartition(":")
    if not sep or not _PORT.fullmatch(port) or not 0 < int(port) <= 65535:
        raise ValueError(f"'{address}' is not a valid IP:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"'{address}' is not a literal IP:port") from None
    if ip.version == 6 and "[" not in address:
        raise ValueError(f"IPv6 '{address}' needs brackets")
    return str(ip), int(port)


def _identity_key(text: str, where: str, found: _Problems) -> bytes | None:
    """An Ed25519 public key, hex tried first, then base64 (32 bytes)."""
    try:
        raw = decode_key_string(text)
    except ValueError:
        raw = None
    if raw is None or len(raw) != IDENTITY_KEY_LEN:
        found.add(f"{where}: '{text:.60}' is not a 32-byte Ed25519 key")
        return None
    return raw


# --- sections --------------------------------------------------------------------------------

def _default_addresses(found: _Problems) -> list[str]:
    """The reference's default: the host's globally routable IPv4 address, port 62472."""
    address = discover_global_ipv4()
    if address is None:
        found.add("Authority.Addresses is not set and the host has no globally routable IPv4 "
                  "address to default to")
        return []
    return [f"{address}:{DEFAULT_PORT}"]


def _parse_authority(table, found: _Problems) -> tuple[str, list[str], str]:
    values = _take(table, "Authority", {"Identifier": str, "Addresses": list, "DataDir": str},
                   found)
    identifier = values.get("Identifier", "authority") or "authority"
    addresses = values.get("Addresses")
    if addresses is None and not _has(table, "Addresses"):  # absent, not merely invalid
        addresses = _default_addresses(found)
    elif addresses == []:
        found.add("Authority.Addresses is empty")
    for address in addresses or []:
        try:
            _ip_port(address)
        except ValueError as exc:
            found.add(f"Authority.Addresses: {exc}")
    data_dir = values.get("DataDir", "")
    if not data_dir:
        found.add("Authority.DataDir is not set")
    elif not os.path.isabs(data_dir):
        found.add(f"Authority.DataDir '{data_dir}' is not an absolute path")
    return identifier, addresses or [], data_dir


def _parse_logging(table, found: _Problems) -> LoggingConfig:
    values = _take(table, "Logging", {"Disable": bool, "File": str, "Level": str}, found)
    level = (values.get("Level") or "NOTICE").upper()
    if level not in LOG_LEVELS:
        found.add(f"Logging.Level '{values.get('Level')}' is invalid (one of "
                  f"{', '.join(LOG_LEVELS)})")
        level = "NOTICE"
    return LoggingConfig(values.get("Disable", False), values.get("File", ""), level)


def default_max_delay(rate: float) -> int:
    """-ln(1 - 0.99999) / lambda, truncated to whole milliseconds."""
    return int(-math.log(1 - MAX_DELAY_PERCENTILE) / rate)


def _parse_parameters(table, found: _Problems) -> Parameters:
    spec = {"SendRatePerMinute": int}
    for rate, delay in _LAMBDAS:
        spec[rate], spec[delay] = float, int
    values = _take(table, "Parameters", spec, found)
    send_rate = values.get("SendRatePerMinute", 0)
    if send_rate < 0:
        found.add(f"Parameters.SendRatePerMinute must be >= 0, got {send_rate}")
        send_rate = 0
    params = Parameters(send_rate_per_minute=send_rate or DEFAULT_SEND_RATE_PER_MINUTE)
    for rate_name, delay_name in _LAMBDAS:
        rate = values.get(rate_name, 0.0)
        if not math.isfinite(rate) or rate < 0:
            found.add(f"Parameters.{rate_name} must be >= 0, got {rate}")
            rate = 0.0
        rate = rate or DEFAULT_LAMBDA
        delay = values.get(delay_name, 0)
        if delay < 0 or delay > ABSOLUTE_MAX_DELAY_MS:
            found.add(f"Parameters.{delay_name} must be within 0..{ABSOLUTE_MAX_DELAY_MS}, "
                      f"got {delay}")
            delay = 0
        delay = delay or min(default_max_delay(rate), ABSOLUTE_MAX_DELAY_MS)
        setattr(params, _attr(rate_name), rate)
        setattr(params, _attr(delay_name), delay)
    return params


def _attr(name: str) -> str:
    """Go field name -> attribute name (LambdaPMaxDelay -> lambda_p_max_delay)."""
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def _parse_debug(table, found: _Problems) -> DebugConfig:
    values = _take(table, "Debug", {"Layers": int, "MinNodesPerLayer": int,
                                    "GenerateOnly": bool, "EpochPeriod": int}, found)
    layers = values.get("Layers", 0)
    if layers > MAX_LAYERS:
        found.add(f"Debug.Layers must be <= {MAX_LAYERS}, got {layers}")
        layers = 0
    min_nodes = values.get("MinNodesPerLayer", 0)
    period = values.get("EpochPeriod", 0)
    # The same range as a node's Debug.EpochPeriod: every node must be able to match it.
    problem = epoch_period_problem(period)
    if problem:
        found.add(problem.removeprefix("config: "))
        period = 0
    return DebugConfig(layers=layers if layers > 0 else DEFAULT_LAYERS,
                       min_nodes_per_layer=min_nodes if min_nodes > 0 else DEFAULT_MIN_NODES_PER_LAYER,
                       generate_only=values.get("GenerateOnly", False), epoch_period=period)


def _parse_nodes(entries, section: str, is_provider: bool, found: _Problems) -> list[Node]:
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        found.add(f"{section} must be an array of tables ([[{section}]])")
        return []
    nodes = []
    for index, entry in enumerate(entries):
        node = _parse_node(entry, f"{section}[{index}]", is_provider, found)
        if node is not None:
            nodes.append(node)
    return nodes


def _parse_node(entry: dict, where: str, is_provider: bool, found: _Problems) -> Node | None:
    values = _take(entry, where, {"Identifier": str, "IdentityKey": str}, found)
    key = None
    if "IdentityKey" in values:
        key = _identity_key(values["IdentityKey"], f"{where}.IdentityKey", found)
    elif not _has(entry, "IdentityKey"):
        found.add(f"{where}.IdentityKey is not set")
    identifier = values.get("Identifier", "")
    if is_provider:
        if not identifier:
            found.add(f"{where}.Identifier is not set")
        else:
            try:
                identifier = idna_lookup_to_ascii(identifier)  # lowercases; '_' is refused
            except ValueError as exc:
                found.add(f"{where}.Identifier: failed to normalize '{identifier}': {exc}")
    elif identifier:
        found.add(f"{where}.Identifier must be empty for a mix")
    return Node(identifier, key) if key is not None else None


def _parse_peers(entries, found: _Problems) -> list[Peer]:
    """`[[Authorities]]`, validated at load (the reference never checks them; an entry without
    addresses crashes it at the first send)."""
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        found.add("Authorities must be an array of tables ([[Authorities]])")
        return []
    peers = []
    for index, entry in enumerate(entries):
        peer = _parse_peer(entry, f"Authorities[{index}]", found)
        if peer is not None:
            peers.append(peer)
    identities = [p.identity_public_key for p in peers]
    if len(set(identities)) != len(identities):
        found.add("Authorities: an IdentityPublicKey is listed twice")
    links = [p.link_public_key for p in peers]
    if len(set(links)) != len(links):
        found.add("Authorities: a LinkPublicKey is listed twice")
    return peers


def _parse_peer(entry: dict, where: str, found: _Problems) -> Peer | None:
    values = _take(entry, where, {"IdentityPublicKey": str, "LinkPublicKey": str,
                                  "Addresses": list}, found)
    identity = link = None
    if "IdentityPublicKey" in values:
        identity = _identity_key(values["IdentityPublicKey"], f"{where}.IdentityPublicKey", found)
    elif not _has(entry, "IdentityPublicKey"):
        found.add(f"{where}.IdentityPublicKey is not set")
    if "LinkPublicKey" in values:
        link = _link_key(values["LinkPublicKey"], f"{where}.LinkPublicKey", found)
    elif not _has(entry, "LinkPublicKey"):
        found.add(f"{where}.LinkPublicKey is not set")
    addresses = values.get("Addresses")
    if not addresses:
        if addresses is not None or not _has(entry, "Addresses"):
            found.add(f"{where}.Addresses must list at least one IP:port")
        addresses = []
    for address in addresses:
        try:
            _ip_port(address)
        except ValueError as exc:
            found.add(f"{where}.Addresses: {exc}")
    if identity is None or link is None or not addresses:
        return None
    return Peer(identity, link, list(addresses))


def _link_key(text: str, where: str, found: _Problems) -> bytes | None:
    """An X25519 public key: base64 only, as the reference decodes it (hex is refused)."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raw = None
    if raw is None or len(raw) != IDENTITY_KEY_LEN:
        found.add(f"{where}: '{text:.60}' is not a base64 32-byte X25519 key")
        return None
    return raw


def check_not_a_peer(cfg: AuthorityConfig, identity_public: bytes) -> list[str]:
    """A voting authority listing itself in `[[Authorities]]` would count its own signature
    twice; checked once its identity key is loaded."""
    if any(p.identity_public_key == identity_public for p in cfg.authorities or ()):
        return ["config: Authorities: lists this authority's own IdentityPublicKey "
                "(list the other authorities only)"]
    return []


def _check_nodes(cfg: AuthorityConfig, found: _Problems, keys_only: bool) -> None:
    keys = [n.identity_key for n in cfg.mixes + cfg.providers]
    if len(set(keys)) != len(keys):
        found.add("Mixes/Providers: an IdentityKey is listed twice")
    names = [p.identifier for p in cfg.providers]
    if len(set(names)) != len(names):
        found.add("Providers: an Identifier is listed twice")
    if keys_only:
        return  # the whitelist may still be empty when the authority's key is generated
    if not cfg.providers:
        found.add("Providers: at least one provider is required")
    needed = cfg.debug.layers * cfg.debug.min_nodes_per_layer
    if len(cfg.mixes) < needed:
        found.add(f"Mixes: {len(cfg.mixes)} configured, Debug.Layers x Debug.MinNodesPerLayer"
                  f" = {needed} required")


def parse(text: str, keys_only: bool = False) -> AuthorityConfig:
    """Parse and validate; raises AuthorityConfigError listing every problem.

    `keys_only` (the -g run) accepts a whitelist that is empty or too short to serve: the
    authority's key may be generated before the nodes' keys are known."""
    try:
        tree = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, TypeError, ValueError) as exc:
        raise AuthorityConfigError(f"config: TOML syntax error: {exc}") from None
    found = _Problems()
    top = _take(tree, "", {"Authority": dict, "Logging": dict, "Parameters": dict,
                           "Debug": dict, "Mixes": "tables", "Providers": "tables",
                           "Authorities": "tables"}, found)
    if "Authority" not in top:
        found.add("No Authority block was present")
    identifier, addresses, data_dir = _parse_authority(top.get("Authority", {}), found)
    cfg = AuthorityConfig(
        identifier=identifier, addresses=addresses, data_dir=data_dir,
        logging=_parse_logging(top.get("Logging", {}), found),
        parameters=_parse_parameters(top.get("Parameters", {}), found),
        debug=_parse_debug(top.get("Debug", {}), found),
        mixes=_parse_nodes(top.get("Mixes", []), "Mixes", False, found),
        providers=_parse_nodes(top.get("Providers", []), "Providers", True, found),
        authorities=(_parse_peers(top["Authorities"], found) if "Authorities" in top
                     else None),
    )
    _check_nodes(cfg, found, keys_only)
    if found.all():
        raise AuthorityConfigError(found.all())
    return cfg


def load(path: str, keys_only: bool = False) -> AuthorityConfig:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise AuthorityConfigError(f"config: cannot read '{path}': {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise AuthorityConfigError(f"config: '{path}' is not UTF-8: {exc}") from None
    return parse(text, keys_only)
