"""The node's management commands (the reference's thwack commands, plus our STATUS).

`register_node_commands(server, control)` registers them on a `ManagementServer`. `control` is the
running node, seen through these members only:

    identifier: str
    is_provider: bool
    request_shutdown(reason: str) -> None      graceful halt, returns at once
    set_send_rate(n: int) -> None              per-minute client send rate, all listeners (stored
                                               on every node; only a provider has clients)
    set_send_burst(n: int) -> None             client token-bucket size, likewise
    status() -> dict                           JSON-able node state (fields: docs/operations.md)
    pipeline_counters() -> PipelineCounters
    user_commands: UserCommands | None         None on a mix
    profiler: Profiler | None                  PROFILE's recorder; None unless Debug.EnableProfiling

SEND_RATE and SEND_BURST answer `250 <n>` on every node: the value is stored (STATUS shows it)
and applies to client connections, which only a provider has. On a mix the user commands are
refused with `554 Transaction failed: not a provider`; the reference does not register them there
at all (500), which cannot tell a typo from a command sent to the wrong node.

PROFILE <seconds> is our extension (docs/operations.md): it starts a bounded sampling profile
(`server/profiler.py`) and answers `250 <path of the .folded file>` at once; the files appear in
the DataDir when the recording ends. Refused with 554 unless `[Debug] EnableProfiling = true`,
and while another recording runs; 501 for a missing or out-of-range duration.
"""
import inspect
import json
import logging
import re
from typing import Protocol

from katzenpost.server.management import REPLY_FAILED, ManagementFailure, ManagementSyntaxError
from katzenpost.server.profiler import MAX_SECONDS as PROFILE_MAX_SECONDS
from katzenpost.server.profiler import ProfileBusy

log = logging.getLogger("katzenpost.server.management")

SHUTDOWN_REASON = "user requested shutdown via mgmt interface"
USER_VERBS = ("ADD_USER", "UPDATE_USER", "REMOVE_USER", "SET_USER_IDENTITY", "REMOVE_USER_IDENTITY",
              "USER_IDENTITY", "USER_LINK")
NOT_A_PROVIDER = f"{REPLY_FAILED}: not a provider"
UINT64_MAX = 2 ** 64 - 1
_DECIMAL = re.compile(r"[0-9]+")


class UserCommands(Protocol):
    """The provider's user-database commands, implemented by the provider.

    `handle(fields)` gets the split command line (fields[0] is the verb as typed: ADD_USER,
    UPDATE_USER, REMOVE_USER, SET_USER_IDENTITY, REMOVE_USER_IDENTITY, USER_IDENTITY or
    USER_LINK, in any case) and returns the whole reply line without CRLF, e.g.
    `250 Requested action ok, completed` or `250 <base64 key>`. It may be a coroutine function.
    It raises `ManagementSyntaxError` for 501 (field count, key or user name invalid) and
    `ManagementFailure` for 554 (no such user, user exists, store error)."""

    def handle(self, fields: list[str]) -> str: ...


def register_node_commands(server, control) -> None:
    """SHUTDOWN, SEND_RATE, SEND_BURST, STATUS, PROFILE and the user commands (QUIT is built in)."""

    async def shutdown(fields):
        log.info("management: shutdown requested")
        control.request_shutdown(SHUTDOWN_REASON)
        return None              # no reply: the session closes when the node halts

    def rate_setter(verb, setter_name):
        async def handler(fields):
            n = parse_uint64(fields)
            await _maybe_await(getattr(control, setter_name)(n))
            log.info("management: %s set to %d", verb, n)
            return f"250 {n}"
        return handler

    async def status(fields):
        if len(fields) != 1:
            raise ManagementSyntaxError()
        state = await _maybe_await(control.status())
        return "250 " + json.dumps(state, separators=(",", ":"), sort_keys=True, default=str)

    async def user_command(fields):
        commands = control.user_commands
        if commands is None:
            raise ManagementFailure("not a provider")
        return await _maybe_await(commands.handle(fields))

    server.register("SHUTDOWN", shutdown)
    server.register("SEND_RATE", rate_setter("SEND_RATE", "set_send_rate"))
    server.register("SEND_BURST", rate_setter("SEND_BURST", "set_send_burst"))
    async def profile(fields):
        profiler = getattr(control, "profiler", None)
        if profiler is None:
            raise ManagementFailure("profiling is disabled (Debug.EnableProfiling)")
        seconds = parse_uint64(fields)
        if not 1 <= seconds <= PROFILE_MAX_SECONDS:
            raise ManagementSyntaxError()
        try:
            path = profiler.start(seconds)
        except ProfileBusy as exc:
            raise ManagementFailure(str(exc)) from None
        return f"250 {path}"

    server.register("STATUS", status)
    server.register("PROFILE", profile)
    for verb in USER_VERBS:
        server.register(verb, user_command)


def parse_uint64(fields: list[str]) -> int:
    """The one argument of `VERB <uint64>` as Go's strconv.ParseUint(s, 10, 64) reads it."""
    if len(fields) != 2 or not _DECIMAL.fullmatch(fields[1]):
        raise ManagementSyntaxError()
    digits = fields[1].lstrip("0") or "0"
    if len(digits) > 20:                  # also keeps int() far from its digit-count limit
        raise ManagementSyntaxError()
    value = int(digits)
    if value > UINT64_MAX:
        raise ManagementSyntaxError()
    return value


async def _maybe_await(value):
    if inspect.isawaitable(value):
        return await value
    return value

