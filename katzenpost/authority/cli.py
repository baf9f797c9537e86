"""`katzenpost-authority -f authority.toml [-g]`: the directory authority daemon, non-voting or
voting (a config with `[[Authorities]]`, the other voting authorities).

Loads the config, prepares DataDir and keys, restores persisted state and serves until SIGINT
or SIGTERM. `-g` only generates (or loads) the keys and exits 0: the identity key, and for a
voting authority also its separate link key.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from katzenpost import keys
from katzenpost import log as kp_log
from katzenpost.authority.daemon import AuthorityServer
from katzenpost.authority.config import AuthorityConfigError, check_not_a_peer, load
from katzenpost.authority.state import AuthorityState
from katzenpost.authority.store import AuthorityStore, StoreError
from katzenpost.pki.epochtime import EpochClock

EXIT_FAILURE = 255
log = logging.getLogger("katzenpost.authority")


def _parse_args(argv):
    parser = argparse.ArgumentParser(prog="katzenpost-authority",
                                     description="Katzenpost directory authority (non-voting, or "
                                                 "voting with [[Authorities]] in the config)")
    parser.add_argument("-f", dest="config", default="authority.toml",
                        help="path to the authority TOML configuration")
    parser.add_argument("-g", dest="generate_only", action="store_true",
                        help="generate the keys in DataDir and exit")
    return parser.parse_args(argv)


def _setup_logging(cfg) -> None:
    file_path = cfg.logging.file or None
    if file_path and not os.path.isabs(file_path):
        file_path = os.path.join(cfg.data_dir, file_path)
    kp_log.setup_logging(level=cfg.logging.level, file_path=file_path,
                         disable=cfg.logging.disable, stream=sys.stdout)


def _build(cfg, identity: keys.IdentityKey, link: keys.LinkKey | None, clock: EpochClock):
    """(store, server) of the configured form; the voting one is imported only when used."""
    if not cfg.is_voting:
        store = AuthorityStore.open_in(cfg.data_dir)
        state = AuthorityState(cfg, identity.seed, identity.public, store, clock)
        state.restore(clock.unix_now())
        return store, AuthorityServer(state, identity.seed, identity.public,
                                      identity.to_x25519_private())
    from katzenpost.authority.voting.server import VotingServer
    from katzenpost.authority.voting.state import VotingState
    from katzenpost.authority.voting.store import VotingStore
    store = VotingStore.open_in(cfg.data_dir)
    state = VotingState(cfg, identity.seed, identity.public, store, clock)
    state.restore(clock.unix_now())
    return store, VotingServer(state, identity.seed, identity.public, link.private)


async def _serve(cfg, identity: keys.IdentityKey, link: keys.LinkKey | None = None) -> int:
    clock = EpochClock(period=cfg.epoch_period)
    if clock.is_warped:
        log.warning("Test network: the epoch period is %d s instead of 20 minutes", clock.period)
    store, server = _build(cfg, identity, link, clock)
    await server.start(cfg.listen_addresses())
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, server.request_stop)
    await server.wait_stopped()
    log.log(kp_log.NOTICE, "Shutting down")
    await server.stop()
    store.close()
    return EXIT_FAILURE if server.fatal_error is not None else 0


class _LogRotation:
    """A log file that cannot be reopened on SIGHUP is fatal: the error is kept for the exit
    status and stderr, and the daemon takes its graceful stop path (SIGTERM to itself)."""

    def __init__(self):
        self.error: BaseException | None = None

    def failed(self, err: BaseException) -> None:
        self.error = err
        os.kill(os.getpid(), signal.SIGTERM)


def _announce_keys(cfg, identity: keys.IdentityKey, link: keys.LinkKey | None,
                   generate_only: bool) -> None:
    """Log the public keys nodes need; with -g also print them when the log is not on stdout,
    so the operator sees what to note. A voting authority's -g also prints the
    `[[Authorities]]` entry its peers need."""
    link_public = link.public if link is not None else identity.to_x25519_public()
    lines = [f"Authority identity public key is: {keys.public_key_base64(identity.public)}",
             f"Authority link public key is: {keys.public_key_base64(link_public)}"]
    for line in lines:
        log.log(kp_log.NOTICE, "%s", line)
    if generate_only and (cfg.logging.file or cfg.logging.disable):
        print("\n".join(lines))
    if generate_only and link is not None:
        print(peer_entry(cfg, identity.public, link.public))


def peer_entry(cfg, identity_public: bytes, link_public: bytes) -> str:
    """This authority as its peers list it: the `[[Authorities]]` table of their configs (and,
    with `Peers` for `Authorities`, a node's `[[PKI.Voting.Peers]]`)."""
    addresses = ", ".join(f'"{a}"' for a in cfg.addresses)
    return (f"[[Authorities]]\n"
            f'IdentityPublicKey = "{keys.public_key_base64(identity_public)}"\n'
            f'LinkPublicKey = "{keys.public_key_base64(link_public)}"\n'
            f"Addresses = [{addresses}]")


def main(argv=None) -> int:
    args = _parse_args(argv)
    try:
        cfg = load(args.config, keys_only=args.generate_only)
    except AuthorityConfigError as exc:
        for problem in exc.problems:  # one line each, as the node reports them
            print(f"Failed to load config file '{args.config}': {problem}", file=sys.stderr)
        return EXIT_FAILURE
    rotation = _LogRotation()
    try:
        os.umask(0o077)
        keys.ensure_data_dir(cfg.data_dir)
        _setup_logging(cfg)
        kp_log.install_sighup_handler(rotation.failed)
        identity, created = keys.load_or_create_identity_key(cfg.data_dir)
        link, link_created = (keys.load_or_create_link_key(cfg.data_dir) if cfg.is_voting
                              else (None, False))
    except (keys.KeyFileError, OSError) as exc:
        print(f"Failed to spawn authority instance: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if created:
        log.log(kp_log.NOTICE, "Generated a new identity key in %s", cfg.data_dir)
    if link_created:
        log.log(kp_log.NOTICE, "Generated a new link key in %s", cfg.data_dir)
    for problem in check_not_a_peer(cfg, identity.public):
        print(f"Failed to load config file '{args.config}': {problem}", file=sys.stderr)
        return EXIT_FAILURE
    generate_only = args.generate_only or cfg.debug.generate_only
    _announce_keys(cfg, identity, link, generate_only)
    for warning in keys.key_file_warnings(cfg.data_dir):
        log.warning("%s", warning)
    if generate_only:
        return 0
    try:
        status = asyncio.run(_serve(cfg, identity, link))
    except (StoreError, OSError) as exc:
        log.error("Authority failed: %s", exc)
        print(f"Failed to spawn authority instance: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if rotation.error is not None:
        print(f"Authority stopped: cannot reopen the log file on SIGHUP: {rotation.error}",
              file=sys.stderr)
        return EXIT_FAILURE
    return status


if __name__ == "__main__":
    sys.exit(main())
