"""Authority configuration: defaults, and every invalid value named Section.Field."""
import pytest

from _pki_fixtures import public_for, seed_for
from katzenpost.authority import config as ac

MIX_KEYS = [public_for(seed_for(f"mix{i}")) for i in range(6)]
PROVIDER_KEY = public_for(seed_for("provider1"))


def base(extra="", mixes=6, authority=None):
    text = authority or '[Authority]\nAddresses = ["127.0.0.1:29999"]\nDataDir = "/tmp/kp-auth"\n'
    text += extra
    for key in MIX_KEYS[:mixes]:
        text += f'[[Mixes]]\nIdentityKey = "{key.hex()}"\n'
    text += f'[[Providers]]\nIdentifier = "Provider1"\nIdentityKey = "{PROVIDER_KEY.hex()}"\n'
    return text


def test_defaults_follow_the_reference():
    cfg = ac.parse(base())
    assert cfg.debug.layers == 3 and cfg.debug.min_nodes_per_layer == 2
    assert cfg.parameters.send_rate_per_minute == 100
    assert cfg.parameters.mu == 0.00025 and cfg.parameters.mu_max_delay == 46051
    assert cfg.parameters.lambda_m_max_delay == 46051
    assert cfg.logging.level == "NOTICE" and cfg.epoch_period == 1200
    assert cfg.providers[0].identifier == "provider1"  # IDNA-normalized
    assert cfg.listen_addresses() == [("127.0.0.1", 29999)]


def test_keys_match_case_insensitively_like_the_go_loader():
    cfg = ac.parse(base().replace("[Authority]", "[authority]").replace("DataDir", "datadir"))
    assert cfg.data_dir == "/tmp/kp-auth"


def test_base64_identity_keys_are_accepted():
    import base64
    text = base().replace(MIX_KEYS[0].hex(), base64.b64encode(MIX_KEYS[0]).decode())
    assert ac.parse(text).mixes[0].identity_key == MIX_KEYS[0]


def test_max_delay_default_follows_its_lambda():
    cfg = ac.parse(base("[Parameters]\nLambdaP = 0.001\n"))
    assert cfg.parameters.lambda_p_max_delay == 11512


def test_test_network_epoch_period():
    assert ac.parse(base("[Debug]\nEpochPeriod = 30\n")).epoch_period == 30


@pytest.mark.parametrize("text,message", [
    (base("[Bogus]\nX = 1\n"), r"Undecoded keys.*Bogus"),
    (base("[Logging]\nColour = true\n"), r"Logging\.Colour"),
    (base("[Logging]\nLevel = \"LOUD\"\n"), r"Logging\.Level"),
    (base("[Parameters]\nMu = -1.0\n"), r"Parameters\.Mu must be >= 0"),
    (base("[Parameters]\nMuMaxDelay = 21600001\n"), r"Parameters\.MuMaxDelay"),
    (base("[Parameters]\nSendRatePerMinute = \"fast\"\n"), r"Parameters\.SendRatePerMinute"),
    (base("[Debug]\nLayers = 4\n"), r"Debug\.Layers must be <= 3"),
    (base("[Debug]\nEpochPeriod = 3\n"), r"Debug\.EpochPeriod"),
    (base("[Debug]\nEpochPeriod = -30\n"), r"Debug\.EpochPeriod"),
    (base("[Debug]\nEpochPeriod = 3600\n"), r"Debug\.EpochPeriod must be 0 or 10\.\.1200"),
    (base(mixes=5), r"Mixes: 5 configured.*6 required"),
    (base(authority='[Authority]\nAddresses = []\nDataDir = "/tmp/x"\n'), r"Authority\.Addresses is empty"),
    (base(authority='[Authority]\nAddresses = ["localhost:5"]\nDataDir = "/tmp/x"\n'),
     r"Authority\.Addresses.*literal"),
    (base(authority='[Authority]\nAddresses = ["127.0.0.1:0"]\nDataDir = "/tmp/x"\n'),
     r"Authority\.Addresses"),
    (base(authority='[Authority]\nAddresses = ["127.0.0.1:5"]\nDataDir = "relative"\n'),
     r"Authority\.DataDir.*absolute"),
    (base(authority='[Authority]\nAddresses = ["127.0.0.1:5"]\n'), r"Authority\.DataDir is not set"),
    (base().replace("[Authority]", "[NotAuthority]"), "Undecoded keys"),
    ("[Logging]\n", "No Authority block"),
    ("[[[", "TOML syntax error"),
])
def test_invalid_configuration_is_rejected_with_its_field(text, message):
    with pytest.raises(ac.AuthorityConfigError, match=message):
        ac.parse(text)


def test_mix_with_identifier_is_rejected():
    text = base().replace("[[Mixes]]\n", '[[Mixes]]\nIdentifier = "m"\n', 1)
    with pytest.raises(ac.AuthorityConfigError, match=r"Mixes\[0\]\.Identifier must be empty"):
        ac.parse(text)


