"""Node configuration: the reference server's TOML file (README.md, Configuration) parsed into
immutable dataclasses.

Every problem in a file is collected and reported at once (naming `Section.Field` and the rule
it broke); this module never touches the DataDir, the network or the logging setup.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import ipaddress
import os
import re
import tomllib
import types
import unicodedata
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Mapping

from katzenpost import keys, log
from katzenpost.rules import DEFAULT_PERIOD, discover_global_ipv4, epoch_period_problem, idna_lookup_to_ascii

# ---------------------------------------------------------------------------------------------
# Constants (names and defaults of the reference server's configuration)

DEFAULT_ADDRESS_PORT = 3219
LOG_LEVELS = tuple(log.LEVELS)  # ERROR, WARNING, NOTICE, INFO, DEBUG
DEFAULT_LOG_LEVEL = log.DEFAULT_LEVEL
MANAGEMENT_SOCKET_NAME = "management_sock"
DEFAULT_METRICS_ADDRESS = "127.0.0.1:6543"  # [Metrics] (ours): loopback unless an Address is given
MAX_IDENTIFIER_BYTES = 32  # the authority refuses longer descriptor names
MAX_ENDPOINT_BYTES = 64
MAX_CONFIG_BYTES = 4 * 1024 * 1024  # a config is a few kB; refuse /dev/zero and the like

# Storage backends. The embedded store is SQLite; its configuration name stays "bolt" so the
# Go reference's configs keep working ("sqlite" is accepted as an alias and stored as "bolt").
BACKEND_EMBEDDED = "bolt"
BACKEND_EXTERN = "extern"
BACKEND_SQL = "sql"
EMBEDDED_BACKEND_ALIASES = ("bolt", "sqlite")
SQLDB_BACKEND_PGX = "pgx"
DEFAULT_USER_DB_FILE = "users.db"
DEFAULT_SPOOL_DB_FILE = "spool.db"

# Upper bounds the reference does not have: they keep a typo (an extra few zeros) from asking
# for a million threads, a terabyte queue or a timeout past what the OS timers accept.
MAX_WORKERS = 1024  # threads or plugin processes of one kind
MAX_DURATION_MS = 24 * 60 * 60 * 1000
MAX_SCHEDULER_QUEUE_SIZE = 1 << 24  # packets (about 42 GB of 2524-byte packets)
MAX_SCHEDULER_BURST = 1 << 16
MAX_PIPELINE_BOUND = 1 << 20  # batches, packets per batch or packets per queue
MAX_CONNECTIONS = 1 << 20  # open file descriptors a node could ever hold


@dataclass(frozen=True)
class DebugKnob:
    """One integer `[Debug]` field: its default, the floor it is raised to, and its ceiling."""

    default: int
    minimum: int = 0
    maximum: int = MAX_DURATION_MS


# As in the reference, a value <= 0 (or absent) selects the default; values below the minimum
# are raised to it (with a warning); values above the maximum are an error.
DEBUG_INT_KNOBS: dict[str, DebugKnob] = {
    "NumSphinxWorkers": DebugKnob(0, maximum=MAX_WORKERS),  # default 0 = CPU count, at load
    "NumProviderWorkers": DebugKnob(1, maximum=MAX_WORKERS),
    "NumKaetzchenWorkers": DebugKnob(3, maximum=MAX_WORKERS),
    "SchedulerQueueSize": DebugKnob(0, maximum=MAX_SCHEDULER_QUEUE_SIZE),  # 0 = unlimited
    "SchedulerMaxBurst": DebugKnob(16, maximum=MAX_SCHEDULER_BURST),
    "UnwrapDelay": DebugKnob(10),
    "ProviderDelay": DebugKnob(500),
    "KaetzchenDelay": DebugKnob(750),
    "SchedulerSlack": DebugKnob(10, minimum=10),
    "SendSlack": DebugKnob(50, minimum=50),
    "DecoySlack": DebugKnob(15000),
    "ConnectTimeout": DebugKnob(60000),
    "HandshakeTimeout": DebugKnob(30000),
    "ReauthInterval": DebugKnob(30000),
    # The packet pipeline's bounds (katzenpost.server.pipeline.PipelineSettings; not in the
    # reference, whose channels are unbounded): batch size and window towards the crypto
    # workers, zmq high-water marks (in batches), packets in flight per worker, per-hop queue.
    "SphinxBatchSize": DebugKnob(16, maximum=MAX_PIPELINE_BOUND),
    "SphinxBatchWindowUs": DebugKnob(0, maximum=1_000_000),  # 0 = flush at each loop pass
    "SphinxQueueHWM": DebugKnob(32, maximum=MAX_PIPELINE_BOUND),
    # 0 = sized by the node from its start-up self-test (pipeline.in_flight_for)
    "SphinxQueuePackets": DebugKnob(0, maximum=MAX_PIPELINE_BOUND),
    "SchedulerInputHWM": DebugKnob(64, maximum=MAX_PIPELINE_BOUND),
    "DispatchHWM": DebugKnob(64, maximum=MAX_PIPELINE_BOUND),
    "LocalHWM": DebugKnob(64, maximum=MAX_PIPELINE_BOUND),
    "OutgoingQueueSize": DebugKnob(64, maximum=MAX_PIPELINE_BOUND),
    "DispatchBatchSize": DebugKnob(256, maximum=MAX_PIPELINE_BOUND),
    # Listener bounds (not in the reference): concurrent incoming connections, and those of them
    # still in the handshake; beyond either a new connection is closed at once (docs/node.md).
    "MaxIncomingConnections": DebugKnob(4096, maximum=MAX_CONNECTIONS),
    "MaxPendingHandshakes": DebugKnob(128, maximum=MAX_CONNECTIONS),
}
DEBUG_BOOLS = ("SchedulerExternalMemoryQueue", "SendDecoyTraffic", "DisableRateLimit", "GenerateOnly",
               "SchedulerThread", "MixKeysInMemory", "EnableProfiling")

INT64_MAX = 2**63 - 1


class ConfigError(Exception):
    """A configuration that cannot be used; `problems` lists every reason, one line each, and
    `warnings` the non-fatal remarks found on the way (so `--check` can show both)."""

    def __init__(self, problems: list[str], warnings: tuple[str, ...] = ()):
        self.problems = list(problems)
        self.warnings = tuple(warnings)
        super().__init__("\n".join(self.problems))


# ---------------------------------------------------------------------------------------------
# The configuration (immutable)


@dataclass(frozen=True)
class ServerConfig:
    identifier: str
    addresses: tuple[str, ...]
    alt_addresses: Mapping[str, tuple[str, ...]]
    only_advertise_alt_addresses: bool
    data_dir: str
    is_provider: bool


@dataclass(frozen=True)
class LoggingConfig:
    disable: bool = False
    file: str = ""  # "" = stdout; relative paths are under DataDir
    level: str = DEFAULT_LOG_LEVEL


@dataclass(frozen=True)
class NonvotingPKIConfig:
    address: str
    public_key: bytes  # authority Ed25519 identity public key, 32 bytes


@dataclass(frozen=True)
class VotingPeerConfig:
    """One voting authority a node trusts ([[PKI.Voting.Peers]])."""

    addresses: tuple[str, ...]  # literal IP:port, tried in a random order
    identity_public_key: bytes  # Ed25519, 32 bytes: signs the consensus
    link_public_key: bytes  # X25519, 32 bytes: the authority's Noise static key


@dataclass(frozen=True)
class VotingPKIConfig:
    peers: tuple[VotingPeerConfig, ...]


@dataclass(frozen=True)
class PKIConfig:
    """Exactly one of the two is set (either may be None only in a keys-only load)."""

    nonvoting: NonvotingPKIConfig | None = None
    voting: VotingPKIConfig | None = None


@dataclass(frozen=True)
class ManagementConfig:
    enable: bool
    path: str


@dataclass(frozen=True)
class MetricsConfig:
    address: str  # literal IP:port of the Prometheus endpoint


@dataclass(frozen=True)
class SQLDBConfig:
    backend: str
    data_source_name: str = field(repr=False)  # may hold a password


@dataclass(frozen=True)
class UserDBConfig:
    backend: str = BACKEND_EMBEDDED
    bolt_user_db: str = ""  # path of the embedded (SQLite) user database
    extern_provider_url: str = ""


@dataclass(frozen=True)
class SpoolDBConfig:
    backend: str = BACKEND_EMBEDDED
    bolt_spool_db: str = ""  # path of the embedded (SQLite) spool database


@dataclass(frozen=True)
class KaetzchenConfig:
    capability: str
    endpoint: str
    config: Mapping[str, Any]
    disable: bool


@dataclass(frozen=True)
class CBORPluginKaetzchenConfig:
    capability: str
    endpoint: str
    config: Mapping[str, str]  # each entry becomes argv "-<key> <value>"
    disable: bool
    command: str
    max_concurrency: int


@dataclass(frozen=True)
class ProviderConfig:
    enable_user_registration_http: bool
    user_registration_http_addresses: tuple[str, ...]
    advertise_user_registration_http_addresses: tuple[str, ...]
    sql_db: SQLDBConfig | None
    user_db: UserDBConfig
    spool_db: SpoolDBConfig
    binary_recipients: bool
    case_sensitive_recipients: bool
    recipient_delimiter: str
    kaetzchen: tuple[KaetzchenConfig, ...]
    cbor_plugin_kaetzchen: tuple[CBORPluginKaetzchenConfig, ...]
    enable_ephemeral_clients: bool
    trust_on_first_use: bool


@dataclass(frozen=True)
class DebugConfig:
    # 32-byte Ed25519 seed; programmatic only, never TOML; kept out of repr (a secret).
    identity_key: bytes | None = field(default=None, repr=False)
    num_sphinx_workers: int = 1
    num_provider_workers: int = 1
    num_kaetzchen_workers: int = 3
    scheduler_external_memory_queue: bool = False
    scheduler_queue_size: int = 0
    scheduler_max_burst: int = 16
    unwrap_delay: int = 10
    provider_delay: int = 500
    kaetzchen_delay: int = 750
    scheduler_slack: int = 10
    send_slack: int = 50
    decoy_slack: int = 15000
    connect_timeout: int = 60000
    handshake_timeout: int = 30000
    reauth_interval: int = 30000
    send_decoy_traffic: bool = False
    disable_rate_limit: bool = False
    generate_only: bool = False
    sphinx_batch_size: int = 16
    sphinx_batch_window_us: int = 0
    sphinx_queue_hwm: int = 32
    sphinx_queue_packets: int = 0       # 0: sized from the start-up self-test
    scheduler_input_hwm: int = 64
    dispatch_hwm: int = 64
    local_hwm: int = 64
    outgoing_queue_size: int = 64
    dispatch_batch_size: int = 256
    # The timer wheel on its own thread instead of the I/O thread (measured slower on 2 cores).
    scheduler_thread: bool = False
    # Our addition: mix keys and replay filters only in anonymous memory, never on disk (a restart
    # then loses them: the node cannot unwrap packets built for its old keys).
    mix_keys_in_memory: bool = False
    # Our addition: the management command PROFILE (a bounded sampling profile into the DataDir).
    enable_profiling: bool = False
    max_incoming_connections: int = 4096
    max_pending_handshakes: int = 128
    # Test networks only: the epoch period in seconds; 0 = the reference's 20 minutes. Not in
    # the reference's node config: it lets a node follow an authority run with the same period.
    epoch_period: int = 0

    @property
    def is_unsafe(self) -> bool:
        """True when an option meant only for tests is set (the banner warns about it)."""
        return self.identity_key is not None or self.epoch_period != 0


@dataclass(frozen=True)
class Config:
    server: ServerConfig
    logging: LoggingConfig
    pki: PKIConfig | None  # None only in a keys-only (-g) load without [PKI]
    management: ManagementConfig
    provider: ProviderConfig | None  # None for a mix
    debug: DebugConfig
    warnings: tuple[str, ...] = field(default=())  # non-fatal remarks, logged at start
    metrics: MetricsConfig | None = None  # [Metrics] (our addition); None: no metrics endpoint

    @property
    def log_file_path(self) -> str | None:
        """Absolute path of the log file, or None for stdout (or when logging is disabled)."""
        if self.logging.disable or not self.logging.file:
            return None
        return os.path.join(self.server.data_dir, self.logging.file)

    @property
    def epoch_period(self) -> int:
        """The epoch period in seconds: Debug.EpochPeriod, or the reference's 20 minutes."""
        return self.debug.epoch_period or DEFAULT_PERIOD

    def with_generate_only(self) -> "Config":
        """The same configuration with Debug.GenerateOnly forced on (what `-g` does)."""
        return dataclasses.replace(self, debug=dataclasses.replace(self.debug, generate_only=True))

    def with_debug_identity_key(self, key: bytes) -> "Config":
        """Set Debug.IdentityKey (tests only): a 32-byte seed or the 64-byte Go form."""
        seed = keys.IdentityKey.from_bytes(bytes(key)).seed
        return dataclasses.replace(self, debug=dataclasses.replace(self.debug, identity_key=seed))


