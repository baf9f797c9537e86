"""The test network's plan on disk: keys, node and authority configurations, client settings.

`write_network()` creates, under one directory, the directory authority (one non-voting
`authority`, or `auth1` … `authN` voting authorities with `authorities=N`, N >= 3), one mix per layer (three layers),
two providers with the built-in `echo`, `keyserver` and `loop` services, and two users (one per
provider) with their link and identity keys. Every configuration is written with the `toml`
package and read back through the loader its program uses (`katzenpost.config.load_file`,
`katzenpost.authority.config.load`), so a file the programs would refuse never gets as far as a
start. All listeners are on 127.0.0.1, on ports reserved for the plan (`ports.reserve`): the
plan keeps them held (`Plan.reservation`) until the network starts its processes.

The plan is also saved as `testnet.json` (ports, keys, paths; no private key), which `--keep`
and `--stop` use to find the network again.
"""
from __future__ import annotations

import base64
import json
import os
from dataclasses import asdict, dataclass, field

import toml

from katzenpost import config as node_config
from katzenpost import keys
from katzenpost.authority import config as authority_config
from katzenpost.testnet import ports as port_pool

PLAN_FILE = "testnet.json"
LAYERS = 3
PROVIDERS = ("provider1", "provider2")
USERS = (("alice", "provider1"), ("bob", "provider2"))
SERVICES = (("echo", "+echo"), ("keyserver", "+keyserver"), ("loop", "+loop"))
DEFAULT_MU = 0.02              # mean per-hop delay 1/Mu = 50 ms: a round trip well under 2 s
DEFAULT_MU_MAX_DELAY = 1000    # ms
# Seven Python processes share a few cores here (often with other work): a stall of a node's
# event loop or crypto thread of tens, at times hundreds, of milliseconds is common, and the
# reference's 10 ms UnwrapDelay and SchedulerSlack then drop packets (`unwrap_delay`,
# `scheduler_late`) that a dedicated machine would forward (measured on a shared 2-core
# machine: 5 of 80 replies lost with 10 ms, 1 of 100 with 250 ms). The testnet allows 1 s;
# `strict_timing` keeps the reference's values.
RELAXED_TIMING = {"UnwrapDelay": 1000, "SchedulerSlack": 1000}
NONVOTING_AUTHORITY = "authority"
MIN_VOTING_AUTHORITIES = 3
MAX_AUTHORITIES = 9


def authority_count_problem(count: int) -> str | None:
    """Why `count` authorities cannot make a test network (None: they can)."""
    if count == 2:
        return ("2 authorities cannot vote usefully: a document needs a majority of signatures, "
                "so both would have to sign every one and either of them down stops the network; "
                f"use 1 (one non-voting authority) or {MIN_VOTING_AUTHORITIES} to {MAX_AUTHORITIES} "
                "voting authorities")
    if not 1 <= count <= MAX_AUTHORITIES:
        return f"the number of authorities must be 1 (non-voting) or {MIN_VOTING_AUTHORITIES} to {MAX_AUTHORITIES}"
    return None


def authority_names(count: int) -> list[str]:
    return [NONVOTING_AUTHORITY] if count == 1 else [f"auth{i}" for i in range(1, count + 1)]


class LayoutError(Exception):
    """The network cannot be written or read back (the message says which file and why)."""


@dataclass
class NodePlan:
    name: str
    is_provider: bool
    data_dir: str
    config_path: str
    port: int
    metrics_port: int
    identity_key: str              # hex
    link_key: str                  # hex

    @property
    def management_path(self) -> str:
        return os.path.join(self.data_dir, "management_sock")

    @property
    def log_path(self) -> str:
        return os.path.join(self.data_dir, "node.log")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class UserPlan:
    name: str
    provider: str
    data_dir: str
    client_config: str
    link_key: str                  # hex, registered with ADD_USER
    identity_key: str              # hex, registered with SET_USER_IDENTITY (the keyserver's answer)


@dataclass
class AuthorityPlan:
    name: str
    port: int
    identity_key: str              # hex
    link_key: str                  # hex; "" for the non-voting authority (ToECDH of its identity)
    data_dir: str
    config_path: str

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> str:
        return os.path.join(self.data_dir, "authority.log")

    def peer_entry(self) -> dict:
        """This authority as the others, the nodes and the clients list it (base64 keys)."""
        return {"Addresses": [self.address],
                "IdentityPublicKey": _b64(bytes.fromhex(self.identity_key)),
                "LinkPublicKey": _b64(bytes.fromhex(self.link_key))}


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


