"""TOML configuration of the non-voting authority (authority/nonvoting/server/config).

Strict like the server's loader: an unknown key or an invalid value is an error naming
Section.Field. Parsing and validation only; it creates no files.
"""
from __future__ import annotations

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
    """The configuration file is missing, unreadable or invalid."""


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
class AuthorityConfig:
    identifier: str
    addresses: list[str]
    data_dir: str
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    parameters: Parameters = field(default_factory=Parameters)
    debug: DebugConfig = field(default_factory=DebugConfig)
    mixes: list[Node] = field(default_factory=list)
    providers: list[Node] = field(default_factory=list)

    @property
    def epoch_period(self) -> int:
        return self.debug.epoch_period or DEFAULT_PERIOD

    def listen_addresses(self) -> list[tuple[str, int]]:
        return [split_ip_port(a, "Authority.Addresses") for a in self.addresses]


# --- generic strict decoding -----------------------------------------------------------------

def _take(table: dict, section: str, spec: dict) -> dict:
    """Match keys exactly, then case-insensitively; any leftover key is an error."""
    if not isinstance(table, dict):
        raise AuthorityConfigError(f"config: {section} must be a table")
    lowered = {name.lower(): name for name in spec}
    values, unknown = {}, []
    for key, value in table.items():
        name = key if key in spec else lowered.get(key.lower())
        if name is None:
            unknown.append(f"{section}.{key}" if section else key)
            continue
        if name in values:
            raise AuthorityConfigError(f"config: {section}.{name} is set twice")
        values[name] = _typed(value, spec[name], f"{section}.{name}" if section else name)
    if unknown:
        raise AuthorityConfigError(f"config: Undecoded keys in config file: {sorted(unknown)}")
    return values


def _typed(value, kind, where: str):
    if kind is bool and isinstance(value, bool):
        return value
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is str and isinstance(value, str):
        return value
    if kind is list and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    if kind in (dict, "tables"):
        return value  # checked by the section parser
    raise AuthorityConfigError(f"config: {where} has an invalid value {value!r:.60}")


