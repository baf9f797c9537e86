"""The test network's plan on disk: keys, node and authority configurations, client settings.

`write_network()` creates, under one directory, an authority, one mix per layer (three layers),
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
class Plan:
    root: str
    epoch_period: int
    authority_port: int
    authority_key: str             # hex
    authority_dir: str
    authority_config: str
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
            raw["mixes"] = [NodePlan(**n) for n in raw["mixes"]]
            raw["providers"] = [NodePlan(**n) for n in raw["providers"]]
            raw["users"] = [UserPlan(**u) for u in raw["users"]]
            return cls(**raw)
        except OSError as err:
            raise LayoutError(f"no test network in '{root}': {err.strerror or err}") from None
        except (ValueError, TypeError, KeyError) as err:
            raise LayoutError(f"'{path}' is damaged: {err}") from None


def ports_needed() -> int:
    """The authority's port, and a listener and a metrics port per node."""
    return 1 + 2 * (LAYERS + len(PROVIDERS))


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
        "PKI": {"Nonvoting": {"Address": f"127.0.0.1:{plan.authority_port}",
                              "PublicKey": plan.authority_key}},
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


def authority_document(plan: Plan, *, log_level: str, mu: float, mu_max_delay: int) -> dict:
    return {
        "Authority": {"Identifier": "authority", "Addresses": [f"127.0.0.1:{plan.authority_port}"],
                      "DataDir": plan.authority_dir},
        "Logging": {"File": "authority.log", "Level": log_level},
        "Parameters": {"Mu": mu, "MuMaxDelay": mu_max_delay},
        "Debug": {"Layers": LAYERS, "MinNodesPerLayer": 1, "EpochPeriod": plan.epoch_period},
        "Mixes": [{"IdentityKey": m.identity_key} for m in plan.mixes],
        "Providers": [{"Identifier": p.name, "IdentityKey": p.identity_key} for p in plan.providers],
    }


def client_document(plan: Plan, user: UserPlan) -> dict:
    provider = plan.provider(user.provider)
    return {
        "Client": {"User": user.name, "DataDir": user.data_dir, "PollInterval": 0.2, "ReplySlack": 20.0},
        "Provider": {"Name": provider.name, "Address": provider.address, "IdentityKey": provider.identity_key},
        "Authority": {"PublicKey": plan.authority_key},
        "Debug": {"EpochPeriod": plan.epoch_period},
    }


def write_network(root: str, *, epoch_period: int, log_level: str = "NOTICE",
                  provider_sql: dict[str, str] | None = None, mu: float = DEFAULT_MU,
                  mu_max_delay: int = DEFAULT_MU_MAX_DELAY, strict_timing: bool = False) -> Plan:
    """Keys and configurations of a whole network under `root` (created 0700). Existing keys
    in `root` are kept. `provider_sql` maps a provider name to its PostgreSQL DSN. The ports
    are reserved here and stay held by `plan.reservation` (see `ports.PortBlock.release`)."""
    root = _private_dir(os.path.abspath(root))
    reservation = port_pool.reserve(ports_needed())
    try:
        plan = _write(root, iter(reservation.ports), epoch_period=epoch_period, log_level=log_level,
                      provider_sql=provider_sql, mu=mu, mu_max_delay=mu_max_delay,
                      strict_timing=strict_timing)
    except BaseException:
        reservation.release()
        raise
    plan.reservation = reservation
    return plan


def _write(root: str, ports, *, epoch_period: int, log_level: str, provider_sql: dict[str, str] | None,
           mu: float, mu_max_delay: int, strict_timing: bool) -> Plan:
    authority_dir = _private_dir(os.path.join(root, "authority"))
    identity, _ = keys.load_or_create_identity_key(authority_dir)
    plan = Plan(root=root, epoch_period=epoch_period, authority_port=next(ports),
                authority_key=identity.public.hex(), authority_dir=authority_dir,
                authority_config=os.path.join(root, "authority.toml"))
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
    _write_private(plan.authority_config, toml.dumps(
        authority_document(plan, log_level=log_level, mu=mu, mu_max_delay=mu_max_delay)))
    for node in plan.nodes:
        sql = (provider_sql or {}).get(node.name)
        _write_private(node.config_path, toml.dumps(node_document(
            plan, node, log_level=log_level, provider_sql=sql, strict_timing=strict_timing)))
    for user in plan.users:
        _write_private(user.client_config, toml.dumps(client_document(plan, user)))
    read_back(plan)
    plan.save()
    return plan


def _node_plan(root: str, name: str, is_provider: bool, ports) -> NodePlan:
    data_dir = _private_dir(os.path.join(root, name))
    identity, link = _node_keys(data_dir)
    return NodePlan(name, is_provider, data_dir, os.path.join(root, f"{name}.toml"), next(ports),
                    next(ports), identity, link)


def read_back(plan: Plan) -> None:
    """Load every written file with its program's own loader; LayoutError lists the problems."""
    problems = []
    try:
        authority = authority_config.load(plan.authority_config)
        if authority.epoch_period != plan.epoch_period:
            problems.append(f"{plan.authority_config}: epoch period {authority.epoch_period} read back")
    except authority_config.AuthorityConfigError as err:
        problems.extend(f"{plan.authority_config}: {p}" for p in err.problems)
    for node in plan.nodes:
        try:
            cfg = node_config.load_file(node.config_path)
            if cfg.server.is_provider != node.is_provider or cfg.epoch_period != plan.epoch_period:
                problems.append(f"{node.config_path}: role or epoch period differ when read back")
        except node_config.ConfigError as err:
            problems.extend(f"{node.config_path}: {p}" for p in err.problems)
    if problems:
        raise LayoutError("the written configuration does not load:\n  " + "\n  ".join(problems))