@dataclass
class Plan:
    root: str
    epoch_period: int
    authorities: list[AuthorityPlan] = field(default_factory=list)
    mixes: list[NodePlan] = field(default_factory=list)
    providers: list[NodePlan] = field(default_factory=list)
    users: list[UserPlan] = field(default_factory=list)
    postgres_dsn: str = ""         # the --postgres DSN (0600 file: it may hold a password)
    postgres_schemas: list[str] = field(default_factory=list)
    pids: dict[str, int] = field(default_factory=dict)
    # The sockets holding the plan's ports until its processes start (not a field: never saved).
    reservation = None

    @property
    def nodes(self) -> list[NodePlan]:
        return self.mixes + self.providers

    @property
    def voting(self) -> bool:
        return len(self.authorities) > 1

    # The first (with one non-voting authority: the) authority.
    @property
    def authority_port(self) -> int:
        return self.authorities[0].port

    @property
    def authority_key(self) -> str:
        return self.authorities[0].identity_key

    @property
    def authority_dir(self) -> str:
        return self.authorities[0].data_dir

    @property
    def authority_config(self) -> str:
        return self.authorities[0].config_path

    def authority(self, name: str) -> AuthorityPlan:
        return next(a for a in self.authorities if a.name == name)

    def provider(self, name: str) -> NodePlan:
        return next(p for p in self.providers if p.name == name)

    def save(self) -> None:
        _write_private(os.path.join(self.root, PLAN_FILE), json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, root: str) -> "Plan":
        path = os.path.join(root, PLAN_FILE)
        try:
            with open(path) as f:
                raw = json.load(f)
            raw["authorities"] = [AuthorityPlan(**a) for a in raw["authorities"]]
            raw["mixes"] = [NodePlan(**n) for n in raw["mixes"]]
            raw["providers"] = [NodePlan(**n) for n in raw["providers"]]
            raw["users"] = [UserPlan(**u) for u in raw["users"]]
            return cls(**raw)
        except OSError as err:
            raise LayoutError(f"no test network in '{root}': {err.strerror or err}") from None
        except (ValueError, TypeError, KeyError) as err:
            raise LayoutError(f"'{path}' is damaged: {err}") from None


def ports_needed(authorities: int = 1) -> int:
    """A port per authority, and a listener and a metrics port per node."""
    return authorities + 2 * (LAYERS + len(PROVIDERS))


