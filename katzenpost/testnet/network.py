"""Bring a written network up and down: start the authority (or the voting authorities) and the
nodes, register the users over the providers' management sockets, wait for a document that lists
every node and for every node's links, connect the users' clients; restart a node or an
authority; stop everything. Every wait is bounded and checks that the processes are still alive."""
from __future__ import annotations

import asyncio
import os
import time

from katzenpost import keys
from katzenpost.client.session import Client, ClientError, ClientSettings
from katzenpost.pki.client import AuthorityClient, PKIClientError
from katzenpost.pki.epochtime import EpochClock
from katzenpost.pki.voting_client import VotingAuthority, VotingClient, verify_consensus
from katzenpost.testnet import monitor
from katzenpost.testnet.layout import AuthorityPlan, Plan
from katzenpost.testnet.ports import is_port_clash
from katzenpost.testnet.processes import ProcessError, Supervisor, authority_argv, node_argv, tail

AUTHORITY = "authority"           # the non-voting authority; voting ones are auth1 … authN
TIMEOUTS = dict(connect_timeout=3, handshake_timeout=3, response_timeout=5)


class NetworkError(Exception):
    """The network did not come up (or back) in time; the message says what is missing."""


class PortClash(ProcessError):
    """A process could not listen: another program took one of the plan's ports between its
    release and the process's bind. Starting again on new ports is the remedy."""