# ---------------------------------------------------------------------------------------------
# Reading TOML tables: exact key match first, then case-insensitive; unknown keys collected.

_TOML_TYPE_NAMES = {str: "string", bool: "boolean", int: "integer", float: "float",
                    dict: "table", list: "array"}


def _type_name(value: Any) -> str:
    return _TOML_TYPE_NAMES.get(type(value), type(value).__name__)


class _Table:
    """One TOML table being decoded: typed getters that record problems instead of raising."""

    def __init__(self, raw: dict, path: str, problems: list[str], undecoded: list[str]):
        self.raw = raw
        self.path = path  # "" for the document root
        self.problems = problems
        self.undecoded = undecoded
        self.used: set[str] = set()
        self.invalid: set[str] = set()

    def name_of(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def _find(self, key: str) -> tuple[bool, Any]:
        """The value for field `key`: the exact key wins, else the case-insensitive match."""
        matches = [k for k in self.raw if k.lower() == key.lower()]
        if not matches:
            return False, None
        self.used.update(matches)
        if len(matches) > 1:
            self.problems.append(
                f"config: {self.name_of(key)} is set more than once (keys {', '.join(matches)})")
            self.invalid.add(key)
        return True, self.raw[key if key in self.raw else matches[0]]

    def is_invalid(self, key: str) -> bool:
        """True if `key` was present but refused already (so no second message about it)."""
        return key in self.invalid

    def _typed(self, key: str, default: Any, kind: type, kind_name: str) -> Any:
        present, value = self._find(key)
        if not present:
            return default
        if type(value) is not kind:  # bool is an int subclass: compare types exactly
            self.problems.append(
                f"config: {self.name_of(key)} must be {kind_name}, got {_type_name(value)}")
            self.invalid.add(key)
            return default
        return value

    def str(self, key: str, default: str = "") -> str:
        return self._typed(key, default, str, "a string")

    def bool(self, key: str, default: bool = False) -> bool:
        return self._typed(key, default, bool, "a boolean")

    def int(self, key: str, default: int = 0) -> int:
        value = self._typed(key, default, int, "an integer")
        if abs(value) > INT64_MAX:
            self.problems.append(f"config: {self.name_of(key)} is out of range, got {value}")
            self.invalid.add(key)
            return default
        return value

    def str_list(self, key: str) -> tuple[str, ...] | None:
        present, value = self._find(key)
        if not present:
            return None
        if type(value) is not list or any(type(v) is not str for v in value):
            self.problems.append(f"config: {self.name_of(key)} must be an array of strings")
            self.invalid.add(key)
            return ()
        return tuple(value)

    def mapping(self, key: str) -> dict | None:
        present, value = self._find(key)
        if not present:
            return None
        if type(value) is not dict:
            self.problems.append(f"config: {self.name_of(key)} must be a table, got {_type_name(value)}")
            return {}
        return value

    def table(self, key: str) -> "_Table | None":
        raw = self.mapping(key)
        if raw is None:
            return None
        return _Table(raw, self.name_of(key), self.problems, self.undecoded)

    def table_list(self, key: str) -> list["_Table"]:
        present, value = self._find(key)
        if not present:
            return []
        if type(value) is not list or any(type(v) is not dict for v in value):
            self.problems.append(
                f"config: {self.name_of(key)} must be an array of tables ([[{self.name_of(key)}]])")
            return []
        return [_Table(v, f"{self.name_of(key)}[{i}]", self.problems, self.undecoded)
                for i, v in enumerate(value)]

    def finish(self) -> None:
        """Record every key of this table that matched no field."""
        for key in self.raw:
            if key not in self.used:
                self.undecoded.append(self.name_of(key))


def _freeze(value: Any) -> Any:
    """Deep read-only copy of free-form TOML data (tables become mapping proxies)."""
    if isinstance(value, dict):
        return types.MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


# ---------------------------------------------------------------------------------------------
# Value rules


def split_host_port(address: str) -> tuple[str, int]:
    """Split "host:port" or "[v6]:port"; raises ValueError naming the rule broken."""
    if address.startswith("["):
        close = address.find("]")
        if close < 0 or address[close + 1:close + 2] != ":":
            raise ValueError(f"'{address}' is not host:port")
        host, port_text = address[1:close], address[close + 2:]
    else:
        host, sep, port_text = address.rpartition(":")
        if not sep or ":" in host:
            raise ValueError(f"'{address}' is not host:port (IPv6 hosts need brackets)")
    if not host:
        raise ValueError(f"'{address}' has an empty host")
    if not port_text.isdigit() or not port_text.isascii() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"'{address}' has an invalid port (must be 1-65535)")
    return host, int(port_text)


