"""The `katzenpost` command: load the config, prepare DataDir, logging and keys, then hand the
node over to the runtime (or stop after key generation with -g, or only validate with --check).

Startup steps 1, 2, 4 and 5 of the reference server (docs/interfaces.md) live here; the rest belongs to the runtime.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys

from katzenpost import config as config_module
from katzenpost import keys, log

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_LOAD_FAILED = 255  # as the reference: config load or construction failure
PROCESS_UMASK = 0o077
NODE_RUNTIME_MODULE = "katzenpost.server.node"

BANNER_PRE_ALPHA = ("Katzenpost is still pre-alpha.  DO NOT DEPEND ON IT FOR STRONG SECURITY "
                    "OR ANONYMITY.")

server_log = logging.getLogger("katzenpost.server")


class StartupError(Exception):
    """Construction failed (DataDir, log file, keys); printed as `Failed to spawn server instance`."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="katzenpost",
        description="Katzenpost mix server / provider (2021 protocol suite).",
        epilog="Signals: SIGINT/SIGTERM halt gracefully; SIGHUP reopens the log file.")
    parser.add_argument("-f", dest="config_file", metavar="PATH", default="katzenpost.toml",
                        help="path to the configuration file (default: katzenpost.toml)")
    parser.add_argument("-g", dest="generate_only", action="store_true",
                        help="create or load the identity and link keys, log them, and exit 0")
    parser.add_argument("--check", action="store_true",
                        help="validate the configuration (and an existing DataDir), print every "
                             "problem, exit 1 if there is any; changes nothing")
    return parser


class EarlySignals:
    """SIGINT/SIGTERM that arrive before the node's event loop takes them over.

    Without this, a signal during start-up (config, keys, imports) would end the process with a
    KeyboardInterrupt traceback, or kill it half-way through writing its key files. The signal is
    remembered instead, and the runtime halts as soon as it runs (exit 0, as for any signal)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: str | None = None

    def install(self) -> None:
        for signum in self.SIGNALS:
            # An ignored signal stays ignored (e.g. SIGINT of a background job of a script).
            if signal.getsignal(signum) is not signal.SIG_IGN:
                signal.signal(signum, self._record)

    def _record(self, signum, _frame) -> None:
        if self.received is None:
            self.received = signal.Signals(signum).name

    def __call__(self) -> str | None:
        return self.received


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.umask(PROCESS_UMASK)
    early_signals = EarlySignals()
    if not args.check:
        early_signals.install()
    if args.check:
        return check(args.config_file)
    try:
        # -g needs no authority key: nodes' keys come first (the authority whitelists them).
        node_config = config_module.load_file(args.config_file, keys_only=args.generate_only)
    except config_module.ConfigError as err:
        for problem in err.problems:
            print(f"Failed to load config file '{args.config_file}': {problem}", file=sys.stderr)
        return EXIT_LOAD_FAILED
    if args.generate_only:
        node_config = node_config.with_generate_only()
    try:
        identity_key, link_key = prepare_node(node_config)
    except StartupError as err:
        print(f"Failed to spawn server instance: {err}", file=sys.stderr)
        return EXIT_LOAD_FAILED
    if node_config.debug.generate_only:
        return EXIT_OK
    return hand_over_to_node(node_config, identity_key, link_key, early_signals)


def prepare_node(node_config) -> tuple[keys.IdentityKey, keys.LinkKey]:
    """DataDir, logging (with SIGHUP reopen), the start banner, then the identity and link keys."""
    try:
        keys.ensure_data_dir(node_config.server.data_dir)
    except keys.KeyFileError as err:
        raise StartupError(str(err)) from None
    try:
        log.setup_from_config(node_config)
    except OSError as err:
        raise StartupError(f"failed to open the log file '{node_config.log_file_path}': "
                           f"{err.strerror or err}") from None
    log.install_sighup_handler()
    log_start_banner(node_config)
    for warning in node_config.warnings:
        server_log.warning("%s", warning)
    identity_key = _identity_key(node_config)
    log.notice(server_log, "Server identity public key is: %s", keys.public_key_hex(identity_key.public))
    try:
        link_key, _ = keys.load_or_create_link_key(node_config.server.data_dir)
    except (keys.KeyFileError, OSError) as err:
        server_log.error("Failed to initialize link key: %s", err)
        raise StartupError(str(err)) from None
    log.notice(server_log, "Server link public key is: %s", keys.public_key_hex(link_key.public))
    for warning in keys.key_file_warnings(node_config.server.data_dir):
        server_log.warning("%s", warning)
    return identity_key, link_key


def _identity_key(node_config) -> keys.IdentityKey:
    if node_config.debug.identity_key is not None:
        server_log.warning("IdentityKey should NOT be used for production deployments.")
        return keys.IdentityKey.from_seed(node_config.debug.identity_key)
    try:
        identity_key, _ = keys.load_or_create_identity_key(node_config.server.data_dir)
    except (keys.KeyFileError, OSError) as err:
        server_log.error("Failed to initialize identity: %s", err)
        raise StartupError(str(err)) from None
    return identity_key


def log_start_banner(node_config) -> None:
    """The reference server's start banner up to the identifier line (README.md)."""
    log.notice(server_log, BANNER_PRE_ALPHA)
    if node_config.debug.is_unsafe:
        server_log.warning("Unsafe Debug configuration options are set.")
    if node_config.logging.level == "DEBUG":
        server_log.warning("Unsafe Debug logging is enabled.")
    accelerated, reason = aez_hardware_accelerated()
    if accelerated:
        log.notice(server_log, "AEZv5 implementation is hardware accelerated.")
    elif reason:
        server_log.warning("AEZv5 implementation is not available: %s", reason)
    else:
        server_log.warning("AEZv5 implementation IS NOT hardware accelerated.")
    backend, lanes = sphinx_x25519_backend()
    if backend is None:
        server_log.warning("Sphinx X25519 backend: unavailable (IFMA lanes: %s).", lanes)
    else:
        log.notice(server_log, "Sphinx X25519 backend: %s (IFMA lanes: %s).", backend, lanes)
    log.notice(server_log, "Server identifier is: '%s'", node_config.server.identifier)


