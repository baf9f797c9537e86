"""The CLI's startup steps in-process: Debug.IdentityKey with its warnings, the single hand-over
call to the node runtime, and the process umask."""
import logging
import os
import signal
import sys
import types

import pytest

from katzenpost import cli, config, keys, log

SEED = bytes(range(0x01, 0x21))


@pytest.fixture(autouse=True)
def restore_process_state():
    old_sighup = signal.getsignal(signal.SIGHUP)
    old_umask = os.umask(0o022)
    os.umask(old_umask)
    yield
    signal.signal(signal.SIGHUP, old_sighup)
    os.umask(old_umask)
    log.reset_logging()
    logging.getLogger().setLevel(logging.WARNING)


def node_config(tmp_path, extra: str = "") -> config.Config:
    return config.load_text(f"""
[Server]
Identifier = "mix1"
Addresses = ["127.0.0.1:30001"]
DataDir = "{tmp_path / 'data'}"
[PKI.Nonvoting]
Address = "127.0.0.1:30000"
PublicKey = "ebVWLo/mVPlAeLES6KmLp5AfhTrmlb7X4OORC60ElmQ="
{extra}
""")


def test_debug_identity_key_is_used_with_its_warnings_and_no_identity_files(tmp_path, caplog):
    cfg = node_config(tmp_path).with_debug_identity_key(SEED)
    with caplog.at_level(logging.DEBUG):
        identity, link = cli.prepare_node(cfg)
    assert identity == keys.IdentityKey.from_seed(SEED)
    messages = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "katzenpost.server"]
    assert ("WARNING", "Unsafe Debug configuration options are set.") in messages
    assert ("WARNING", "IdentityKey should NOT be used for production deployments.") in messages
    assert ("NOTICE", f"Server identity public key is: {identity.public.hex().upper()}") in messages
    data_dir = tmp_path / "data"
    assert sorted(os.listdir(data_dir)) == ["link.private.pem"]
    assert keys.load_link_key(str(data_dir)) == link
    assert SEED.hex() not in caplog.text and SEED.hex().upper() not in caplog.text


def test_config_warnings_are_logged_at_start(tmp_path, caplog):
    plain = node_config(tmp_path)
    cfg = node_config(tmp_path, "[Debug]\nSendSlack = 5\n")
    assert plain.warnings == () and cfg.warnings
    with caplog.at_level(logging.DEBUG):
        cli.prepare_node(cfg)
    assert any(r.levelname == "WARNING" and "Debug.SendSlack raised" in r.getMessage() for r in caplog.records)


def test_hand_over_is_one_call_to_the_node_runtime(tmp_path, monkeypatch):
    calls = []
    fake_node = types.ModuleType(cli.NODE_RUNTIME_MODULE)
    fake_node.run = (lambda cfg, identity, link, *, early_signal:
                     calls.append((cfg, identity, link, early_signal)) or 7)
    monkeypatch.setitem(sys.modules, cli.NODE_RUNTIME_MODULE, fake_node)
    cfg = node_config(tmp_path)
    identity, link = keys.IdentityKey.generate(), keys.LinkKey.generate()
    early = cli.EarlySignals()
    assert cli.hand_over_to_node(cfg, identity, link, early) == 7
    assert calls == [(cfg, identity, link, early)]


def test_main_sets_umask_0077(tmp_path):
    cfg_path = tmp_path / "k.toml"
    cfg_path.write_text("[Server]\n")
    os.umask(0)
    cli.main(["--check", "-f", str(cfg_path)])
    assert os.umask(0o022) == 0o077


def test_check_of_a_file_without_pki_reports_it(tmp_path, capsys):
    cfg_path = tmp_path / "k.toml"
    cfg_path.write_text('[Server]\nIdentifier = "a"\nAddresses = ["127.0.0.1:1"]\nDataDir = "/x"\n')
    assert cli.main(["--check", "-f", str(cfg_path)]) == 1
    assert "config: No PKI block was present" in capsys.readouterr().err


def test_epoch_period_makes_the_banner_warn_unsafe_and_explain(tmp_path, caplog):
    cfg = node_config(tmp_path, "[Debug]\nEpochPeriod = 60\n")
    with caplog.at_level(logging.DEBUG):
        cli.prepare_node(cfg)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "Unsafe Debug configuration options are set." in warnings
    assert any(w.startswith("Debug.EpochPeriod is 60 s: for test networks only") for w in warnings)