class Testnet:
    def __init__(self, plan: Plan, *, keep: bool = False, say=print):
        self.plan = plan
        self.clock = EpochClock(plan.epoch_period)
        self.say = say
        self.authority_names = [a.name for a in plan.authorities]
        self.supervisor = Supervisor(keep=keep, last=tuple(self.authority_names))
        for authority in plan.authorities:
            self.supervisor.add(authority.name, authority_argv(authority.config_path),
                                authority.data_dir, authority.log_path)
        for node in plan.nodes:
            self.supervisor.add(node.name, node_argv(node.config_path), node.data_dir, node.log_path)
        self.views = {n.name: monitor.NodeView(n.name, "provider" if n.is_provider else "mix")
                      for n in plan.nodes}
        self.management_paths = {n.name: n.management_path for n in plan.nodes}
        self.authority = (VotingClient([_voting_authority(a) for a in plan.authorities],
                                       clock=self.clock, **TIMEOUTS)
                          if plan.voting else
                          AuthorityClient("127.0.0.1", plan.authority_port,
                                          bytes.fromhex(plan.authority_key), clock=self.clock,
                                          **TIMEOUTS))

    # --- start -------------------------------------------------------------------------------

    async def start(self, timeout: float) -> None:
        """Everything up and linked within `timeout` seconds (NetworkError otherwise;
        PortClash when a process found its port taken)."""
        deadline = time.monotonic() + timeout
        try:
            await self._start_processes(deadline)
        finally:
            self._release_ports()
        self.plan.save()
        who = (f"{len(self.plan.authorities)} voting authorities" if self.plan.voting
               else "the authority")
        self.say(f"started {who}, 3 mixes and 2 providers; waiting for their management sockets")
        await self._until(deadline, self._all_managed, "every node's management socket")
        self._check_metrics_bound()
        for user in self.plan.users:
            provider = self.plan.provider(user.provider)
            await monitor.register_user(provider.management_path, user.name, user.link_key, user.identity_key)
        # A voting network's first consensus is for the epoch after the one the nodes posted in
        # before its P/2 vote, so they are all up by then and post for the epoch after it too:
        # the current document is enough. (The non-voting authority's next document needs
        # nodes that started before 3P/8 of the current epoch: both are waited for.)
        ahead = not self.plan.voting
        self.say("users registered; waiting for the documents of this epoch"
                 + (" and the next" if ahead else ""))
        await self._until(deadline, lambda: self._document_complete(ahead), "documents listing every node")
        self.say("document published; waiting for every node's links")
        await self._until(deadline, self._all_linked, "every node's outgoing links")

    async def _start_processes(self, deadline: float) -> None:
        """Each process starts right after its ports are released (see `ports.reserve`)."""
        for authority in self.plan.authorities:
            self._release_ports([authority.port])
            self.supervisor.start(authority.name)
        self.plan.pids = self.supervisor.pids()
        for authority in self.plan.authorities:
            await self._until(deadline, lambda a=authority: self._authority_listening(a),
                              f"{authority.name} to listen")
        for node in self.plan.nodes:
            self._release_ports([node.port, node.metrics_port])
            self.supervisor.start(node.name)
        self.plan.pids = self.supervisor.pids()

    def _release_ports(self, ports=None) -> None:
        if self.plan.reservation is not None:
            self.plan.reservation.release(ports)

    def _check(self) -> None:
        """ProcessError for a dead child; PortClash when it died because its port was taken."""
        try:
            self.supervisor.check()
        except ProcessError as err:
            if is_port_clash(str(err)):
                raise PortClash(str(err)) from None
            raise

    def _check_metrics_bound(self) -> None:
        """A node whose metrics port was taken runs on with metrics off (it only logs an
        error): at start-up that is a port clash like any other."""
        for node in self.plan.nodes:
            if "metrics: cannot listen" in tail(node.log_path, 20000):
                raise PortClash(f"{node.name}: metrics port {node.metrics_port} taken")

    async def _until(self, deadline: float, probe, what: str, interval: float = 0.25):
        while True:
            self._check()
            result = await probe()
            if result:
                return result
            if time.monotonic() >= deadline:
                raise NetworkError(f"timed out waiting for {what}")
            await asyncio.sleep(interval)

    async def _authority_listening(self, authority: AuthorityPlan) -> bool:
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", authority.port), 1)
        except (OSError, asyncio.TimeoutError):
            return False
        writer.close()
        return True

    async def _all_managed(self) -> bool:
        await monitor.poll_all(self.views, self.management_paths)
        return all(v.up for v in self.views.values())

    async def document(self, epoch: int | None = None):
        epoch = self.clock.current() if epoch is None else epoch
        return await self.authority.get_document(epoch)

    async def _document_complete(self, ahead: bool = True) -> bool:
        """The documents of this epoch and the next list every node. Both are needed: nodes
        that start late in an epoch miss the deadline to publish for the next one (3P/8 before
        it, as in the reference), the authority then makes no document for it, and during that
        epoch nothing is routed."""
        epoch = self.clock.current()
        try:
            docs = [await self.document(e) for e in ((epoch, epoch + 1) if ahead else (epoch,))]
        except PKIClientError:
            return False
        providers = {p.name for p in self.plan.providers}
        return all({d.name for d in doc.providers} == providers
                   and sum(len(layer) for layer in doc.topology) == len(self.plan.mixes) for doc in docs)

    async def _serves_current(self, authority: AuthorityPlan) -> bool:
        """`authority` itself serves the current epoch's document (a restarted voting authority
        has fetched it from its peers), accepted as the nodes accept it."""
        epoch = self.clock.current()
        if not self.plan.voting:
            return await self._document_complete(ahead=False)
        client = AuthorityClient("127.0.0.1", authority.port, bytes.fromhex(authority.identity_key),
                                 clock=self.clock, link_public=bytes.fromhex(authority.link_key),
                                 **TIMEOUTS)
        try:
            raw = await client.fetch_consensus(epoch)
            verify_consensus(raw, [bytes.fromhex(a.identity_key) for a in self.plan.authorities],
                             epoch, self.clock.unix_now())
        except PKIClientError:
            return False
        return True

    async def _all_linked(self) -> bool:
        await monitor.poll_all(self.views, self.management_paths)
        return all(v.up and v.peers_known > 0 and v.peers_up == v.peers_known for v in self.views.values())

    # --- clients -------------------------------------------------------------------------------

    def client_settings(self, user_name: str, **overrides) -> ClientSettings:
        user = next(u for u in self.plan.users if u.name == user_name)
        provider = self.plan.provider(user.provider)
        values = dict(user=user.name, link_key=keys.load_link_key(user.data_dir), provider=provider.name,
                      provider_key=bytes.fromhex(provider.identity_key), address=("127.0.0.1", provider.port),
                      authority_key=bytes.fromhex(self.plan.authority_key),
                      authority_keys=(tuple(bytes.fromhex(a.identity_key) for a in self.plan.authorities)
                                      if self.plan.voting else ()),
                      epoch_period=self.plan.epoch_period,
                      poll_interval=0.2, reply_slack=20.0)
        values.update(overrides)
        return ClientSettings(**values)

    async def connect_client(self, user_name: str, timeout: float, **kwargs) -> Client:
        """A started client of `user_name` (retried until its provider serves the document)."""
        deadline = time.monotonic() + timeout
        while True:
            self._check()
            client = Client(self.client_settings(user_name), **kwargs)
            try:
                await client.start()
                return client
            except ClientError as err:
                await client.close()
                if time.monotonic() >= deadline:
                    raise NetworkError(f"client {user_name} could not start: {err}") from None
                await asyncio.sleep(0.5)

    async def warm_up(self, clients: dict[str, Client], timeout: float, probe_wait: float = 3.0) -> int:
        """Until a loop request of every user, through the whole network to the other
        provider, has come back: links that are up may still refuse to carry packets for a
        while (a session opened before its peer's document was current is only re-checked at
        the next re-authentication). Returns the probes sent."""
        deadline = time.monotonic() + timeout
        probes = 0
        for user in self.plan.users:
            other = next(p.name for p in self.plan.providers if p.name != user.provider)
            while True:
                self.supervisor.check()
                probes += 1
                try:
                    pending = await clients[user.name].request("loop", other, b"")
                    # A late reply or its loss is nobody's business: consume the outcome.
                    pending.result.add_done_callback(lambda f: f.cancelled() or f.exception())
                    await asyncio.wait_for(asyncio.shield(pending.result), probe_wait)
                    break
                except (ClientError, asyncio.TimeoutError):
                    if time.monotonic() >= deadline:
                        raise NetworkError(f"no loop reply for {user.name} within {timeout:.0f} s: the "
                                           "network does not carry traffic") from None
        return probes

    # --- restarts and stop ---------------------------------------------------------------------

    async def restart(self, name: str, timeout: float = 60.0) -> float:
        """Stop `name` (a node or an authority) with SIGTERM, start it again, and wait until it
        is back in service; returns the seconds it took."""
        started = time.monotonic()
        await asyncio.get_running_loop().run_in_executor(None, self.supervisor.children[name].stop)
        self.supervisor.start(name)
        self.plan.pids = self.supervisor.pids()
        self.plan.save()
        deadline = started + timeout
        if name in self.authority_names:
            authority = self.plan.authority(name)
            await self._until(deadline, lambda: self._authority_listening(authority),
                              f"{name} to listen again")
            await self._until(deadline, lambda: self._serves_current(authority),
                              f"{name}'s document again")
        else:
            await self._until(deadline, self._all_managed, f"{name}'s management socket again")
            await self._until(deadline, self._all_linked, f"the links to and from {name} again")
        return time.monotonic() - started

    def stop(self) -> dict[str, int | None]:
        codes = self.supervisor.stop_all()
        self.plan.pids = {}
        self.plan.save()
        return codes


def _voting_authority(authority: AuthorityPlan) -> VotingAuthority:
    return VotingAuthority(bytes.fromhex(authority.identity_key), bytes.fromhex(authority.link_key),
                           (("127.0.0.1", authority.port),))


__all__ = ["Testnet", "NetworkError", "PortClash", "ProcessError", "AUTHORITY"]