def check_ip_port(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """A literal IP:port (no host names), as listeners and the PKI address require."""
    host, _ = split_host_port(address)
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"'{address}' host is not a literal IP address") from None


def username_case_mapped(name: str) -> str:
    """PRECIS UsernameCaseMapped (RFC 8265): width-map, lowercase, NFC, IdentifierClass check."""
    mapped = []
    for char in name:
        decomposition = unicodedata.decomposition(char)
        if decomposition.startswith(("<wide>", "<narrow>")):
            char = chr(int(decomposition.split()[1], 16))
        mapped.append(char)
    result = unicodedata.normalize("NFC", "".join(mapped).lower())
    if not result:
        raise ValueError("empty name")
    for char in result:
        if 0x21 <= ord(char) <= 0x7E:
            continue
        if ord(char) < 0x80 or unicodedata.category(char) not in ("Ll", "Lu", "Lo", "Lm", "Nd", "Mn", "Mc"):
            raise ValueError(f"disallowed character U+{ord(char):04X}")
    return result


_ATEXT = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\u0080-\U0010ffff]+")
_QUOTED_STRING = re.compile(r'"(?:[^"\\\x00-\x1f\x7f]|\\[\x20-\x7e])*"')


def _is_rfc5322_local_part(local: str) -> bool:
    if _QUOTED_STRING.fullmatch(local):
        return True
    return all(_ATEXT.fullmatch(atom) for atom in local.split("."))