def aez_hardware_accelerated() -> tuple[bool, str | None]:
    """(accelerated, why the AEZ core could not be loaded or None)."""
    try:
        from katzenpost.sphinx import aez
    except ImportError as err:  # a build without the compiled core
        return False, str(err)
    return bool(aez.HARDWARE_ACCELERATED), None


def sphinx_x25519_backend() -> tuple[str | None, str]:
    """(the X25519 backend Sphinx uses, IFMA lane status); (None, why) without the compiled core."""
    try:
        from katzenpost import sphinx
    except ImportError as err:  # a build without the compiled core
        return None, str(err)
    return sphinx.X25519_BACKEND, sphinx.IFMA_STATUS


def hand_over_to_node(node_config, identity_key: keys.IdentityKey, link_key: keys.LinkKey,
                      early_signal=None) -> int:
    """Startup steps 6 and later (docs/interfaces.md): `katzenpost.server.node.run(...)` -> exit code.
    Imported here, not at the top, so that -g and --check do not load the whole node."""
    node = importlib.import_module(NODE_RUNTIME_MODULE)
    return node.run(node_config, identity_key, link_key, early_signal=early_signal)


# ---------------------------------------------------------------------------------------------
# --check


def check(config_path: str) -> int:
    """Print every problem of the configuration and of an existing DataDir; change nothing."""
    try:
        node_config = config_module.load_file(config_path)
    except config_module.ConfigError as err:
        return _report_check(config_path, err.warnings, err.problems)
    problems = keys.check_data_dir(node_config.server.data_dir)
    warnings = (*node_config.warnings, *keys.key_file_warnings(node_config.server.data_dir))
    return _report_check(config_path, warnings, problems)


def _report_check(config_path: str, warnings, problems: list[str]) -> int:
    for warning in warnings:
        print(f"warning: {warning}")
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{config_path}: {len(problems)} problem(s)", file=sys.stderr)
        return EXIT_CHECK_FAILED
    print(f"{config_path}: configuration is valid")
    return EXIT_OK
