"""`katzenpost-client`: talk to a provider from the command line.

    katzenpost-client [-c client.toml] [connection flags] COMMAND ...

Commands: `genkey` (create or show the user's link key), `send RECIPIENT [TEXT]` (a message
with a SURB-ACK; waits for the ACK), `retrieve` (print what the spool holds), `ping SERVICE`
(`+echo`, `+loop`, ... with a SURB; prints the reply and the round trip), `keyserver USER`,
`loop`, and `load --rate R --duration T` (paced traffic, then delivered/lost/latency).
A RECIPIENT or SERVICE may name a provider: `bob@provider2`, `+echo@provider2`.

The configuration file (TOML; every value can also be given as a flag, flags win):

    [Client]
    User = "alice"
    DataDir = "/home/alice/.katzenpost"      # holds link.private.pem (created 0700/0600)
    [Provider]
    Name = "provider1"
    Address = "127.0.0.1:30001"
    IdentityKey = "<hex or base64 Ed25519 public key>"
    [Authority]
    PublicKey = "<hex or base64 Ed25519 public key>"
    # or, for a network of voting authorities, all their identity keys (a document needs valid
    # signatures of a majority of them):  PublicKeys = ["<key 1>", "<key 2>", "<key 3>"]
    [Debug]
    EpochPeriod = 0                          # test networks only: their epoch period

Exit status: 0 done, 1 the network did not do it (no connection, reply lost), 2 bad input.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
import tomllib

from katzenpost import keys
from katzenpost.client.load import Prebuilt, TrafficStats, run_load
from katzenpost.client.session import Client, ClientError, ClientSettings, Send
from katzenpost.pki.descriptor import DescriptorError, split_host_port
from katzenpost.sphinx import geometry

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

_FILE_KEYS = {
    "Client": {"User": str, "DataDir": str, "PollInterval": (int, float), "ReplySlack": (int, float),
               "Timeout": (int, float)},
    "Provider": {"Name": str, "Address": str, "IdentityKey": str},
    "Authority": {"PublicKey": str, "PublicKeys": list},
    "Debug": {"EpochPeriod": int},
}


class UsageError(Exception):
    """Bad input from the user: a clear message, exit status 2."""


def _address(text: str) -> tuple[str, int]:
    try:
        host, port = split_host_port(text)
        number = int(port) if port.isdigit() else -1
    except DescriptorError as err:
        raise UsageError(f"provider address '{text}': {err}") from None
    if not host or not 1 <= number <= 65535:
        raise UsageError(f"provider address '{text}': expected HOST:PORT with a port 1-65535")
    return host, number


def _public_key(text: str, what: str) -> bytes:
    try:
        key = keys.decode_key_string(text.strip())
    except ValueError:
        raise UsageError(f"{what} '{text}' is neither hex nor base64") from None
    if len(key) != 32:
        raise UsageError(f"{what} must be 32 bytes, got {len(key)}")
    return key


def read_config_file(path: str) -> dict:
    """The file's values by (section, key), type-checked; unknown keys are an error."""
    try:
        with open(path, "rb") as f:
            table = tomllib.load(f)
    except OSError as err:
        raise UsageError(f"cannot read '{path}': {err.strerror or err}") from None
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"'{path}' is not valid TOML: {err}") from None
    values, problems = {}, []
    for section, entries in table.items():
        spec = _FILE_KEYS.get(section)
        if spec is None or not isinstance(entries, dict):
            problems.append(f"unknown section [{section}]")
            continue
        for key, value in entries.items():
            kind = spec.get(key)
            if kind is None:
                problems.append(f"unknown key {section}.{key}")
            elif not isinstance(value, kind) or isinstance(value, bool):
                problems.append(f"{section}.{key} has the wrong type ({type(value).__name__})")
            else:
                values[(section, key)] = value
    if problems:
        raise UsageError(f"'{path}': " + "; ".join(problems))
    return values


def load_link_key(data_dir: str, create: bool) -> keys.LinkKey:
    """The user's link key from DataDir (created, with DataDir, when `create`)."""
    data_dir = os.path.abspath(data_dir)
    try:
        if create:
            keys.ensure_data_dir(data_dir)
            return keys.load_or_create_link_key(data_dir)[0]
        problems = keys.check_data_dir(data_dir)
        if problems:
            raise UsageError("; ".join(problems))
        return keys.load_link_key(data_dir)
    except (keys.KeyFileError, OSError, ValueError) as err:
        raise UsageError(f"link key in '{data_dir}': {err}") from None