# ---------------------------------------------------------------------------------------------
# Sections


def _server_section(table: _Table, problems: list[str]) -> ServerConfig:
    identifier = table.str("Identifier")
    addresses = table.str_list("Addresses")
    alt_raw = table.mapping("AltAddresses") or {}
    only_alt = table.bool("OnlyAdvertiseAltAddresses")
    data_dir = table.str("DataDir")
    is_provider = table.bool("IsProvider")
    table.finish()
    if not table.is_invalid("Identifier"):
        identifier = _identifier(identifier, problems)
    addresses, families = _addresses(addresses, table.is_invalid("Addresses"), problems)
    alt_addresses = _alt_addresses(alt_raw, families, only_alt, problems)
    return ServerConfig(identifier, addresses, alt_addresses, only_alt,
                        _data_dir(table, data_dir, problems), is_provider)


def _identifier(identifier: str, problems: list[str]) -> str:
    """Server.Identifier, IDNA-lookup normalized and at most MAX_IDENTIFIER_BYTES long."""
    if not identifier:
        problems.append("config: Server.Identifier is not set")
        return identifier
    try:
        normalized = idna_lookup_to_ascii(identifier)
    except ValueError as err:
        problems.append(f"config: Server.Identifier: failed to normalize '{identifier}' "
                        f"(IDNA lookup): {err}")
        return identifier
    if len(normalized.encode()) > MAX_IDENTIFIER_BYTES:
        problems.append(f"config: Server.Identifier '{normalized}' is longer than "
                        f"{MAX_IDENTIFIER_BYTES} bytes (the authority rejects such names)")
    return normalized


def _addresses(addresses: tuple[str, ...] | None, refused: bool,
               problems: list[str]) -> tuple[tuple[str, ...], set[str]]:
    """Server.Addresses (each a literal IP:port, or the discovered default) and the transports
    (tcp4/tcp6) they are published as."""
    if addresses is None:
        discovered = discover_global_ipv4()
        if discovered is None:
            problems.append("config: Server.Addresses is not set and the host has no globally "
                            "routable IPv4 address to default to")
            return (), set()
        addresses = (f"{discovered}:{DEFAULT_ADDRESS_PORT}",)
    elif not addresses and not refused:
        problems.append("config: Server.Addresses must list at least one IP:port")
    families = set()
    for index, address in enumerate(addresses):
        try:
            families.add("tcp4" if check_ip_port(address).version == 4 else "tcp6")
        except ValueError as err:
            problems.append(f"config: Server.Addresses[{index}] must be a literal IP:port: {err}")
    return tuple(addresses), families


