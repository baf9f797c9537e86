"""The mix node runtime: assembles the node after the CLI has loaded its config and keys, runs it
until a signal or a fatal error, and halts it (spec: Katzenpost mix server, start and halt order;
docs/node.md).

Start (continuing the CLI's steps 1-5): 6 mix keys, 7 management socket file, 8 PKI client,
9 provider (IsProvider), 10-11 scheduler and crypto workers (the pipeline), 12 connector,
13 decoy, 14 listeners, 15 PKI worker, 16 periodic tasks, 17 management and metrics listeners.
Halt, in the reference's order: periodic, management, decoy, listeners, connector, crypto workers,
provider, scheduler, PKI, mix keys. A failure after step 6 runs the full halt.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import importlib
import logging
import os
import signal
import time

from katzenpost import keys as keys_module
from katzenpost import log as kp_log
from katzenpost.config import check_ip_port, split_host_port
from katzenpost.pki.client import AuthorityClient, PKIClient
from katzenpost.pki.epochtime import EpochClock
from katzenpost.pki.voting_client import VotingAuthority, VotingClient
from katzenpost.pki.worker import NodeSelf, PKIWorker
from katzenpost.server.incoming import ListenerError, Listeners, ListenerSettings
from katzenpost.server.mixkeys import MixKeyError, MixKeys
from katzenpost.tasks import cancel_and_wait
from katzenpost.server.outgoing import Connector, ConnectorSettings
from katzenpost.server.counters import DropReason
from katzenpost.server.pipeline import Pipeline, PipelineSettings, in_flight_for

log = logging.getLogger("katzenpost.server")

EXIT_OK = 0
EXIT_FAILED = 1
REPLAY_SYNC_INTERVAL = 60.0     # seconds between replay-filter flushes to disk
CLOCK_CHECK_INTERVAL = 1.0      # the reference's periodic timer: warn on civil-clock jumps
CLOCK_JUMP_FORWARD = 2.0
WATCHDOG_INTERVAL = 1.0         # how often the pipeline's threads are checked
RATE_SAMPLE_INTERVAL = 1.0      # seconds between samples of the packet counters for STATUS rates
RATE_WINDOW_SAMPLES = 10        # STATUS rates cover about the last 10 s
BOUNDARY_MARGIN = 0.05         # re-check links this long after a PKI time boundary, not before it
EVENT_LOOP_ENV = "KATZENPOST_EVENT_LOOP"   # "uvloop" (default when installed) or "asyncio"


SELFTEST_SECONDS = 0.25         # the start-up capacity measurement
SELFTEST_BATCH = 16


@dataclasses.dataclass(frozen=True)
class UnwrapCapacity:
    """What the start-up self-test measured: one worker's unwrap rate and the node's estimate."""

    per_worker: float
    workers: int
    cores: int

    @property
    def packets_per_second(self) -> int:
        return int(self.per_worker * min(self.workers, self.cores))

    def describe(self) -> str:
        from katzenpost import sphinx
        backend = sphinx.X25519_BACKEND                 # why the lanes are off, when they are
        lanes = "" if backend == "ifma" else f"; AVX-512 IFMA lanes not used: {sphinx.IFMA_STATUS}"
        return (f"Sphinx self-test: unwraps ~{self.packets_per_second} packets/s with {self.workers} "
                f"workers ({self.per_worker:.0f}/s per worker, {self.cores} CPU cores, X25519 "
                f"backend {backend}{lanes})")


def measure_unwrap_capacity(workers: int, seconds: float = SELFTEST_SECONDS) -> UnwrapCapacity:
    """Time the production batch unwrap on real packets for a throw-away key (one thread)."""
    import numpy as np

    from katzenpost import sphinx
    from katzenpost.sphinx import batch as sphinx_batch

    key = os.urandom(32)
    hop = sphinx.PathHop(id=os.urandom(32), public_key=sphinx.public_key(key),
                         commands=[sphinx.NodeDelay(1)])
    last = sphinx.PathHop(id=os.urandom(32), public_key=sphinx.public_key(os.urandom(32)))
    payload = bytes(sphinx.geometry.FORWARD_PAYLOAD_LENGTH)
    original = np.frombuffer(b"".join(sphinx.new_packet([hop, last], payload)
                                      for _ in range(SELFTEST_BATCH)), np.uint8).reshape(SELFTEST_BATCH, -1)
    packets = original.copy()
    keys = sphinx_batch.keys_array([key])
    result = sphinx_batch.UnwrapBatch(SELFTEST_BATCH)
    done = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        packets[:] = original                   # unwrap works in place: start from the originals
        if sphinx_batch.unwrap_batch(packets, SELFTEST_BATCH, keys, result) != SELFTEST_BATCH:
            raise NodeStartError(f"Sphinx self-test failed: {result.message(0) or 'unwrap error'}")
        done += SELFTEST_BATCH
    elapsed = time.perf_counter() - started
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return UnwrapCapacity(done / elapsed, workers, cores)


class NodeStartError(Exception):
    """The node cannot start; the message is the ERROR line."""


def advertised_addresses(server_config) -> dict[str, list[str]]:
    """The descriptor's address map: Addresses by IP version, then AltAddresses (or only those
    with OnlyAdvertiseAltAddresses)."""
    result: dict[str, list[str]] = {}
    if not server_config.only_advertise_alt_addresses:
        for address in server_config.addresses:
            transport = "tcp4" if check_ip_port(address).version == 4 else "tcp6"
            result.setdefault(transport, []).append(address)
    for transport, addresses in server_config.alt_addresses.items():
        result.setdefault(transport, []).extend(addresses)
    return result


class Node:
    """One running mix. Also the `control` object of the management commands and metrics."""

    def __init__(self, config, identity_key, link_key) -> None:
        self.config = config
        self.identity_key = identity_key
        self.link_key = link_key
        self.identifier = config.server.identifier
        self.is_provider = config.server.is_provider
        self.user_commands = None                  # the provider's; None on a mix
        self.provider_role = None                  # ProviderRole on a provider
        self.clock = EpochClock(config.epoch_period)
        self.exit_code = EXIT_OK
        self.started_at = time.monotonic()
        self.mix_keys: MixKeys | None = None
        self.management = None
        self.profiler = None                       # PROFILE's recorder (Debug.EnableProfiling)
        self.metrics = None
        self.pki_client: PKIClient | None = None
        self.pipeline: Pipeline | None = None
        self.connector: Connector | None = None
        self.decoy = None
        self.listeners: Listeners | None = None
        self.pki: PKIWorker | None = None
        self.drop_reporter = None
        self.capacity: UnwrapCapacity | None = None
        self.worker_restarts = 0
        self.send_rate: int | None = None          # SEND_RATE / SEND_BURST from the operator
        self.send_burst: int | None = None
        self._periodic: list[asyncio.Task] = []
        self._clock_stepped = asyncio.Event()      # pulsed when the civil clock jumps
        self._shutdown: asyncio.Event | None = None
        self._halted = False
        self.early_signal = None                   # set by run(): a signal caught before the loop
        # (monotonic time, received, sent) samples taken by a periodic task; reading STATUS
        # never changes them, so a metrics scrape cannot distort what an operator sees.
        self._rate_samples = collections.deque([(time.monotonic(), 0, 0)],
                                               maxlen=RATE_WINDOW_SAMPLES)

    # --- run -------------------------------------------------------------------------------

    async def run(self) -> int:
        self._shutdown = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.request_shutdown, f"received {signal.Signals(signum).name}")
        loop.add_signal_handler(signal.SIGHUP, self._reopen_log)
        try:
            received = self.early_signal() if self.early_signal is not None else None
            if received is not None:
                kp_log.notice(log, "Received %s during start-up: not starting.", received)
                return self.exit_code
            try:
                await self.start()
            except NodeStartError as exc:
                log.error("%s", exc)
                self.exit_code = EXIT_FAILED
                return self.exit_code
            except Exception:
                log.exception("Failed to start the node")
                self.exit_code = EXIT_FAILED
                return self.exit_code
            await self._shutdown.wait()
            return self.exit_code
        finally:
            await self.halt()
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(signum)

    def request_shutdown(self, reason: str = "shutdown requested") -> None:
        """Begin the graceful halt (signals, the management SHUTDOWN, fatal errors)."""
        if self._shutdown is not None and not self._shutdown.is_set():
            log.info("Shutdown requested: %s", reason)
            self._shutdown.set()

    def fatal(self, reason: str) -> None:
        log.error("Shutting down due to error: %s", reason)
        self.exit_code = EXIT_FAILED
        self.request_shutdown(reason)

    def _reopen_log(self) -> None:
        """SIGHUP: reopen the log file, off the event loop; failing to is fatal (as in Go)."""
        async def reopen():
            try:
                await asyncio.to_thread(kp_log.reopen_log_file)
            except OSError as exc:
                log.error("%s: %s", kp_log.ROTATE_FAILURE_MESSAGE, exc)
                self.exit_code = EXIT_FAILED
                self.request_shutdown("log reopen failed")
            else:
                log.info("Log file reopened (SIGHUP)")
        self._periodic.append(asyncio.get_running_loop().create_task(reopen()))

    # --- start -----------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        # 6. Mix keys: load or create [now, now+2], purge stale ones.
        self.mix_keys = MixKeys(cfg.server.data_dir, self.clock, in_memory=cfg.debug.mix_keys_in_memory)
        try:
            self.mix_keys.start()
        except (MixKeyError, OSError) as exc:
            raise NodeStartError(f"Failed to initialize mix keys: {exc}") from None
        # From here on a failure runs the full halt (run()'s finally).
        self._prepare_management()                                  # 7
        self.pki_client = self._pki_client()                        # 8
        await self._start_provider()                                # 9
        await self._start_pipeline()                                # 10, 11
        self.connector = Connector(pki=None, pipeline=self.pipeline, link_key=self.link_key.private,
                                   identity_public=self.identity_key.public,
                                   settings=ConnectorSettings.from_config(cfg.debug, self.clock))  # 12
        self._start_decoy()                                         # 13
        self.pki = PKIWorker(self._node_self(), self.pki_client, self.mix_keys, self.clock,
                             on_new_documents=self._on_new_documents,
                             on_epoch_change=self._on_epoch_change,
                             on_mix_keys_changed=self.push_mix_keys)
        self.connector.pki = self.pki
        self.listeners = Listeners(cfg.server.addresses, link_key=self.link_key.private,
                                   identity_public=self.identity_key.public, pki=self.pki,
                                   pipeline=self.pipeline,
                                   settings=ListenerSettings.from_config(cfg.debug),
                                   clients=self.provider_role.provider if self.provider_role else None)
        try:
            await self.listeners.start()                            # 14
        except ListenerError as exc:
            raise NodeStartError(str(exc)) from None
        self.connector.start()
        self.pki.start()                                            # 15
        self._start_periodic()                                      # 16
        await self._start_management_and_metrics()                  # 17
        kp_log.notice(log, "Node started: %s", self.identifier)

    def _pki_client(self) -> PKIClient:
        """The client of the configured directory: one non-voting authority or a voting set."""
        pki = self.config.pki
        if pki.voting is not None:
            return VotingClient([VotingAuthority(p.identity_public_key, p.link_public_key,
                                                 tuple(split_host_port(a) for a in p.addresses))
                                 for p in pki.voting.peers], clock=self.clock)
        host, port = split_host_port(pki.nonvoting.address)
        return AuthorityClient(host, port, pki.nonvoting.public_key, clock=self.clock)

    def _prepare_management(self) -> None:
        path = self.config.management.path
        if path and (os.path.lexists(path)):
            log.warning("Warning: management socket file '%s' already exists, deleting it.", path)
            try:
                os.unlink(path)
            except OSError as exc:
                raise NodeStartError(f"cannot delete the management socket file '{path}': "
                                     f"{exc.strerror or exc}") from None
        if self.config.management.enable:
            from katzenpost.server.management import ManagementServer
            from katzenpost.server.node_commands import register_node_commands
            self.management = ManagementServer(path, self.identifier)
            if self.config.debug.enable_profiling:
                from katzenpost.server.profiler import Profiler
                self.profiler = Profiler(self.config.server.data_dir)
            register_node_commands(self.management, self)

    async def _start_provider(self) -> None:
        if not self.is_provider:
            return
        from katzenpost.server.provider_role import ProviderError, ProviderRole
        try:
            self.provider_role = ProviderRole(self)
            await self.provider_role.start()
        except ProviderError as exc:
            raise NodeStartError(str(exc)) from None
        self.user_commands = self.provider_role.provider.user_commands

    async def _start_pipeline(self) -> None:
        from katzenpost._core.wheel import TimerWheel
        from katzenpost.server.workers import SphinxUnwrapEngine

        settings = PipelineSettings.from_config(self.config.debug)
        settings.EpochPeriod = self.clock.period
        self.capacity = measure_unwrap_capacity(settings.normalized().NumSphinxWorkers)
        kp_log.notice(log, "%s", self.capacity.describe())
        if self.config.debug.sphinx_queue_packets <= 0:    # not configured: sized by the self-test
            settings.SphinxQueuePackets = in_flight_for(self.capacity.per_worker, settings.UnwrapDelay)
        log.info("SphinxQueuePackets: %d packets in flight per worker", settings.SphinxQueuePackets)
        self.pipeline = Pipeline(settings, engine=SphinxUnwrapEngine(), wheel_factory=TimerWheel,
                                 is_provider=self.is_provider, on_local=self._on_local)
        self._node_counters = self.pipeline.counters.stage("node")
        try:
            await self.pipeline.start()
        except Exception as exc:
            raise NodeStartError(f"Failed to start the packet pipeline: {exc}") from None
        self.push_mix_keys()
        if self.provider_role is not None:
            self.provider_role.attach(self.pipeline)

    def _start_decoy(self) -> None:
        if not self.config.debug.send_decoy_traffic or self.is_provider:
            return                  # providers ignore SendDecoyTraffic, as the reference
        from katzenpost.server.decoy import Decoy
        self.decoy = Decoy(identity_public=self.identity_key.public, pipeline=self.pipeline,
                           clock=self.clock, decoy_slack_ms=self.config.debug.decoy_slack)
        self.decoy.start()

    async def _start_management_and_metrics(self) -> None:
        if self.management is not None:
            try:
                await self.management.start()
            except OSError as exc:
                raise NodeStartError(f"Failed to start the management socket: {exc}") from None
        metrics_config = getattr(self.config, "metrics", None)
        if metrics_config is not None:
            from katzenpost.server.metrics import MetricsServer
            self.metrics = MetricsServer(metrics_config.address, self)
            try:
                await self.metrics.start()
            except OSError as exc:
                # As the reference: a busy metrics port does not stop the node.
                log.warning("Metrics endpoint not started on %s: %s", metrics_config.address, exc)
                self.metrics = None
        try:
            drop_report = importlib.import_module("katzenpost.server.drop_report")
        except ModuleNotFoundError:
            return
        provider_drops = (None if self.provider_role is None
                          else (lambda: self.provider_role.provider.drops))
        self.drop_reporter = drop_report.DropReporter(self.pipeline.counters, extra=provider_drops)
        self.drop_reporter.start()

    def _node_self(self) -> NodeSelf:
        return NodeSelf(identifier=self.identifier, identity_seed=self.identity_key.seed,
                        identity_public=self.identity_key.public, link_public=self.link_key.public,
                        addresses=advertised_addresses(self.config.server), is_provider=self.is_provider,
                        kaetzchen_for_pki=(self.provider_role.provider.kaetzchen_for_pki
                                           if self.provider_role is not None else None),
                        registration_http_addresses=self._registration_addresses())

    def _registration_addresses(self) -> list[str] | None:
        """The descriptor's registration addresses: AdvertiseUserRegistrationHTTPAddresses, when
        the provider's HTTP registration is on (as the reference)."""
        provider = self.config.provider
        if not self.is_provider or provider is None or not provider.enable_user_registration_http:
            return None
        return list(provider.advertise_user_registration_http_addresses)

    # --- periodic work ---------------------------------------------------------------------

    def _start_periodic(self) -> None:
        loop = asyncio.get_running_loop()
        for name, body in (("mix-key-rotation", self._rotate_keys_forever),
                           ("replay-sync", self._sync_replay_forever),
                           ("clock-watch", self._watch_clock_forever),
                           ("watchdog", self._watch_threads_forever),
                           ("link-reauthentication", self._reauthenticate_at_boundaries_forever),
                           ("rate-sampler", self._sample_rates_forever)):
            self._periodic.append(loop.create_task(body(), name=name))

    async def _rotate_keys_forever(self) -> None:
        """Re-push the candidate keys at every grace boundary and rollover."""
        while True:
            delay = self.mix_keys.seconds_to_next_change(self.clock.unix_now())
            await self._sleep_unless_clock_steps(delay + 0.001)
            self.push_mix_keys()

    async def _sleep_unless_clock_steps(self, seconds: float) -> None:
        """Sleep until a wall-clock boundary `seconds` away, computed now: cut short when the
        civil clock steps, since the boundary then lies elsewhere (a sleep on the monotonic clock
        would otherwise keep a stale key set or link verdict for up to an epoch)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._clock_stepped.wait()

    async def _sync_replay_forever(self) -> None:
        while True:
            await asyncio.sleep(REPLAY_SYNC_INTERVAL)
            try:
                await asyncio.to_thread(self.mix_keys.sync)
            except OSError as exc:
                self.fatal(f"replay filter sync failed: {exc}")

    async def _watch_clock_forever(self) -> None:
        last = time.time()
        while True:
            await asyncio.sleep(CLOCK_CHECK_INTERVAL)
            now = time.time()
            delta = now - last - CLOCK_CHECK_INTERVAL
            if now < last:
                log.warning("Civil time jumped backwards by %.3f s", last - now)
                self._on_clock_step()
            elif delta > CLOCK_JUMP_FORWARD:
                log.warning("Civil time jumped forward by %.3f s", delta)
                self._on_clock_step()
            last = now

    def _on_clock_step(self) -> None:
        """The keys tried and the peers' verdicts follow the civil clock: re-evaluate them now,
        and wake the tasks that sleep until its next boundary to recompute it."""
        self._clock_stepped.set()
        self._clock_stepped.clear()          # the waiting tasks are already woken
        self.push_mix_keys()
        self._reauthenticate_links()

    async def _sample_rates_forever(self) -> None:
        while True:
            await asyncio.sleep(RATE_SAMPLE_INTERVAL)
            self.sample_rates()

    def sample_rates(self, now: float | None = None) -> None:
        """Record the packet counters for the STATUS rates (the oldest sample falls out)."""
        if self.pipeline is None:
            return
        events = self.pipeline.counters.snapshot()["events"]
        self._rate_samples.append((time.monotonic() if now is None else now,
                                   events.get("received", 0), events.get("sent", 0)))

    def _packet_rates(self, now: float, received: int, sent: int) -> dict:
        """Packets per second in and out over the sample window, without changing any state."""
        first_t, first_in, first_out = self._rate_samples[0]
        elapsed = max(now - first_t, 1e-9)
        return {"in": round((received - first_in) / elapsed, 1),
                "out": round((sent - first_out) / elapsed, 1)}

    async def _reauthenticate_at_boundaries_forever(self) -> None:
        """Links are re-checked when the PKI's verdicts change by the clock alone (rollover,
        early-send window), not only every ReauthInterval: until then a peer that became
        usable would have its packets dropped."""
        while True:
            await self._sleep_unless_clock_steps(self.pki.till_verdicts_change() + BOUNDARY_MARGIN)
            self._reauthenticate_links()

    def _reauthenticate_links(self) -> None:
        self.connector.reauthenticate_soon()
        if self.listeners is not None:
            self.listeners.reauthenticate_soon()

    async def _watch_threads_forever(self) -> None:
        """A crypto worker thread that died is restarted (counted, logged); a scheduler thread
        that died cannot be, and the node halts rather than run half-alive."""
        while True:
            await asyncio.sleep(WATCHDOG_INTERVAL)
            scheduler, *workers = self.pipeline.threads()
            if scheduler is not None and not scheduler.is_alive():
                self.fatal(f"the scheduler thread {scheduler.name} died")
                return
            if all(w.is_alive() for w in workers):
                continue
            try:
                restarted = await self.pipeline.restart_dead_workers()
            except Exception as exc:
                self.fatal(f"a crashed crypto worker could not be restarted: {exc!r}")
                return
            self.worker_restarts += restarted
            log.error("Restarted %d crashed crypto worker thread(s) (%d in total)", restarted,
                      self.worker_restarts)
            self.push_mix_keys()

    # --- callbacks from the PKI worker and the pipeline ------------------------------------

    def push_mix_keys(self) -> None:
        """Hand the workers the keys valid now (also after every key rotation)."""
        keyset = self.mix_keys.keyset_at(self.clock.unix_now())
        if keyset is None:
            log.error("No mix key for the current epoch %d: packets are dropped", self.clock.current())
            return
        self.pipeline.set_mix_keys(keyset)

    def _on_new_documents(self) -> None:
        self.connector.update()
        self._reauthenticate_links()

    def _on_epoch_change(self, doc) -> None:
        self.pipeline.set_max_delay(doc.mu_max_delay)
        if self.provider_role is not None:
            self.provider_role.on_epoch_change(doc)
        if self.decoy is not None:
            self.decoy.on_new_document(doc)

    def _on_local(self, batch) -> None:
        """Terminal packets: a provider's go to its spool and Kaetzchen; SURB replies at a mix
        belong to the decoy loop (none: dropped)."""
        if self.provider_role is not None:
            self.provider_role.provider.on_local(batch)
        elif self.decoy is not None:
            self.decoy.on_local(batch)
        else:
            self._node_counters.drop(DropReason.TERMINAL_AT_MIX, len(batch))

    # --- halt ------------------------------------------------------------------------------

    async def halt(self) -> None:
        """The reference's halt order; every step tolerates a component that never started."""
        if self._halted:
            return
        self._halted = True
        kp_log.notice(log, "Starting graceful shutdown.")
        await cancel_and_wait(self._periodic, "periodic tasks")
        if self.drop_reporter is not None:
            await self._step("drop report", self.drop_reporter.stop)
        if self.metrics is not None:
            await self._step("metrics", self.metrics.stop)
        if self.management is not None:
            await self._step("management", self.management.stop)
        if self.profiler is not None:               # a running recording ends now, still written
            await self._step("profiler", lambda: asyncio.to_thread(self.profiler.stop))
        if self.decoy is not None:
            await self._step("decoy", self.decoy.stop)
        if self.listeners is not None:
            await self._step("listeners", self.listeners.stop)
        if self.connector is not None:
            await self._step("connector", self.connector.stop)
        if self.pipeline is not None:
            await self._step("crypto workers", self.pipeline.halt_crypto_workers)
        if self.provider_role is not None:
            await self._step("provider", self.provider_role.halt)
        if self.pipeline is not None:
            await self._step("scheduler", self.pipeline.halt_scheduler)
            self._log_drops()
        if self.pki is not None:
            await self._step("PKI worker", self.pki.stop)
        if self.mix_keys is not None:
            await self._step("mix keys", self.mix_keys.close)
        kp_log.notice(log, "Shutdown complete.")

    async def _step(self, name: str, action) -> None:
        try:
            result = action()
            if asyncio.iscoroutine(result):
                await result
        except Exception:
            log.exception("Halting the %s failed", name)

    def _log_drops(self) -> None:
        snapshot = self.pipeline.counters.snapshot()
        drops = {k: v for k, v in snapshot["drops"].items() if v}
        kp_log.notice(log, "Packets: %d received, %d sent, %d dropped %s",
                      snapshot["events"]["received"], snapshot["events"]["sent"],
                      sum(drops.values()), drops or "")

    # --- management and metrics (the `control` interface) ----------------------------------

    def set_send_rate(self, per_minute: int) -> None:
        """SEND_RATE, on every node (STATUS shows it); it applies to client connections, which
        only a provider has: each picks it up at its next re-authentication."""
        self.send_rate = per_minute
        if self.provider_role is not None:
            self.provider_role.provider.set_send_rate(per_minute)

    def set_send_burst(self, burst: int) -> None:
        """SEND_BURST, stored and applied like SEND_RATE."""
        self.send_burst = burst
        if self.provider_role is not None:
            self.provider_role.provider.set_send_burst(burst)

    def pipeline_counters(self):
        return self.pipeline.counters

    def status(self) -> dict:
        from katzenpost import sphinx

        snapshot = self.pipeline.counters.snapshot() if self.pipeline is not None else None
        events = snapshot["events"] if snapshot else {}
        now = time.monotonic()
        received, sent = events.get("received", 0), events.get("sent", 0)
        connector = self.connector.status() if self.connector is not None else {"up": [], "down": []}
        conn_totals = [c.connects for c in (self.connector.connections.values() if self.connector else ())]
        status = {
            "identifier": self.identifier,
            "is_provider": self.is_provider,
            "epoch": self.clock.current(),
            "uptime_seconds": round(now - self.started_at, 3),
            "peers": {"up": len(connector["up"]), "down": len(connector["down"]),
                      "known": len(connector["up"]) + len(connector["down"]),
                      "up_names": connector["up"], "down_names": connector["down"]},
            "connections": {"incoming": len(self.listeners.connections) if self.listeners else 0,
                            "outgoing": len(connector["up"])},
            "connection_totals": {"outgoing": sum(conn_totals)},
            "queues": self._queue_depths(),
            "packets_per_second": self._packet_rates(now, received, sent),
            "packets": {"received": received, "sent": sent},
            "drops": {k: v for k, v in (snapshot["drops"].items() if snapshot else ()) if v},
            "mix_keys": sorted(self.mix_keys.keys) if self.mix_keys is not None else [],
            "mix_keys_in_memory": self.config.debug.mix_keys_in_memory,
            "x25519_backend": sphinx.X25519_BACKEND,
            "unwrap_capacity_pps": self.capacity.packets_per_second if self.capacity else None,
            "worker_restarts": self.worker_restarts,
            "send_rate": self.send_rate,
            "send_burst": self.send_burst,
            "listener_refused": self.listeners.refused if self.listeners else 0,
            "provider": self.provider_role.status() if self.provider_role is not None else None,
        }
        if self.decoy is not None:                  # only a mix with SendDecoyTraffic has one
            status["decoy"] = self.decoy.counters()
        return status

    def _queue_depths(self) -> dict:
        if self.pipeline is None:
            return {}
        depths = self.pipeline.queue_depths()
        return {"outgoing": sum(depths.get("outgoing", {}).values()),
                "ingress_open_batch": depths.get("ingress_open_batch", 0),
                "crypto_in_flight": depths.get("crypto_in_flight", 0),
                "scheduler": depths.get("scheduler", 0)}


# --- entry point ---------------------------------------------------------------------------

def _loop_factory():
    """uvloop unless KATZENPOST_EVENT_LOOP=asyncio or it is not installed (docs/node.md)."""
    choice = os.environ.get(EVENT_LOOP_ENV, "uvloop").strip().lower()
    if choice == "asyncio":
        return None, "asyncio"
    try:
        import uvloop
    except ImportError:
        return None, "asyncio"
    return uvloop.new_event_loop, "uvloop"


def run(config, identity_key: keys_module.IdentityKey, link_key: keys_module.LinkKey, *,
        early_signal=None) -> int:
    """Run the node until SIGINT/SIGTERM (exit 0) or a start failure or fatal error (exit 1).

    `early_signal()`: the name of a SIGINT/SIGTERM the CLI caught before the event loop ran, or
    None; such a node halts before it starts anything."""
    factory, name = _loop_factory()
    log.info("Event loop: %s", name)
    node = Node(config, identity_key, link_key)
    node.early_signal = early_signal
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(node.run())
