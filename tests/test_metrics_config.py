"""The optional [Metrics] section (our addition): off when absent, loopback by default, a literal
IP:port otherwise, bad values refused like other address fields."""
from pathlib import Path

import pytest

from katzenpost import config

MIX = (Path(__file__).parent / "configs" / "minimal_mix.toml").read_text()


def load(extra):
    return config.load_text(MIX + "\n" + extra)


def test_absent_section_means_no_metrics():
    assert load("").metrics is None


def test_empty_section_or_address_listens_on_loopback():
    assert load("[Metrics]\n").metrics.address == "127.0.0.1:6543"
    assert load('[Metrics]\nAddress = ""\n').metrics.address == "127.0.0.1:6543"


@pytest.mark.parametrize("address", ["127.0.0.1:9100", "10.1.2.3:80", "[::1]:9100"])
def test_literal_ip_and_port_is_kept(address):
    assert load(f'[Metrics]\nAddress = "{address}"\n').metrics.address == address


@pytest.mark.parametrize("address, words", [
    ("localhost:9100", "literal IP"),
    ("127.0.0.1", "host:port"),
    ("127.0.0.1:0", "1-65535"),
    ("::1:9100", "brackets"),
])
def test_bad_address_is_refused(address, words):
    with pytest.raises(config.ConfigError) as err:
        load(f'[Metrics]\nAddress = "{address}"\n')
    assert any("Metrics.Address" in p and words in p for p in err.value.problems), err.value.problems


def test_wrong_type_and_unknown_key_are_refused():
    with pytest.raises(config.ConfigError) as err:
        load("[Metrics]\nAddress = 9100\n")
    assert any("Metrics.Address must be a string" in p for p in err.value.problems)
    with pytest.raises(config.ConfigError) as err:
        load('[Metrics]\nAdress = "127.0.0.1:1"\n')
    assert any("Metrics.Adress" in p for p in err.value.problems)