def _data_dir(table: _Table, data_dir: str, problems: list[str]) -> str:
    """The normalized DataDir, or "" if it is unusable (so no path is derived from it)."""
    if table.is_invalid("DataDir"):
        return ""
    if not data_dir:
        problems.append("config: Server.DataDir is not set")
        return ""
    if not os.path.isabs(data_dir):
        problems.append(f"config: Server.DataDir must be an absolute path, got '{data_dir}'")
        return ""
    return os.path.normpath(data_dir)


def _path_in_data_dir(explicit: str, data_dir: str, file_name: str, where: str,
                      problems: list[str]) -> str:
    """An absolute path given as `where`, else DataDir/file_name ("" when DataDir is unusable)."""
    if not explicit:
        return os.path.join(data_dir, file_name) if data_dir else ""
    if not os.path.isabs(explicit):
        problems.append(f"config: {where} must be an absolute path, got '{explicit}'")
    return explicit


def _alt_addresses(raw: dict, derived: set[str], only_alt: bool,
                   problems: list[str]) -> Mapping[str, tuple[str, ...]]:
    result: dict[str, tuple[str, ...]] = {}
    for key, value in raw.items():
        transport = key.lower()
        where = f"Server.AltAddresses.{key}"
        if type(value) is not list or any(type(v) is not str for v in value):
            problems.append(f"config: {where} must be an array of strings")
            continue
        if transport in result:
            problems.append(f"config: {where} duplicates transport '{transport}' (keys are lowercased)")
            continue
        if transport in derived and not only_alt:
            problems.append(f"config: {where} would override the '{transport}' addresses derived "
                            "from Server.Addresses")
        if transport in ("tcp", "tcp4", "tcp6"):
            for index, address in enumerate(value):
                try:
                    split_host_port(address)
                except ValueError as err:
                    problems.append(f"config: {where}[{index}] must be host:port: {err}")
        result[transport] = tuple(value)
    return types.MappingProxyType(result)


def _logging_section(table: _Table | None, problems: list[str]) -> LoggingConfig:
    if table is None:
        return LoggingConfig()
    disable = table.bool("Disable")
    file_name = table.str("File")
    level = table.str("Level") or DEFAULT_LOG_LEVEL
    table.finish()
    if level.upper() not in LOG_LEVELS:
        problems.append(f"config: Logging.Level '{level}' is invalid (must be one of "
                        f"{', '.join(LOG_LEVELS)}, any case)")
        level = DEFAULT_LOG_LEVEL
    return LoggingConfig(disable, file_name, level.upper())


def _pki_section(table: _Table | None, problems: list[str],
                 keys_only: bool = False) -> PKIConfig | None:
    """[PKI]; with `keys_only` (-g) the block and the authority's key may still be missing: a
    node's keys are generated before the authority's, whose whitelist needs them."""
    if table is None:
        if not keys_only:
            problems.append("config: No PKI block was present")
        return None
    nonvoting = table.table("Nonvoting")
    voting = table.table("Voting")
    table.finish()
    result = None
    if nonvoting is not None:
        address = nonvoting.str("Address")
        public_key_text = nonvoting.str("PublicKey")
        nonvoting.finish()
        try:
            check_ip_port(address)
        except ValueError as err:
            problems.append(f"config: PKI.Nonvoting.Address must be a literal IP:port: {err}")
        public_key = (b"" if keys_only and not public_key_text
                      else _public_key(public_key_text, "PKI.Nonvoting.PublicKey", problems))
        result = PKIConfig(NonvotingPKIConfig(address, public_key))
    if voting is not None:
        voting_config = _voting_section(voting, problems, keys_only)
        if nonvoting is not None:
            problems.append("config: pki config failure: cannot configure voting and nonvoting pki")
        else:
            result = PKIConfig(voting=voting_config)
    if nonvoting is None and voting is None:
        problems.append("config: PKI block must contain [PKI.Nonvoting] or [PKI.Voting]")
    return result


def _voting_section(table: _Table, problems: list[str], keys_only: bool) -> VotingPKIConfig:
    """[PKI.Voting] with its [[PKI.Voting.Peers]]. Stricter than the reference, which accepts
    zero peers, an empty Addresses list or a hex LinkPublicKey and then fails at the first
    request: each of these is reported here instead."""
    known_problems = len(problems)
    peers = table.table_list("Peers")
    table.finish()
    if not peers and len(problems) == known_problems:
        problems.append("config: PKI.Voting has no [[PKI.Voting.Peers]] (the authorities to trust)")
    result, seen = [], set()
    for peer in peers:
        addresses = peer.str_list("Addresses")
        if not addresses and not peer.is_invalid("Addresses"):
            problems.append(f"config: {peer.path}.Addresses must list at least one literal IP:port")
        for index, address in enumerate(addresses or ()):
            try:
                check_ip_port(address)
            except ValueError as err:
                problems.append(f"config: {peer.path}.Addresses[{index}] must be a literal IP:port: {err}")
        identity_text = peer.str("IdentityPublicKey")
        link_text = peer.str("LinkPublicKey")
        peer.finish()
        identity = (b"" if keys_only and not identity_text
                    else _public_key(identity_text, f"{peer.path}.IdentityPublicKey", problems))
        link = (b"" if keys_only and not link_text
                else _link_public_key(link_text, f"{peer.path}.LinkPublicKey", problems))
        if identity and identity in seen:
            problems.append(f"config: {peer.path}.IdentityPublicKey is listed more than once "
                            "(its signature would count twice)")
        seen.add(identity)
        result.append(VotingPeerConfig(tuple(addresses or ()), identity, link))
    return VotingPKIConfig(tuple(result))


