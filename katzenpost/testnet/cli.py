"""`katzenpost-testnet`: write, start and drive a whole test network, show it live, report.

    katzenpost-testnet [--duration S] [--rate N] [--epoch-period S] [--authorities N] [--dir DIR]
                       [--keep] [--postgres DSN] [--restart NAME@S ...] [--plain]
    katzenpost-testnet --stop --dir DIR

Exit status: 0 when nothing was lost or failed and every acknowledged message reached its
recipient; 1 otherwise or when the network did not come up; 2 for bad options; 130 when
interrupted (the network is stopped all the same).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time

from rich.console import Console
from rich.live import Live

from katzenpost.client.cli import number_arg
from katzenpost.client.load import TrafficStats, run_load
from katzenpost.rules import MIN_TEST_PERIOD
from katzenpost.testnet import driver as traffic
from katzenpost.testnet import layout, monitor, view
from katzenpost.testnet.network import AUTHORITY, NetworkError, PortClash, ProcessError, Testnet
from katzenpost.testnet.ports import PortError
from katzenpost.testnet.processes import running, stop_pids

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
REPLY_SLACK = 20.0          # seconds past a reply's ETA before it counts as lost
PLAIN_EVERY = 5.0           # seconds between progress lines without a terminal
RETRIEVE_GRACE = 10.0       # seconds for acknowledged messages to reach their recipients


def _restart_spec(text: str) -> tuple[str, float]:
    name, _, at = text.partition("@")
    try:
        seconds = float(at)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}': expected NAME@SECONDS, e.g. mix2@10") from None
    names = {*(f"mix{i}" for i in range(1, layout.LAYERS + 1)), *layout.PROVIDERS,
             *layout.authority_names(1), *layout.authority_names(layout.MAX_AUTHORITIES)}
    if name not in names or seconds < 0:
        raise argparse.ArgumentTypeError(f"'{text}': NAME is a mix (mix1…mix{layout.LAYERS}), a provider "
                                         f"({', '.join(layout.PROVIDERS)}), {AUTHORITY} or, with "
                                         "--authorities N, auth1…authN; SECONDS >= 0")
    return name, seconds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="katzenpost-testnet", description="A local Katzenpost "
                                     "network (authority or voting authorities, 3 mix layers, "
                                     "2 providers) with live traffic.")
    parser.add_argument("--duration", type=number_arg(float, 1, 86400), default=30.0,
                        help="seconds of client traffic (default 30)")
    parser.add_argument("--rate", type=number_arg(float, 0.1, 1000), default=5.0,
                        help="client packets per second, all users together (default 5)")
    parser.add_argument("--epoch-period", type=number_arg(int, MIN_TEST_PERIOD, 1200), default=20,
                        help="epoch period in seconds ([Debug] EpochPeriod; default 20, so a run "
                             "crosses epoch rollovers)")
    parser.add_argument("--authorities", type=number_arg(int, 1, layout.MAX_AUTHORITIES), default=1,
                        help="1: one non-voting authority (default); 3 or more: that many voting "
                             "authorities (auth1 … authN), the nodes trusting a majority of them")
    parser.add_argument("--dir", help="directory for keys, configurations, logs and the report "
                                      "(default: a new temporary one, removed after a clean run)")
    parser.add_argument("--keep", action="store_true", help="leave the network running after the "
                        "report and print how to talk to it")
    parser.add_argument("--stop", action="store_true", help="stop a network kept in --dir")
    parser.add_argument("--postgres", metavar="DSN", help="providers on PostgreSQL (a schema each "
                        "in this database)")
    parser.add_argument("--restart", type=_restart_spec, action="append", default=[], metavar="NAME@S",
                        help="restart a node or an authority S seconds into the traffic (repeatable)")
    parser.add_argument("--strict-timing", action="store_true", help="the reference's 10 ms "
                        "UnwrapDelay and SchedulerSlack (the testnet allows 1 s: its nodes share the CPU)")
    parser.add_argument("--plain", action="store_true", help="progress lines instead of the live table")
    parser.add_argument("--log-level", default="NOTICE", choices=("ERROR", "WARNING", "NOTICE", "INFO", "DEBUG"),
                        help="the nodes' log level (logs are in each node's directory)")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options, with the checks that involve more than one of them (exit 2 on a problem)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    problem = layout.authority_count_problem(args.authorities)
    if problem:
        parser.error(f"--authorities {args.authorities}: {problem}")
    names = set(layout.authority_names(args.authorities))
    for name, _ in args.restart:
        if name.startswith("auth") and name not in names:
            parser.error(f"--restart {name}: this network's authorities are {', '.join(sorted(names))}")
    return args


class Run:
    """One run of the network: start, traffic, report, stop."""

    def __init__(self, plan: layout.Plan, args, console: Console, replan=None):
        self.args, self.console = args, console
        self.replan = replan          # () -> a new Plan of the same network on new ports
        self.stats = TrafficStats()
        self._use(plan)
        self.stop = asyncio.Event()
        self.epochs: list[int] = []
        self.restarts: list[dict] = []
        self.started = None

    def _use(self, plan: layout.Plan) -> None:
        self.plan = plan
        self.net = Testnet(plan, keep=self.args.keep, say=self.say)
        self.driver = traffic.TrafficDriver(plan, self.stats)

    def say(self, text: str) -> None:
        self.console.print(f"testnet: {text}", highlight=False)

    async def start_network(self, timeout: float) -> None:
        """Start the network; if a process found one of its ports taken in the instant between
        the reservation's release and its own bind, stop everything and start once more on
        new ports (a start-up retry on a detected collision, nothing else)."""
        try:
            await self.interruptible(self.net.start(timeout=timeout))
            return
        except PortClash as err:
            if self.replan is None:
                raise
            first_line = str(err).splitlines()[0]
            self.say(f"a port was taken by another program ({first_line}); starting again on new ports")
        await asyncio.get_running_loop().run_in_executor(None, self.net.stop)
        self._use(self.replan())
        await self.interruptible(self.net.start(timeout=timeout))

    async def interruptible(self, coro):
        """Run `coro` unless a stop signal comes first (then it is cancelled, KeyboardInterrupt)."""
        task = asyncio.ensure_future(coro)
        stopper = asyncio.ensure_future(self.stop.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise KeyboardInterrupt
        return task.result()

    async def main(self) -> int:
        startup = 3 * self.plan.epoch_period + 60
        await self.start_network(startup)
        for user in self.plan.users:
            client = await self.interruptible(self.net.connect_client(
                user.name, startup, on_message=self.driver.on_message(user.name)))
            self.driver.clients[user.name] = client
        probes = await self.interruptible(self.net.warm_up(self.driver.clients, startup))
        if probes > len(self.plan.users):
            self.say(f"the network carried traffic after {probes} probes")
        self.say(f"traffic: {self.args.rate:g} packets/s for {self.args.duration:g} s "
                 f"(epoch period {self.plan.epoch_period} s)")
        await monitor.poll_all(self.net.views, self.net.management_paths)
        for node in self.net.views.values():
            node.mark_baseline()          # the report counts the drops during the traffic
        self.started = time.monotonic()
        side = [asyncio.ensure_future(self.watch())]
        side += [asyncio.ensure_future(self.restart_later(name, at)) for name, at in self.args.restart]
        try:
            await run_load(self.driver.send_one, rate=self.args.rate, duration=self.args.duration,
                           stats=self.stats, reply_slack=REPLY_SLACK, stop=self.stop,
                           prepare=self.driver.prepare)
            if not self.stop.is_set():
                await self.interruptible(self.driver.wait_retrieved(RETRIEVE_GRACE))
        finally:
            for task in side:
                task.cancel()
            await asyncio.gather(*side, return_exceptions=True)
        await monitor.poll_all(self.net.views, self.net.management_paths)
        return EXIT_INTERRUPTED if self.stop.is_set() else EXIT_OK

    async def restart_later(self, name: str, at: float) -> None:
        await asyncio.sleep(at)
        self.say(f"restarting {name}")
        at_time = time.monotonic() - self.started
        try:
            took = await self.net.restart(name)
        except (NetworkError, ProcessError) as err:
            self.restarts.append({"name": name, "at": at_time, "took": -1.0, "error": str(err)[:500]})
            self.say(f"{name} did not come back: {err}")
            return
        self.restarts.append({"name": name, "at": at_time, "took": took, "back_at": time.monotonic()})
        self.say(f"{name} is back after {took:.1f} s")

    async def watch(self) -> None:
        """Poll the nodes every second; redraw the live view (or print a line now and then)."""
        live = None
        if self.console.is_terminal and not self.args.plain:
            live = Live(console=self.console, refresh_per_second=2, transient=False)
            live.start()
        last_line = 0.0
        try:
            while True:
                epoch = self.net.clock.current()
                if not self.epochs or self.epochs[-1] != epoch:
                    self.epochs.append(epoch)
                await monitor.poll_all(self.net.views, self.net.management_paths)
                elapsed = time.monotonic() - self.started
                if live is not None:
                    header = (f"katzenpost-testnet  {elapsed:4.0f}/{self.args.duration:g} s  epoch {epoch}  "
                              f"(Ctrl-C stops)  {self.plan.root}")
                    live.update(view.live_view(self.stats, self.net.views, header))
                elif elapsed - last_line >= PLAIN_EVERY:
                    last_line = elapsed
                    self.console.print(view.progress_line(self.stats, self.net.views, elapsed), highlight=False)
                await asyncio.sleep(1.0)
        finally:
            if live is not None:
                live.stop()

    def report(self) -> dict:
        for restart in self.restarts:   # traffic resumed? (replies after the node was back)
            if "back_at" in restart:
                restart["delivered_after"] = self.stats.delivered_since(restart.pop("back_at"))
        settings = {"duration": self.args.duration, "rate": self.args.rate,
                    "epoch_period": self.plan.epoch_period, "postgres": bool(self.args.postgres),
                    "strict_timing": self.args.strict_timing,
                    "authorities": len(self.plan.authorities), "dir": self.plan.root}
        return view.report_dict(self.stats, self.net.views, settings=settings, epochs=self.epochs,
                                restarts=self.restarts, acked=len(self.driver.acked),
                                acked_not_retrieved=len(self.driver.acked_not_retrieved()),
                                duplicates=self.driver.duplicates, errors=self.stats.errors)

    async def close_clients(self) -> None:
        await asyncio.gather(*(c.close() for c in self.driver.clients.values()), return_exceptions=True)


def _clean_run(report: dict) -> bool:
    total = report["total"]
    return (total["lost"] == 0 and total["failed"] == 0 and total["pending"] == 0
            and total["sent"] > 0 and report["messages"]["acknowledged_not_retrieved"] == 0)


def _command(script: str, module: str) -> str:
    """How to run one of our console scripts from here (the venv's, which may not be on PATH)."""
    path = os.path.join(os.path.dirname(sys.executable), script)
    return path if os.access(path, os.X_OK) else f"{sys.executable} -m {module}"


def keep_instructions(plan: layout.Plan) -> str:
    lines = ["== the network keeps running", f"directory: {plan.root}"]
    for authority in plan.authorities:
        lines.append(f"{authority.name:<10} {authority.address}, identity key {authority.identity_key}"
                     + (f", link key {authority.link_key}" if authority.link_key else ""))
    for node in plan.nodes:
        lines.append(f"{node.name:<10} 127.0.0.1:{node.port}  management: socat - UNIX-CONNECT:"
                     f"{node.management_path}  metrics: http://127.0.0.1:{node.metrics_port}/metrics")
    for user in plan.users:
        peer = next(u for u in plan.users if u.name != user.name)
        client = f"{_command('katzenpost-client', 'katzenpost.client.cli')} -c {user.client_config}"
        lines += [f"{user.name}@{user.provider}:",
                  f"  {client} send {peer.name}@{peer.provider} 'hello'",
                  f"  {client} retrieve",
                  f"  {client} ping +echo",
                  f"  {client} keyserver {peer.name}@{peer.provider}"]
    lines.append(f"stop it: {_command('katzenpost-testnet', 'katzenpost.testnet.cli')} --stop --dir {plan.root}")
    return "\n".join(lines)


def stop_kept(root: str) -> int:
    try:
        plan = layout.Plan.load(root)
    except layout.LayoutError as err:
        print(f"katzenpost-testnet: {err}", file=sys.stderr)
        return EXIT_USAGE
    stopped = stop_pids(plan.pids, plan.root)
    _drop_postgres(plan)
    plan.pids = {}
    plan.save()
    print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
    return EXIT_OK


def _drop_postgres(plan: layout.Plan) -> None:
    if not plan.postgres_schemas:
        return
    from katzenpost.testnet.postgres import drop_schemas
    try:
        drop_schemas(plan.postgres_dsn, plan.postgres_schemas)
        plan.postgres_schemas = []
    except Exception as err:   # the network is down either way; say what is left behind
        print(f"katzenpost-testnet: could not drop the PostgreSQL schemas "
              f"{', '.join(plan.postgres_schemas)}: {err}", file=sys.stderr)


def _prepare(args) -> tuple[layout.Plan, object]:
    """The network written to its directory, and a function that writes it again (same keys and
    settings) on newly reserved ports."""
    root = os.path.abspath(args.dir) if args.dir else tempfile.mkdtemp(prefix="katzenpost-testnet-")
    if args.dir and os.path.exists(os.path.join(root, layout.PLAN_FILE)):
        old = layout.Plan.load(root)
        if running(old.pids, old.root):
            raise layout.LayoutError(f"a network is still running in {root}: "
                                     f"katzenpost-testnet --stop --dir {root}")
    sql, schemas = None, {}
    if args.postgres:
        from katzenpost.testnet.postgres import PostgresSetupError, create_schemas
        try:
            schemas = create_schemas(args.postgres, layout.PROVIDERS)
        except PostgresSetupError as err:
            raise layout.LayoutError(str(err)) from None
        sql = {name: dsn for name, (_, dsn) in schemas.items()}

    def write() -> layout.Plan:
        plan = layout.write_network(root, epoch_period=args.epoch_period, log_level=args.log_level,
                                    provider_sql=sql, strict_timing=args.strict_timing,
                                    authorities=args.authorities)
        if schemas:
            plan.postgres_dsn = args.postgres
            plan.postgres_schemas = [schema for schema, _ in schemas.values()]
            plan.save()
        return plan

    return write(), write


async def _run(plan: layout.Plan, args, console: Console, replan=None) -> tuple[int, layout.Plan]:
    run = Run(plan, args, console, replan)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, run.stop.set)
    code = EXIT_FAILED
    try:
        code = await run.main()
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except (NetworkError, ProcessError, PortError, layout.LayoutError) as err:
        console.print(f"testnet: the network failed: {err}", highlight=False, markup=False)
    finally:
        await run.close_clients()
        plan = run.plan
        if plan.reservation is not None:     # a start that failed before its processes
            plan.reservation.release()
        report = run.report()
        _write_report(plan, report)
        if run.started is not None:
            console.print(view.report_text(report), highlight=False, markup=False)
        if code == EXIT_OK and not _clean_run(report):
            code = EXIT_FAILED
        if args.keep and code in (EXIT_OK, EXIT_FAILED) and run.started is not None:
            console.print(keep_instructions(plan), highlight=False, markup=False)
        else:
            console.print("testnet: stopping every process", highlight=False)
            await loop.run_in_executor(None, run.net.stop)
            _drop_postgres(plan)
            plan.save()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return code, plan


def _write_report(plan: layout.Plan, report: dict) -> None:
    path = os.path.join(plan.root, "report.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=1, sort_keys=True)
        f.write("\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(levelname).4s %(name)s: %(message)s")
    if args.stop:
        if not args.dir:
            print("katzenpost-testnet: --stop needs --dir", file=sys.stderr)
            return EXIT_USAGE
        return stop_kept(args.dir)
    console = Console(soft_wrap=True)
    try:
        plan, replan = _prepare(args)
    except (layout.LayoutError, PortError) as err:
        print(f"katzenpost-testnet: {err}", file=sys.stderr)
        return EXIT_FAILED
    console.print(f"testnet: network written to {plan.root}", highlight=False)
    code, plan = asyncio.run(_run(plan, args, console, replan))
    if code == EXIT_OK and not args.dir and not args.keep:
        shutil.rmtree(plan.root, ignore_errors=True)
    elif not args.keep or code != EXIT_OK:
        console.print(f"testnet: logs and report.json are in {plan.root}", highlight=False)
    return code


if __name__ == "__main__":
    sys.exit(main())