def split_ip_port(address: str, where: str) -> tuple[str, int]:
    """A literal `IP:port` (IPv6 in brackets); hostnames are not allowed."""
    host, sep, port = address.rpartition(":")
    if not sep or not _PORT.fullmatch(port) or not 0 < int(port) <= 65535:
        raise AuthorityConfigError(f"config: {where}: '{address}' is not a valid IP:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise AuthorityConfigError(f"config: {where}: '{address}' is not a literal IP:port") from None
    if ip.version == 6 and "[" not in address:
        raise AuthorityConfigError(f"config: {where}: IPv6 '{address}' needs brackets")
    return str(ip), int(port)


def parse_identity_key(text: str, where: str) -> bytes:
    """An Ed25519 public key, hex tried first, then base64 (32 bytes)."""
    if not isinstance(text, str):
        raise AuthorityConfigError(f"config: {where} must be a string")
    try:
        raw = decode_key_string(text)
    except ValueError:
        raw = None
    if raw is None or len(raw) != IDENTITY_KEY_LEN:
        raise AuthorityConfigError(f"config: {where}: '{text:.60}' is not a 32-byte Ed25519 key")
    return raw


def normalize_identifier(text: str, where: str) -> str:
    """IDNA Lookup normalization (lowercases; STD3 rules, so '_' is rejected)."""
    try:
        return idna_lookup_to_ascii(text)
    except ValueError as exc:
        raise AuthorityConfigError(f"config: {where}: failed to normalize '{text}': {exc}") from None


# --- sections --------------------------------------------------------------------------------

def _default_addresses() -> list[str]:
    """The reference's default: the host's globally routable IPv4 address, port 62472."""
    address = discover_global_ipv4()
    if address is None:
        raise AuthorityConfigError("config: Authority.Addresses is not set and the host has no "
                                   "globally routable IPv4 address to default to")
    return [f"{address}:{DEFAULT_PORT}"]


def _parse_authority(table: dict) -> tuple[str, list[str], str]:
    values = _take(table, "Authority", {"Identifier": str, "Addresses": list, "DataDir": str})
    identifier = values.get("Identifier", "authority") or "authority"
    addresses = values.get("Addresses")
    if addresses is None:
        addresses = _default_addresses()
    if not addresses:
        raise AuthorityConfigError("config: Authority.Addresses is empty")
    for address in addresses:
        split_ip_port(address, "Authority.Addresses")
    data_dir = values.get("DataDir", "")
    if not data_dir:
        raise AuthorityConfigError("config: Authority.DataDir is not set")
    if not os.path.isabs(data_dir):
        raise AuthorityConfigError(f"config: Authority.DataDir '{data_dir}' is not an absolute path")
    return identifier, addresses, data_dir


def _parse_logging(table: dict) -> LoggingConfig:
    values = _take(table, "Logging", {"Disable": bool, "File": str, "Level": str})
    level = (values.get("Level") or "NOTICE").upper()
    if level not in LOG_LEVELS:
        raise AuthorityConfigError(f"config: Logging.Level '{values.get('Level')}' is invalid")
    return LoggingConfig(values.get("Disable", False), values.get("File", ""), level)


def default_max_delay(rate: float) -> int:
    """-ln(1 - 0.99999) / lambda, truncated to whole milliseconds."""
    return int(-math.log(1 - MAX_DELAY_PERCENTILE) / rate)


def _parse_parameters(table: dict) -> Parameters:
    spec = {"SendRatePerMinute": int}
    for rate, delay in _LAMBDAS:
        spec[rate], spec[delay] = float, int
    values = _take(table, "Parameters", spec)
    send_rate = values.get("SendRatePerMinute", 0)
    if send_rate < 0:
        raise AuthorityConfigError(f"config: Parameters.SendRatePerMinute must be >= 0, got {send_rate}")
    params = Parameters(send_rate_per_minute=send_rate or DEFAULT_SEND_RATE_PER_MINUTE)
    for rate_name, delay_name in _LAMBDAS:
        rate = values.get(rate_name, 0.0)
        if not math.isfinite(rate) or rate < 0:
            raise AuthorityConfigError(f"config: Parameters.{rate_name} must be >= 0, got {rate}")
        rate = rate or DEFAULT_LAMBDA
        delay = values.get(delay_name, 0)
        if delay < 0 or delay > ABSOLUTE_MAX_DELAY_MS:
            raise AuthorityConfigError(
                f"config: Parameters.{delay_name} must be within 0..{ABSOLUTE_MAX_DELAY_MS}, got {delay}")
        delay = delay or min(default_max_delay(rate), ABSOLUTE_MAX_DELAY_MS)
        setattr(params, _attr(rate_name), rate)
        setattr(params, _attr(delay_name), delay)
    return params


def _attr(name: str) -> str:
    """Go field name -> attribute name (LambdaPMaxDelay -> lambda_p_max_delay)."""
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def _parse_debug(table: dict) -> DebugConfig:
    values = _take(table, "Debug", {"Layers": int, "MinNodesPerLayer": int,
                                    "GenerateOnly": bool, "EpochPeriod": int})
    layers = values.get("Layers", 0)
    if layers > MAX_LAYERS:
        raise AuthorityConfigError(f"config: Debug.Layers must be <= {MAX_LAYERS}, got {layers}")
    min_nodes = values.get("MinNodesPerLayer", 0)
    period = values.get("EpochPeriod", 0)
    # The same range as a node's Debug.EpochPeriod: every node must be able to match it.
    problem = epoch_period_problem(period)
    if problem:
        raise AuthorityConfigError(problem)
    return DebugConfig(layers=layers if layers > 0 else DEFAULT_LAYERS,
                       min_nodes_per_layer=min_nodes if min_nodes > 0 else DEFAULT_MIN_NODES_PER_LAYER,
                       generate_only=values.get("GenerateOnly", False), epoch_period=period)


def _parse_nodes(entries, section: str, is_provider: bool) -> list[Node]:
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise AuthorityConfigError(f"config: {section} must be an array of tables ([[{section}]])")
    nodes = []
    for index, entry in enumerate(entries):
        where = f"{section}[{index}]"
        values = _take(entry, where, {"Identifier": str, "IdentityKey": str})
        if "IdentityKey" not in values:
            raise AuthorityConfigError(f"config: {where}.IdentityKey is not set")
        key = parse_identity_key(values["IdentityKey"], f"{where}.IdentityKey")
        identifier = values.get("Identifier", "")
        if is_provider:
            if not identifier:
                raise AuthorityConfigError(f"config: {where}.Identifier is not set")
            identifier = normalize_identifier(identifier, f"{where}.Identifier")
        elif identifier:
            raise AuthorityConfigError(f"config: {where}.Identifier must be empty for a mix")
        nodes.append(Node(identifier, key))
    return nodes


def _check_nodes(cfg: AuthorityConfig) -> None:
    keys = [n.identity_key for n in cfg.mixes + cfg.providers]
    if len(set(keys)) != len(keys):
        raise AuthorityConfigError("config: Mixes/Providers: an IdentityKey is listed twice")
    names = [p.identifier for p in cfg.providers]
    if len(set(names)) != len(names):
        raise AuthorityConfigError("config: Providers: an Identifier is listed twice")
    if not cfg.providers:
        raise AuthorityConfigError("config: Providers: at least one provider is required")
    needed = cfg.debug.layers * cfg.debug.min_nodes_per_layer
    if len(cfg.mixes) < needed:
        raise AuthorityConfigError(
            f"config: Mixes: {len(cfg.mixes)} configured, Debug.Layers x Debug.MinNodesPerLayer"
            f" = {needed} required")


def parse(text: str) -> AuthorityConfig:
    try:
        tree = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, TypeError, ValueError) as exc:
        raise AuthorityConfigError(f"config: invalid TOML: {exc}") from None
    top = _take(tree, "", {"Authority": dict, "Logging": dict, "Parameters": dict,
                           "Debug": dict, "Mixes": "tables", "Providers": "tables"})
    if "Authority" not in top:
        raise AuthorityConfigError("config: No Authority block was present")
    identifier, addresses, data_dir = _parse_authority(top["Authority"])
    cfg = AuthorityConfig(
        identifier=identifier, addresses=addresses, data_dir=data_dir,
        logging=_parse_logging(top.get("Logging", {})),
        parameters=_parse_parameters(top.get("Parameters", {})),
        debug=_parse_debug(top.get("Debug", {})),
        mixes=_parse_nodes(top.get("Mixes", []), "Mixes", is_provider=False),
        providers=_parse_nodes(top.get("Providers", []), "Providers", is_provider=True),
    )
    _check_nodes(cfg)
    return cfg


def load(path: str) -> AuthorityConfig:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise AuthorityConfigError(f"config: cannot read '{path}': {exc}") from None
    return parse(text)