def _link_public_key(text: str, where: str, problems: list[str]) -> bytes:
    """An X25519 public key: padded base64 only, as the reference reads it when it connects."""
    if not text:
        problems.append(f"config: {where} is not set")
        return b""
    if len(text) == 2 * keys.PUBLIC_KEY_SIZE and all(c in "0123456789abcdefABCDEF" for c in text):
        problems.append(f"config: {where} looks like hex; link keys are written in base64 "
                        "(as the authority prints them)")
        return b""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        problems.append(f"config: {where} is not base64")
        return b""
    if len(raw) != keys.PUBLIC_KEY_SIZE:
        problems.append(f"config: {where} must decode to {keys.PUBLIC_KEY_SIZE} bytes, got {len(raw)}")
        return b""
    return raw


def _public_key(text: str, where: str, problems: list[str]) -> bytes:
    if not text:
        problems.append(f"config: {where} is not set")
        return b""
    try:
        raw = keys.decode_key_string(text)
    except ValueError as err:
        problems.append(f"config: {where} is invalid: {err}")
        return b""
    if len(raw) != keys.PUBLIC_KEY_SIZE:
        problems.append(f"config: {where} must decode to {keys.PUBLIC_KEY_SIZE} bytes (hex or "
                        f"base64), got {len(raw)}")
        return b""
    return raw


def _management_section(table: _Table | None, data_dir: str, problems: list[str]) -> ManagementConfig:
    enable, path = False, ""
    if table is not None:
        enable = table.bool("Enable")
        path = table.str("Path")
        table.finish()
    if not path:
        path = os.path.join(data_dir, MANAGEMENT_SOCKET_NAME) if data_dir else ""
    elif enable and not os.path.isabs(path):
        problems.append(f"config: Management.Path must be absolute when Management.Enable is set, "
                        f"got '{path}'")
    return ManagementConfig(enable, path)


def _metrics_section(table: _Table | None, problems: list[str]) -> MetricsConfig | None:
    """[Metrics] is our addition (the reference's config has none): absent, no endpoint; present,
    the endpoint listens on Address, by default on loopback, never on all interfaces."""
    if table is None:
        return None
    address = table.str("Address")
    table.finish()
    if not address:
        return MetricsConfig(DEFAULT_METRICS_ADDRESS)
    try:
        check_ip_port(address)
    except ValueError as err:
        problems.append(f"config: Metrics.Address must be a literal IP:port: {err}")
    return MetricsConfig(address)


def _debug_section(table: _Table | None, problems: list[str], warnings: list[str]) -> DebugConfig:
    table = table or _Table({}, "Debug", problems, [])
    values: dict[str, Any] = {}
    for toml_name, knob in DEBUG_INT_KNOBS.items():
        values[_snake(toml_name)] = _debug_int(table, toml_name, knob, problems, warnings)
    for toml_name in DEBUG_BOOLS:
        values[_snake(toml_name)] = table.bool(toml_name)
    values["epoch_period"] = _epoch_period(table, problems, warnings)
    table.finish()
    return DebugConfig(**values)


def _debug_int(table: _Table, toml_name: str, knob: DebugKnob, problems: list[str],
               warnings: list[str]) -> int:
    """One integer knob: <= 0 selects the default, then the floor and the ceiling apply."""
    where = f"Debug.{toml_name}"
    value = table.int(toml_name)
    if value < 0:
        warnings.append(f"{where} is negative ({value}); the default is used")
    if value <= 0:
        if toml_name == "NumSphinxWorkers":
            return min(os.cpu_count() or 1, knob.maximum)
        return knob.default
    if value > knob.maximum:
        problems.append(f"config: {where} must be <= {knob.maximum}, got {value}")
        return knob.default
    if value < knob.minimum:
        warnings.append(f"{where} raised from {value} to its minimum {knob.minimum}")
        value = knob.minimum
    return value


def _epoch_period(table: _Table, problems: list[str], warnings: list[str]) -> int:
    """Debug.EpochPeriod: 0, or a test period within the bounds nodes and authority share."""
    period = table.int("EpochPeriod")
    if period == 0 or period == DEFAULT_PERIOD:
        return 0
    problem = epoch_period_problem(period)
    if problem:
        problems.append(problem)
        return 0
    warnings.append(f"Debug.EpochPeriod is {period} s: for test networks only (the authority "
                    "and every node must use the same period)")
    return period