def settings_from(args, *, create_key: bool = False) -> ClientSettings:
    """ClientSettings from the file (if any) with the flags on top; every gap is reported."""
    values = read_config_file(args.config) if args.config else {}

    def pick(flag, section, key):
        value = getattr(args, flag, None)
        return value if value is not None else values.get((section, key))

    found = {
        "user": pick("user", "Client", "User"),
        "data_dir": pick("data_dir", "Client", "DataDir"),
        "provider": pick("provider", "Provider", "Name"),
        "address": pick("provider_address", "Provider", "Address"),
        "provider_key": pick("provider_key", "Provider", "IdentityKey"),
        "authority_key": _authority_keys(args, values),
    }
    missing = [name for name, value in found.items() if not value]
    if missing:
        flag = {"address": "provider-address"}
        flags = ", ".join("--" + flag.get(m, m.replace("_", "-")) for m in missing)
        raise UsageError(f"missing {flags} (or the matching entries of a -c configuration file)")
    if args.config and not os.path.isabs(found["data_dir"]):
        found["data_dir"] = os.path.join(os.path.dirname(os.path.abspath(args.config)), found["data_dir"])
    period = pick("epoch_period", "Debug", "EpochPeriod") or 0
    try:
        return ClientSettings(
            user=found["user"], link_key=load_link_key(found["data_dir"], create_key),
            provider=found["provider"], provider_key=_public_key(found["provider_key"], "provider key"),
            address=_address(found["address"]),
            authority_key=_public_key(found["authority_key"][0], "authority key"),
            authority_keys=(tuple(_public_key(k, "authority key") for k in found["authority_key"])
                            if len(found["authority_key"]) > 1 else ()),
            epoch_period=period,
            poll_interval=float(pick("poll_interval", "Client", "PollInterval") or 0.2),
            reply_slack=float(pick("reply_slack", "Client", "ReplySlack") or 30.0),
            timeout=float(pick("timeout", "Client", "Timeout") or 10.0))
    except (ClientError, ValueError) as err:
        raise UsageError(str(err).removeprefix("client: ")) from None


def _authority_keys(args, values: dict) -> list[str]:
    """The authority keys given: repeated --authority-key flags, else Authority.PublicKeys (voting
    authorities), else Authority.PublicKey (one non-voting authority)."""
    flags = getattr(args, "authority_key", None)
    if flags:
        return list(flags)
    listed = values.get(("Authority", "PublicKeys"))
    if listed is not None:
        if any(not isinstance(k, str) for k in listed):
            raise UsageError("Authority.PublicKeys must be an array of strings")
        return list(listed)
    single = values.get(("Authority", "PublicKey"))
    return [single] if single else []


def _target(text: str) -> tuple[str, str | None]:
    """`name@provider` or `name` → (name, provider or None)."""
    name, _, provider = text.rpartition("@") if "@" in text else (text, "", "")
    if not name or ("@" in text and not provider):
        raise UsageError(f"'{text}': expected NAME or NAME@PROVIDER")
    if len(name.encode()) > geometry.RECIPIENT_ID_LENGTH:
        raise UsageError(f"'{name}' is longer than {geometry.RECIPIENT_ID_LENGTH} bytes")
    return name, provider or None


def _body(text: str | None, *, stdin_allowed: bool) -> bytes:
    if text is None:
        data = sys.stdin.buffer.read(geometry.USER_FORWARD_PAYLOAD_LENGTH + 1) if stdin_allowed else b""
    else:
        data = text.encode()
    if len(data) > geometry.USER_FORWARD_PAYLOAD_LENGTH:
        raise UsageError(f"the message is over {geometry.USER_FORWARD_PAYLOAD_LENGTH} bytes "
                         "(one Sphinx packet)")
    return data


def _show(body: bytes) -> str:
    return body.rstrip(b"\x00").decode("utf-8", "replace")


# --- commands (each returns an exit status) ------------------------------------------------------

def cmd_genkey(args) -> int:
    settings_dir = args.data_dir
    if settings_dir is None and args.config:
        values = read_config_file(args.config)
        settings_dir = values.get(("Client", "DataDir"))
        if settings_dir and not os.path.isabs(settings_dir):
            settings_dir = os.path.join(os.path.dirname(os.path.abspath(args.config)), settings_dir)
    if not settings_dir:
        raise UsageError("missing --data-dir (or Client.DataDir in a -c configuration file)")
    key = load_link_key(settings_dir, create=True)
    print(f"link public key: {key.public.hex()}")
    user = args.user or "<user>"
    print(f"register it at the provider (management socket): ADD_USER {user} {key.public.hex()}")
    return EXIT_OK