def _private_dir(path: str) -> str:
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def _write_private(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _node_keys(data_dir: str) -> tuple[str, str]:
    identity, _ = keys.load_or_create_identity_key(data_dir)
    link, _ = keys.load_or_create_link_key(data_dir)
    return identity.public.hex(), link.public.hex()


def node_document(plan: Plan, node: NodePlan, *, log_level: str, provider_sql: str | None,
                  strict_timing: bool = False) -> dict:
    """The node's configuration as a TOML table."""
    doc = {
        "Server": {"Identifier": node.name, "Addresses": [node.address], "DataDir": node.data_dir,
                   "IsProvider": node.is_provider},
        "Logging": {"File": "node.log", "Level": log_level},
        "PKI": _pki_table(plan),
        "Management": {"Enable": True, "Path": node.management_path},
        "Metrics": {"Address": f"127.0.0.1:{node.metrics_port}"},
        "Debug": {"EpochPeriod": plan.epoch_period, "NumSphinxWorkers": 1,
                  **({} if strict_timing else RELAXED_TIMING)},
    }
    if node.is_provider:
        provider = {"Kaetzchen": [{"Capability": c, "Endpoint": e} for c, e in SERVICES]}
        if provider_sql:
            provider["UserDB"] = {"Backend": "sql"}
            provider["SpoolDB"] = {"Backend": "sql"}
            provider["SQLDB"] = {"Backend": "pgx", "DataSourceName": provider_sql}
        doc["Provider"] = provider
    return doc


def _pki_table(plan: Plan) -> dict:
    if plan.voting:
        return {"Voting": {"Peers": [a.peer_entry() for a in plan.authorities]}}
    return {"Nonvoting": {"Address": plan.authorities[0].address, "PublicKey": plan.authority_key}}


def authority_document(plan: Plan, authority: AuthorityPlan, *, log_level: str, mu: float,
                       mu_max_delay: int) -> dict:
    """An authority's configuration; a voting one lists the others in [[Authorities]] (all
    voting authorities share the whitelist, the parameters, the layers and the period)."""
    doc = {
        "Authority": {"Identifier": authority.name, "Addresses": [authority.address],
                      "DataDir": authority.data_dir},
        "Logging": {"File": "authority.log", "Level": log_level},
        "Parameters": {"Mu": mu, "MuMaxDelay": mu_max_delay},
        "Debug": {"Layers": LAYERS, "MinNodesPerLayer": 1, "EpochPeriod": plan.epoch_period},
        "Mixes": [{"IdentityKey": m.identity_key} for m in plan.mixes],
        "Providers": [{"Identifier": p.name, "IdentityKey": p.identity_key} for p in plan.providers],
    }
    if plan.voting:
        doc["Authorities"] = [a.peer_entry() for a in plan.authorities if a is not authority]
    return doc


def client_document(plan: Plan, user: UserPlan) -> dict:
    provider = plan.provider(user.provider)
    return {
        "Client": {"User": user.name, "DataDir": user.data_dir, "PollInterval": 0.2, "ReplySlack": 20.0},
        "Provider": {"Name": provider.name, "Address": provider.address, "IdentityKey": provider.identity_key},
        "Authority": ({"PublicKeys": [a.identity_key for a in plan.authorities]} if plan.voting
                      else {"PublicKey": plan.authority_key}),
        "Debug": {"EpochPeriod": plan.epoch_period},
    }


def write_network(root: str, *, epoch_period: int, log_level: str = "NOTICE",
                  provider_sql: dict[str, str] | None = None, mu: float = DEFAULT_MU,
                  mu_max_delay: int = DEFAULT_MU_MAX_DELAY, strict_timing: bool = False,
                  authorities: int = 1) -> Plan:
    """Keys and configurations of a whole network under `root` (created 0700). Existing keys
    in `root` are kept. `provider_sql` maps a provider name to its PostgreSQL DSN. The ports
    are reserved here and stay held by `plan.reservation` (see `ports.PortBlock.release`).
    `authorities`: 1 (a non-voting authority) or 3 and more voting authorities."""
    problem = authority_count_problem(authorities)
    if problem:
        raise LayoutError(problem)
    root = _private_dir(os.path.abspath(root))
    reservation = port_pool.reserve(ports_needed(authorities))
    try:
        plan = _write(root, iter(reservation.ports), epoch_period=epoch_period, log_level=log_level,
                      provider_sql=provider_sql, mu=mu, mu_max_delay=mu_max_delay,
                      strict_timing=strict_timing, authorities=authorities)
    except BaseException:
        reservation.release()
        raise
    plan.reservation = reservation
    return plan


def _write(root: str, ports, *, epoch_period: int, log_level: str, provider_sql: dict[str, str] | None,
           mu: float, mu_max_delay: int, strict_timing: bool, authorities: int) -> Plan:
    plan = Plan(root=root, epoch_period=epoch_period)
    for name in authority_names(authorities):
        plan.authorities.append(_authority_plan(root, name, next(ports), voting=authorities > 1))
    for index in range(1, LAYERS + 1):
        plan.mixes.append(_node_plan(root, f"mix{index}", False, ports))
    for name in PROVIDERS:
        plan.providers.append(_node_plan(root, name, True, ports))
    _private_dir(os.path.join(root, "clients"))      # makedirs gives parents the umask's mode
    for name, provider in USERS:
        data_dir = _private_dir(os.path.join(root, "clients", name))
        link, _ = keys.load_or_create_link_key(data_dir)
        user_identity, _ = keys.load_or_create_identity_key(data_dir)
        plan.users.append(UserPlan(name, provider, data_dir, os.path.join(root, f"client-{name}.toml"),
                                   link.public.hex(), user_identity.public.hex()))
    for authority in plan.authorities:
        _write_private(authority.config_path, toml.dumps(authority_document(
            plan, authority, log_level=log_level, mu=mu, mu_max_delay=mu_max_delay)))
    for node in plan.nodes:
        sql = (provider_sql or {}).get(node.name)
        _write_private(node.config_path, toml.dumps(node_document(
            plan, node, log_level=log_level, provider_sql=sql, strict_timing=strict_timing)))
    for user in plan.users:
        _write_private(user.client_config, toml.dumps(client_document(plan, user)))
    read_back(plan)
    plan.save()
    return plan


def _authority_plan(root: str, name: str, port: int, *, voting: bool) -> AuthorityPlan:
    """A voting authority has a link key of its own; the non-voting one derives it."""
    data_dir = _private_dir(os.path.join(root, name))
    identity, _ = keys.load_or_create_identity_key(data_dir)
    link = keys.load_or_create_link_key(data_dir)[0].public.hex() if voting else ""
    return AuthorityPlan(name, port, identity.public.hex(), link, data_dir,
                         os.path.join(root, f"{name}.toml"))


def _node_plan(root: str, name: str, is_provider: bool, ports) -> NodePlan:
    data_dir = _private_dir(os.path.join(root, name))
    identity, link = _node_keys(data_dir)
    return NodePlan(name, is_provider, data_dir, os.path.join(root, f"{name}.toml"), next(ports),
                    next(ports), identity, link)


def read_back(plan: Plan) -> None:
    """Load every written file with its program's own loader; LayoutError lists the problems."""
    problems = []
    for authority in plan.authorities:
        path = authority.config_path
        try:
            loaded = authority_config.load(path)
            if loaded.epoch_period != plan.epoch_period or loaded.is_voting != plan.voting:
                problems.append(f"{path}: epoch period or voting form differ when read back")
        except authority_config.AuthorityConfigError as err:
            problems.extend(f"{path}: {p}" for p in err.problems)
    for node in plan.nodes:
        try:
            cfg = node_config.load_file(node.config_path)
            if cfg.server.is_provider != node.is_provider or cfg.epoch_period != plan.epoch_period:
                problems.append(f"{node.config_path}: role or epoch period differ when read back")
        except node_config.ConfigError as err:
            problems.extend(f"{node.config_path}: {p}" for p in err.problems)
    if problems:
        raise LayoutError("the written configuration does not load:\n  " + "\n  ".join(problems))