def _snake(camel: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", camel).lower()


# ---------------------------------------------------------------------------------------------
# Provider


def _provider_section(table: _Table | None, data_dir: str, problems: list[str],
                      warnings: list[str]) -> ProviderConfig:
    empty = _Table({}, "Provider", problems, [])
    table = table or empty
    enable_http = table.bool("EnableUserRegistrationHTTP")
    http_addresses = table.str_list("UserRegistrationHTTPAddresses") or ()
    advertise = table.str_list("AdvertiseUserRegistrationHTTPAddresses") or ()
    sql_table = table.table("SQLDB")
    user_db = _user_db(table.table("UserDB"), data_dir, problems)
    spool_db = _spool_db(table.table("SpoolDB"), data_dir, problems)
    binary = table.bool("BinaryRecipients")
    case_sensitive = table.bool("CaseSensitiveRecipients")
    delimiter = table.str("RecipientDelimiter")
    kaetzchen = tuple(_kaetzchen(t, problems) for t in table.table_list("Kaetzchen"))
    plugins = tuple(_plugin_kaetzchen(t, problems) for t in table.table_list("CBORPluginKaetzchen"))
    ephemeral = table.bool("EnableEphemeralClients")
    tofu = table.bool("TrustOnFirstUse")
    table.finish()

    if enable_http:
        _check_registration_http(http_addresses, problems)
    sql_db = _sql_db(sql_table, problems)
    uses_sql = BACKEND_SQL in (user_db.backend, spool_db.backend)
    if uses_sql and sql_db is None:
        problems.append("config: Provider: the sql UserDB/SpoolDB backend needs a [Provider.SQLDB] block")
    if sql_db is not None and not uses_sql:
        warnings.append("SQL database configured but not used for the User or Spool databases.")
    if tofu and user_db.backend != BACKEND_EMBEDDED:
        problems.append("config: Provider.TrustOnFirstUse needs the embedded (bolt) UserDB backend")
    _check_unique_services(kaetzchen, plugins, problems)
    return ProviderConfig(enable_http, http_addresses, advertise, sql_db, user_db, spool_db,
                          binary, case_sensitive, delimiter, kaetzchen, plugins, ephemeral, tofu)


def _check_registration_http(addresses: tuple[str, ...], problems: list[str]) -> None:
    if not addresses:
        problems.append("config: Provider.UserRegistrationHTTPAddresses must list at least one "
                        "host:port when Provider.EnableUserRegistrationHTTP is set")
    for index, address in enumerate(addresses):
        try:
            split_host_port(address)
        except ValueError as err:
            problems.append(f"config: Provider.UserRegistrationHTTPAddresses[{index}] "
                            f"must be host:port: {err}")


def _embedded_backend(name: str) -> str:
    return BACKEND_EMBEDDED if name.lower() in EMBEDDED_BACKEND_ALIASES else name


def _user_db(table: _Table | None, data_dir: str, problems: list[str]) -> UserDBConfig:
    backend, path, url = BACKEND_EMBEDDED, "", ""
    if table is not None:
        backend = _embedded_backend(table.str("Backend") or BACKEND_EMBEDDED)
        bolt = table.table("Bolt")
        extern = table.table("Extern")
        table.finish()
        if bolt is not None:
            path = bolt.str("UserDB")
            bolt.finish()
        if extern is not None:
            url = extern.str("ProviderURL")
            extern.finish()
    if backend not in (BACKEND_EMBEDDED, BACKEND_EXTERN, BACKEND_SQL):
        problems.append(f"config: Provider.UserDB.Backend '{backend}' is invalid "
                        "(must be bolt, extern or sql)")
    if backend == BACKEND_EMBEDDED:
        path = _path_in_data_dir(path, data_dir, DEFAULT_USER_DB_FILE, "Provider.UserDB.Bolt.UserDB",
                                 problems)
    if backend == BACKEND_EXTERN:
        parsed = urllib.parse.urlparse(url)
        if not url:
            problems.append("config: Provider.UserDB.Extern.ProviderURL is required for the extern backend")
        elif parsed.scheme not in ("http", "https") or not parsed.netloc:
            problems.append(f"config: Provider.UserDB.Extern.ProviderURL must be an http or https "
                            f"URL with a host, got '{url}'")
    return UserDBConfig(backend, path, url)


def _spool_db(table: _Table | None, data_dir: str, problems: list[str]) -> SpoolDBConfig:
    backend, path = BACKEND_EMBEDDED, ""
    if table is not None:
        backend = _embedded_backend(table.str("Backend") or BACKEND_EMBEDDED)
        bolt = table.table("Bolt")
        table.finish()
        if bolt is not None:
            path = bolt.str("SpoolDB")
            bolt.finish()
    if backend not in (BACKEND_EMBEDDED, BACKEND_SQL):
        problems.append(f"config: Provider.SpoolDB.Backend '{backend}' is invalid (must be bolt or sql)")
    if backend == BACKEND_EMBEDDED:
        path = _path_in_data_dir(path, data_dir, DEFAULT_SPOOL_DB_FILE, "Provider.SpoolDB.Bolt.SpoolDB",
                                 problems)
    return SpoolDBConfig(backend, path)


def _sql_db(table: _Table | None, problems: list[str]) -> SQLDBConfig | None:
    if table is None:
        return None
    backend = table.str("Backend")
    dsn = table.str("DataSourceName")
    table.finish()
    if backend != SQLDB_BACKEND_PGX:
        problems.append(f"config: Provider.SQLDB.Backend '{backend}' is invalid (must be pgx)")
    if not dsn:
        problems.append("config: Provider.SQLDB.DataSourceName is not set")
    return SQLDBConfig(backend, dsn)


def _service_fields(table: _Table, problems: list[str]) -> tuple[str, str, dict, bool]:
    capability = table.str("Capability")
    endpoint = table.str("Endpoint")
    config = table.mapping("Config") or {}
    disable = table.bool("Disable")
    if not capability:
        problems.append(f"config: {table.path}.Capability is not set")
    _check_endpoint(endpoint, f"{table.path}.Endpoint", problems)
    return capability, endpoint, config, disable


def _check_endpoint(endpoint: str, where: str, problems: list[str]) -> None:
    try:
        mapped = username_case_mapped(endpoint)
    except ValueError as err:
        problems.append(f"config: {where} '{endpoint}' is not a valid username: {err}")
        return
    if mapped != endpoint:
        problems.append(f"config: {where} '{endpoint}' is not in normalized form (would be '{mapped}')")
    elif len(endpoint.encode()) > MAX_ENDPOINT_BYTES:
        problems.append(f"config: {where} '{endpoint}' is longer than {MAX_ENDPOINT_BYTES} bytes")
    elif not _is_rfc5322_local_part(endpoint):
        problems.append(f"config: {where} '{endpoint}' is not a valid e-mail local part (RFC 5322)")


def _kaetzchen(table: _Table, problems: list[str]) -> KaetzchenConfig:
    capability, endpoint, config, disable = _service_fields(table, problems)
    table.finish()
    return KaetzchenConfig(capability, endpoint, _freeze(config), disable)


def _plugin_kaetzchen(table: _Table, problems: list[str]) -> CBORPluginKaetzchenConfig:
    capability, endpoint, config, disable = _service_fields(table, problems)
    command = table.str("Command")
    max_concurrency = table.int("MaxConcurrency", 1)
    table.finish()
    if not command:
        problems.append(f"config: {table.path}.Command is not set")
    if not 1 <= max_concurrency <= MAX_WORKERS:
        problems.append(f"config: {table.path}.MaxConcurrency must be 1..{MAX_WORKERS} (plugin "
                        f"processes), got {max_concurrency}")
    for key, value in config.items():
        if type(value) is not str:
            problems.append(f"config: {table.path}.Config.{key} must be a string "
                            f"(it becomes the argument -{key} <value>), got {_type_name(value)}")
    return CBORPluginKaetzchenConfig(capability, endpoint, _freeze(config), disable, command,
                                     max_concurrency)


def _check_unique_services(kaetzchen, plugins, problems: list[str]) -> None:
    seen_capabilities: set[str] = set()
    seen_endpoints: set[str] = set()
    for service in (*kaetzchen, *plugins):
        if service.capability in seen_capabilities:
            problems.append(f"config: Kaetzchen: '{service.capability}' configured multiple times")
        seen_capabilities.add(service.capability)
        if not service.disable and service.endpoint:
            if service.endpoint in seen_endpoints:
                problems.append(f"config: Kaetzchen: endpoint '{service.endpoint}' is used by "
                                "more than one service")
            seen_endpoints.add(service.endpoint)


# ---------------------------------------------------------------------------------------------
# Loading


def load_bytes(data: bytes | None, keys_only: bool = False) -> Config:
    """Parse and validate a configuration; raises ConfigError listing every problem.

    `keys_only` (the -g run) accepts a file without the [PKI] block or the authority's
    PublicKey; the resulting Config then has `pki` None or an empty public key, and must only
    be used to generate keys."""
    if data is None:
        raise ConfigError(["config: No nil buffer as config file"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError([f"config: file is not UTF-8: {err}"]) from None
    return load_text(text, keys_only)


def load_text(text: str, keys_only: bool = False) -> Config:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError([f"config: TOML syntax error: {err}"]) from None
    problems: list[str] = []
    warnings: list[str] = []
    undecoded: list[str] = []
    root = _Table(document, "", problems, undecoded)

    server_table = root.table("Server")
    if server_table is None:
        raise ConfigError(_problems_without_server(root, problems, undecoded, keys_only))
    server = _server_section(server_table, problems)
    logging_config = _logging_section(root.table("Logging"), problems)
    pki = _pki_section(root.table("PKI"), problems, keys_only)
    provider_table = root.table("Provider")
    provider = None
    if server.is_provider:
        provider = _provider_section(provider_table, server.data_dir, problems, warnings)
    elif provider_table is not None:
        problems.append("config: Provider block set when not a Provider (Server.IsProvider is false)")
    management = _management_section(root.table("Management"), server.data_dir, problems)
    metrics = _metrics_section(root.table("Metrics"), problems)
    debug = _debug_section(root.table("Debug"), problems, warnings)
    root.finish()
    if undecoded:
        problems.insert(0, f"config: Undecoded keys in config file: [{' '.join(undecoded)}]")
    if problems:
        raise ConfigError(problems, tuple(warnings))
    assert pki is not None or keys_only  # otherwise a missing PKI block is a problem above
    return Config(server, logging_config, pki, management, provider, debug, tuple(warnings),
                  metrics=metrics)


def _problems_without_server(root: "_Table", problems: list[str], undecoded: list[str],
                             keys_only: bool) -> list[str]:
    """Every problem that can be found without a [Server] block (the other sections depend on
    its DataDir and IsProvider): a missing or broken [PKI] block, and unknown keys."""
    _pki_section(root.table("PKI"), problems, keys_only)
    for name in ("Logging", "Provider", "Management", "Metrics", "Debug"):
        root.table(name)  # known sections: checked once [Server] is there
    root.finish()
    if undecoded:
        problems.insert(0, f"config: Undecoded keys in config file: [{' '.join(undecoded)}]")
    return ["config: No Server block was present"] + problems


def load_file(path: str, keys_only: bool = False) -> Config:
    """Read and validate the configuration file at `path` (ConfigError on any problem)."""
    try:
        with open(path, "rb") as config_file:
            data = config_file.read(MAX_CONFIG_BYTES + 1)
    except OSError as err:
        raise ConfigError([f"config: cannot read '{path}': {err.strerror or err}"]) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError([f"config: '{path}' is larger than {MAX_CONFIG_BYTES} bytes"])
    return load_bytes(data, keys_only)