def precheck(args) -> None:
    """Check a network command's arguments before any connection (bad input: exit 2 at once)."""
    if args.command == "send":
        args.target = _target(args.recipient)
        args.body = _body(args.text, stdin_allowed=True)
    elif args.command == "ping":
        args.target = _target(args.service)
        args.body = _body(args.text or "ping", stdin_allowed=False)
    elif args.command == "keyserver":
        args.target = _target(args.lookup)
    elif args.command == "loop":
        args.target = ("loop", _target(f"loop@{args.provider_of_loop}")[1] if args.provider_of_loop else None)
        args.body = b""
    elif args.command == "load":
        args.target = _target(args.to or args.service) if (args.to or args.service) else None


async def cmd_send(client: Client, args) -> int:
    name, provider = args.target
    pending = await client.send_message(name, provider, args.body)
    if args.no_wait:
        print("sent")
        return EXIT_OK
    await pending.result
    print(f"delivered to {args.recipient}: SURB-ACK after {_elapsed(pending):.2f} s")
    return EXIT_OK


def _elapsed(pending) -> float:
    return time.monotonic() - pending.sent


async def cmd_retrieve(client: Client, args) -> int:
    deadline = asyncio.get_running_loop().time() + args.wait
    count = 0
    while True:
        await client.retrieve()
        while not client.inbox.empty():
            count += 1
            print(_show(client.inbox.get_nowait().body), flush=True)
        if asyncio.get_running_loop().time() >= deadline or (args.count and count >= args.count):
            break
        await asyncio.sleep(client.settings.poll_interval)
    print(f"{count} message(s)", file=sys.stderr)
    return EXIT_OK


async def cmd_ping(client: Client, args) -> int:
    (service, provider), body = args.target, args.body
    label = service if provider is None else f"{service}@{provider}"
    failures = 0
    for index in range(args.count):
        pending = await client.request(service, provider, body)
        try:
            reply = await pending.result
        except ClientError as err:
            failures += 1
            print(f"{label}: {err}".replace("client: ", ""))
            continue
        shown = _show(reply.body)
        print(f"reply from {label} in {_elapsed(pending):.2f} s: {shown!r}" if shown
              else f"reply from {label} in {_elapsed(pending):.2f} s (empty)")
    return EXIT_FAILED if failures else EXIT_OK


async def cmd_keyserver(client: Client, args) -> int:
    user, provider = args.target
    request = json.dumps({"Version": 0, "User": user}, separators=(",", ":")).encode()
    pending = await client.request("keyserver", provider, request)
    reply = await pending.result
    print(_show(reply.body))
    return EXIT_OK


async def cmd_loop(client: Client, args) -> int:
    return await cmd_ping(client, args)


async def cmd_load(client: Client, args) -> int:
    stats = TrafficStats()
    name, provider = args.target or (client.settings.user, None)
    body_prefix = b"katzenpost-client load "
    kind = name if args.service else "message"
    echo = args.service and name.lstrip("+") == "echo"      # the reply must repeat the body

    def body(index: int) -> bytes:
        return body_prefix + str(index).encode()

    async def build(indices, times):     # a batch of packets, each for its planned send time
        return await client.build([Send(recipient="" if args.service else name,
                                        service=name if args.service else "", provider=provider,
                                        body=body(i), start=t) for i, t in zip(indices, times)])
    built = Prebuilt(build)

    async def send_one(index: int) -> None:
        try:
            pending = await client.send_built(built.take(index))
            stats.track(kind, pending, check=(lambda reply, b=body(index): reply.startswith(b)) if echo else None)
        except ClientError as err:
            stats.send_failed(kind, err)

    await run_load(send_one, rate=args.rate, duration=args.duration, stats=stats,
                   reply_slack=client.settings.reply_slack, prepare=built.prepare)
    summary = stats.summary()
    print(format_summary(summary))
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    return EXIT_OK if summary["lost"] == 0 and summary["failed"] == 0 and summary["pending"] == 0 else EXIT_FAILED


def format_summary(summary: dict) -> str:
    def ms(value):
        return "-" if value is None else f"{value * 1000:.0f} ms"
    return (f"sent {summary['sent']}, delivered {summary['delivered']}, lost {summary['lost']}, "
            f"failed {summary['failed']}, pending {summary['pending']}; latency p50 "
            f"{ms(summary['latency_p50'])}, p99 {ms(summary['latency_p99'])}")