def test_provider_without_identifier_is_rejected():
    with pytest.raises(ac.AuthorityConfigError, match=r"Providers\[0\]\.Identifier is not set"):
        ac.parse(base().replace('Identifier = "Provider1"\n', ""))


def test_provider_identifier_must_pass_idna():
    with pytest.raises(ac.AuthorityConfigError, match=r"Providers\[0\]\.Identifier"):
        ac.parse(base().replace('"Provider1"', '"bad_name"'))


def test_bad_identity_key_is_rejected():
    with pytest.raises(ac.AuthorityConfigError, match=r"Mixes\[0\]\.IdentityKey"):
        ac.parse(base().replace(MIX_KEYS[0].hex(), "abcd"))


def test_duplicate_identity_keys_are_rejected():
    with pytest.raises(ac.AuthorityConfigError, match="listed twice"):
        ac.parse(base().replace(MIX_KEYS[1].hex(), MIX_KEYS[0].hex()))


def test_at_least_one_provider_is_required():
    text = base().split("[[Providers]]")[0]
    with pytest.raises(ac.AuthorityConfigError, match="at least one provider"):
        ac.parse(text)


def test_load_reports_a_missing_file(tmp_path):
    with pytest.raises(ac.AuthorityConfigError, match="cannot read"):
        ac.load(str(tmp_path / "missing.toml"))


def test_missing_addresses_default_to_the_global_ipv4_or_fail_clearly(monkeypatch):
    text = base(authority='[Authority]\nDataDir = "/tmp/x"\n')
    monkeypatch.setattr(ac, "discover_global_ipv4", lambda: "198.51.100.7")
    assert ac.parse(text).addresses == ["198.51.100.7:62472"]
    monkeypatch.setattr(ac, "discover_global_ipv4", lambda: None)
    with pytest.raises(ac.AuthorityConfigError, match=r"Authority\.Addresses is not set"):
        ac.parse(text)


def test_every_problem_is_reported_at_once_in_the_nodes_format():
    text = base('[Parameters]\nColour = "red"\nMu = -1.0\n[Debug]\nLayers = 4\nShade = 1\n',
                authority='[Authority]\nAddresses = ["localhost:5"]\n')
    with pytest.raises(ac.AuthorityConfigError) as caught:
        ac.parse(text)
    problems = caught.value.problems
    assert problems[0] == "config: Undecoded keys in config file: [Parameters.Colour Debug.Shade]"
    assert all(p.startswith("config: ") for p in problems)
    for fragment in ("Authority.Addresses", "Authority.DataDir is not set",
                     "Parameters.Mu must be >= 0", "Debug.Layers must be <= 3"):
        assert sum(fragment in p for p in problems) == 1, (fragment, problems)


def test_a_missing_file_names_its_reason_once(tmp_path):
    path = str(tmp_path / "missing.toml")
    with pytest.raises(ac.AuthorityConfigError) as caught:
        ac.load(path)
    assert caught.value.problems == [f"config: cannot read '{path}': No such file or directory"]


def test_the_cli_prints_one_line_per_problem(tmp_path, capsys):
    from katzenpost.authority import cli
    path = tmp_path / "authority.toml"
    path.write_text(base("[Logging]\nColour = true\n[Debug]\nLayers = 9\n"))
    assert cli.main(["-f", str(path)]) == 255
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"Failed to load config file '{path}': config: Undecoded keys in config file: "
                     "[Logging.Colour]",
                     f"Failed to load config file '{path}': config: Debug.Layers must be <= 3, got 9"]


def test_key_generation_accepts_an_empty_whitelist_serving_does_not():
    text = '[Authority]\nAddresses = ["127.0.0.1:29999"]\nDataDir = "/tmp/kp-auth"\n'
    assert ac.parse(text, keys_only=True).mixes == []
    with pytest.raises(ac.AuthorityConfigError, match="at least one provider"):
        ac.parse(text)
    with pytest.raises(ac.AuthorityConfigError, match=r"Mixes\[0\]\.IdentityKey"):
        ac.parse(text + '[[Mixes]]\nIdentityKey = "abcd"\n', keys_only=True)  # what is there is checked


def test_the_cli_generates_the_key_before_any_node_is_whitelisted(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path
    from katzenpost import keys
    data_dir = tmp_path / "auth"
    path = tmp_path / "authority.toml"
    path.write_text(f'[Authority]\nAddresses = ["127.0.0.1:29999"]\nDataDir = "{data_dir}"\n'
                    '[Logging]\nFile = "authority.log"\n')
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))

    def run(*args):
        return subprocess.run([sys.executable, "-m", "katzenpost.authority", "-f", str(path), *args],
                              env=env, capture_output=True, text=True, timeout=30)
    generated = run("-g")
    assert generated.returncode == 0, generated.stderr
    assert keys.public_key_base64(keys.load_identity_key(str(data_dir)).public) in generated.stdout
    serving = run()
    assert serving.returncode == 255 and "at least one provider" in serving.stderr