_NETWORK_COMMANDS = {"send": cmd_send, "retrieve": cmd_retrieve, "ping": cmd_ping,
                     "keyserver": cmd_keyserver, "loop": cmd_loop, "load": cmd_load}


async def _run_network_command(args) -> int:
    precheck(args)
    settings = settings_from(args)
    client = Client(settings)
    try:
        await client.start(retrieve=args.command not in ("retrieve",))
        return await _NETWORK_COMMANDS[args.command](client, args)
    finally:
        await client.close()


def number_arg(kind, low=None, high=None):
    """An argparse type: a `kind` number, > 0 without bounds, else within low..high."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: '{text}'") from None
        if low is None and value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        if low is not None and not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be within {low}..{high}, got {text}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="katzenpost-client", description="A Katzenpost client: "
                                     "send, retrieve, and talk to a provider's services.")
    parser.add_argument("-c", "--config", help="client configuration file (TOML)")
    parser.add_argument("--user", help="user name at the provider")
    parser.add_argument("--data-dir", help="directory of the user's link key (link.private.pem)")
    parser.add_argument("--provider", help="the provider's name (Identifier)")
    parser.add_argument("--provider-address", help="HOST:PORT of one of the provider's listeners")
    parser.add_argument("--provider-key", help="the provider's identity public key (hex or base64)")
    parser.add_argument("--authority-key", action="append",
                        help="the authority's identity public key (hex or base64); repeat it for "
                             "each of a set of voting authorities")
    parser.add_argument("--epoch-period", type=number_arg(int), help="test networks only: epoch period (s)")
    parser.add_argument("--timeout", type=number_arg(float), help="connect and answer timeout (s), default 10")
    parser.add_argument("--reply-slack", type=number_arg(float),
                        help="seconds past a reply's expected arrival before it counts as lost (default 30)")
    parser.add_argument("--poll-interval", type=number_arg(float), help="spool poll interval (s), default 0.2")
    parser.add_argument("-v", "--verbose", action="store_true", help="log the client's steps on stderr")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("genkey", help="create (or show) the user's link key")
    send = commands.add_parser("send", help="send a message with a SURB-ACK and wait for the ACK")
    send.add_argument("recipient", help="USER or USER@PROVIDER")
    send.add_argument("text", nargs="?", help="the message (default: standard input)")
    send.add_argument("--no-wait", action="store_true", help="do not wait for the SURB-ACK")
    retrieve = commands.add_parser("retrieve", help="print the messages waiting in the spool")
    retrieve.add_argument("--wait", type=float, default=0.0, help="keep polling this many seconds")
    retrieve.add_argument("--count", type=number_arg(int), help="stop after this many messages")
    ping = commands.add_parser("ping", help="a request to a service (+echo, +loop, ...) and its reply")
    ping.add_argument("service", help="SERVICE or SERVICE@PROVIDER (capability or endpoint)")
    ping.add_argument("text", nargs="?", help="request body (default 'ping')")
    ping.add_argument("--count", type=number_arg(int), default=1)
    keyserver = commands.add_parser("keyserver", help="look a user's identity key up")
    keyserver.add_argument("lookup", metavar="USER", help="USER or USER@PROVIDER")
    loop = commands.add_parser("loop", help="loop requests through the network")
    loop.add_argument("--count", type=number_arg(int), default=1)
    loop.add_argument("--via", dest="provider_of_loop", help="the provider whose loop service to use")
    load = commands.add_parser("load", help="paced traffic, then delivered/lost/latency")
    load.add_argument("--rate", type=number_arg(float), required=True, help="messages per second")
    load.add_argument("--duration", type=number_arg(float), required=True, help="seconds of sending")
    target = load.add_mutually_exclusive_group()
    target.add_argument("--to", help="USER[@PROVIDER] to send messages to (default: yourself)")
    target.add_argument("--service", help="a service to send requests to instead (e.g. +echo)")
    load.add_argument("--json", action="store_true", help="also print the summary as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname).4s %(name)s: %(message)s", stream=sys.stderr)
    try:
        if args.command == "genkey":
            return cmd_genkey(args)
        return asyncio.run(_run_network_command(args))
    except UsageError as err:
        print(f"katzenpost-client: {err}", file=sys.stderr)
        return EXIT_USAGE
    except ClientError as err:
        print(f"katzenpost-client: {str(err).removeprefix('client: ')}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("katzenpost-client: interrupted", file=sys.stderr)
        return 130
if __name__ == "__main__":
    sys.exit(main())
