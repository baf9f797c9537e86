"""Configuration loading (README.md, Configuration): sample configs, defaults, key matching,
unknown keys, and one test per validation rule."""
import copy
import dataclasses
import os
from pathlib import Path

import pytest
import toml

from katzenpost import config
from katzenpost.config import ConfigError
from katzenpost.pki.epochtime import EpochClock
from katzenpost.rules import MIN_TEST_PERIOD

CONFIGS = Path(__file__).parent / "configs"
AUTHORITY_KEY_B64 = "kAiVchOBwHVtKJVFJLsdCQ9UyN2SlfhLHYqT8ePBetg="
AUTHORITY_KEY = bytes.fromhex("900895721381c0756d28954524bb1d090f54c8dd9295f84b1d8a93f1e3c17ad8")

MIX = {
    "Server": {"Identifier": "mix1", "Addresses": ["127.0.0.1:30001"], "DataDir": "/srv/mix1"},
    "PKI": {"Nonvoting": {"Address": "127.0.0.1:30000", "PublicKey": AUTHORITY_KEY_B64}},
}


def provider(**provider_block):
    document = copy.deepcopy(MIX)
    document["Server"]["IsProvider"] = True
    document["Provider"] = provider_block
    return document


def load(document: dict) -> config.Config:
    return config.load_text(toml.dumps(document))


def problems_of(document) -> list[str]:
    text = document if isinstance(document, str) else toml.dumps(document)
    with pytest.raises(ConfigError) as caught:
        config.load_text(text)
    return caught.value.problems


def with_section(section: str, **fields) -> dict:
    document = copy.deepcopy(MIX)
    document.setdefault(section, {}).update(fields)
    return document


def assert_one_problem(document, *fragments):
    problems = problems_of(document)
    assert len(problems) == 1, problems
    for fragment in fragments:
        assert fragment in problems[0], problems[0]


# --- sample configurations -------------------------------------------------------------------


def test_sample_provider_config_of_the_reference_layout_loads():
    cfg = config.load_file(str(CONFIGS / "sample_provider.toml"))
    assert cfg.server.identifier == "example.com"
    assert cfg.server.addresses == ("192.0.2.1:29483", "[2001:DB8::1]:29483")
    assert cfg.server.is_provider
    assert cfg.pki.nonvoting.public_key == AUTHORITY_KEY
    assert cfg.logging.level == "DEBUG"
    assert cfg.management.enable and cfg.management.path == "/var/lib/katzenpost/management_sock"
    prov = cfg.provider
    assert [(k.capability, k.endpoint) for k in prov.kaetzchen] == [("loop", "+loop"), ("keyserver", "+keyserver")]
    (echo,) = prov.cbor_plugin_kaetzchen
    assert (echo.capability, echo.endpoint, echo.command, echo.max_concurrency) == (
        "echo", "+echo", "/usr/local/bin/echo_server", 1)
    assert dict(echo.config) == {"log_dir": "/var/lib/katzenpost/plugin_logs", "log_level": "DEBUG"}
    assert prov.enable_user_registration_http
    assert prov.user_registration_http_addresses == ("127.0.0.1:8080",)


def test_minimal_provider_config_of_the_brief_loads():
    cfg = config.load_file(str(CONFIGS / "minimal_provider.toml"))
    assert cfg.server.identifier == "provider1"
    assert cfg.debug.disable_rate_limit is True
    assert cfg.pki.nonvoting.public_key.hex() == "79b5562e8fe654f94078b112e8a98ba7901f853ae695bed7e0e3910bad049664"
    assert [p.capability for p in cfg.provider.cbor_plugin_kaetzchen] == ["echo"]


def test_minimal_mix_config_loads_without_provider():
    cfg = config.load_file(str(CONFIGS / "minimal_mix.toml"))
    assert not cfg.server.is_provider and cfg.provider is None
    # the PublicKey is hex here: hex is tried first
    assert cfg.pki.nonvoting.public_key.hex().startswith("79b5562e")


def test_reference_config_test_lowercase_sections_binary_recipients_inline_config():
    cfg = config.load_file(str(CONFIGS / "go_config_test.toml"))
    assert cfg.server.identifier == "katzenpost.example.com"
    assert cfg.provider.binary_recipients is True
    assert dict(cfg.provider.kaetzchen[1].config) == {"Foo": "bar", "Baz": 42}
    assert cfg.server.addresses[1] == "[::1]:29483"


def test_shipped_sample_with_plugin_kaetzchen_is_refused_as_undecoded():
    problems = problems_of((CONFIGS / "shipped_sample_plugin_kaetzchen.toml").read_text())
    assert problems == ["config: Undecoded keys in config file: [Provider.PluginKaetzchen]"]


# --- loading rules ---------------------------------------------------------------------------


def test_nil_buffer_is_refused():
    with pytest.raises(ConfigError, match="No nil buffer as config file"):
        config.load_bytes(None)


def test_oversized_file_is_refused_without_reading_it_all(tmp_path):
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (config.MAX_CONFIG_BYTES + 1))
    with pytest.raises(ConfigError, match="is larger than"):
        config.load_file(str(big))
    if os.path.exists("/dev/zero"):
        with pytest.raises(ConfigError, match="is larger than"):
            config.load_file("/dev/zero")


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(ConfigError, match="cannot read .*nope.toml"):
        config.load_file(str(tmp_path / "nope.toml"))


def test_toml_syntax_error_is_a_config_error():
    assert_one_problem("[Server\nIdentifier = 1", "TOML syntax error")


def test_non_utf8_file_is_a_config_error():
    with pytest.raises(ConfigError, match="not UTF-8"):
        config.load_bytes(b"[Server]\nIdentifier = \"\xff\"\n")


def test_missing_server_block():
    assert_one_problem({"PKI": MIX["PKI"]}, "No Server block was present")


def test_an_empty_configuration_reports_both_missing_blocks():
    assert problems_of("") == ["config: No Server block was present",
                               "config: No PKI block was present"]


def test_without_server_the_pki_block_and_unknown_keys_are_still_checked():
    problems = problems_of('Colour = "red"\n[PKI.Nonvoting]\nAddress = "nowhere"\n')
    assert problems[0] == "config: No Server block was present"
    assert "config: Undecoded keys in config file: [Colour]" in problems
    assert any("PKI.Nonvoting.Address" in p for p in problems)
    assert any("PKI.Nonvoting.PublicKey is not set" in p for p in problems)


def test_missing_pki_block():
    assert_one_problem({"Server": MIX["Server"]}, "config: No PKI block was present")


def test_empty_identifier():
    assert_one_problem(with_section("Server", Identifier=""), "Server.Identifier is not set")


def test_keys_match_case_insensitively():
    text = toml.dumps(MIX).replace("[Server]", "[server]").replace("Identifier", "IDENTIFIER")
    text = text.replace("DataDir", "datadir").replace("[PKI.Nonvoting]", "[pki.nonVoting]")
    cfg = config.load_text(text)
    assert cfg.server.identifier == "mix1" and cfg.server.data_dir == "/srv/mix1"


def test_exact_and_case_insensitive_duplicate_is_an_error():
    document = with_section("Server", identifier="other")
    assert_one_problem(document, "Server.Identifier is set more than once")


def test_unknown_keys_are_all_named_in_one_error():
    document = with_section("Server", Colour="blue")
    document["Debug"] = {"IdentityKey": "x", "NumSphinxWorkers": 2}
    document["Extra"] = {"a": 1}
    document["TopLevel"] = 3
    problems = problems_of(document)
    assert len(problems) == 1
    for key in ("Server.Colour", "Debug.IdentityKey", "Extra", "TopLevel"):
        assert key in problems[0]
    assert problems[0].startswith("config: Undecoded keys in config file: [")


def test_every_problem_is_reported_at_once():
    document = with_section("Server", Identifier="", DataDir="relative")
    document["Logging"] = {"Level": "LOUD"}
    document["Debug"] = {"UnwrapDelay": config.MAX_DURATION_MS + 1}
    problems = problems_of(document)
    assert len(problems) == 4, problems
    for field_name in ("Server.Identifier", "Server.DataDir", "Logging.Level", "Debug.UnwrapDelay"):
        assert any(field_name in p for p in problems), (field_name, problems)


@pytest.mark.parametrize("section, field_name, value, rule", [
    ("Server", "Addresses", "127.0.0.1:1", "must be an array of strings"),
    ("Server", "IsProvider", "yes", "must be a boolean, got string"),
    ("Server", "Identifier", 7, "must be a string, got integer"),
    ("Debug", "UnwrapDelay", 1.5, "must be an integer, got float"),
    ("Debug", "UnwrapDelay", True, "must be an integer, got boolean"),
    ("Debug", "SendDecoyTraffic", 1, "must be a boolean, got integer"),
    ("Logging", "Level", ["DEBUG"], "must be a string, got array"),
])
def test_wrong_types_name_section_field_and_type(section, field_name, value, rule):
    assert_one_problem(with_section(section, **{field_name: value}), f"{section}.{field_name}", rule)


def test_config_is_immutable():
    cfg = load(MIX)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.server.identifier = "other"
    with pytest.raises(TypeError):
        cfg.server.alt_addresses["tcp"] = ("x:1",)


# --- defaults --------------------------------------------------------------------------------


def test_defaults_of_a_minimal_mix():
    cfg = load(MIX)
    assert cfg.server.alt_addresses == {} and cfg.server.only_advertise_alt_addresses is False
    assert cfg.server.is_provider is False and cfg.provider is None
    assert cfg.logging == config.LoggingConfig(disable=False, file="", level="NOTICE")
    assert cfg.log_file_path is None
    assert cfg.management == config.ManagementConfig(enable=False, path="/srv/mix1/management_sock")
    assert cfg.warnings == ()


def test_debug_defaults():
    debug = load(MIX).debug
    assert debug.identity_key is None and not debug.is_unsafe
    assert debug.num_sphinx_workers == (os.cpu_count() or 1)
    expected = dict(num_provider_workers=1, num_kaetzchen_workers=3, scheduler_queue_size=0,
                    scheduler_max_burst=16, unwrap_delay=10, provider_delay=500, kaetzchen_delay=750,
                    scheduler_slack=10, send_slack=50, decoy_slack=15000, connect_timeout=60000,
                    handshake_timeout=30000, reauth_interval=30000,
                    scheduler_external_memory_queue=False, send_decoy_traffic=False,
                    disable_rate_limit=False, generate_only=False, epoch_period=0)
    assert {k: getattr(debug, k) for k in expected} == expected


def test_debug_values_are_read_and_zero_selects_the_default():
    names = list(config.DEBUG_INT_KNOBS)
    values = {name: 1000 + i for i, name in enumerate(names)}
    debug = load(with_section("Debug", **values, SendDecoyTraffic=True, DisableRateLimit=True,
                              SchedulerExternalMemoryQueue=True, GenerateOnly=True)).debug
    for name, value in values.items():
        assert getattr(debug, config._snake(name)) == value, name
    assert debug.send_decoy_traffic and debug.disable_rate_limit
    assert debug.scheduler_external_memory_queue and debug.generate_only
    zeroed = load(with_section("Debug", ProviderDelay=0, NumProviderWorkers=0)).debug
    assert (zeroed.provider_delay, zeroed.num_provider_workers) == (500, 1)


def test_debug_slacks_below_minimum_are_raised_with_a_warning():
    cfg = load(with_section("Debug", SchedulerSlack=3, SendSlack=20))
    assert (cfg.debug.scheduler_slack, cfg.debug.send_slack) == (10, 50)
    assert any("Debug.SchedulerSlack raised" in w for w in cfg.warnings)
    assert any("Debug.SendSlack raised" in w for w in cfg.warnings)


def test_debug_negative_value_selects_the_default_with_a_warning():
    # The reference applies the default to any value <= 0; a warning says so.
    cfg = load(with_section("Debug", NumKaetzchenWorkers=-2, UnwrapDelay=-1))
    assert (cfg.debug.num_kaetzchen_workers, cfg.debug.unwrap_delay) == (3, 10)
    assert "Debug.NumKaetzchenWorkers is negative (-2); the default is used" in cfg.warnings
    assert any(w.startswith("Debug.UnwrapDelay is negative") for w in cfg.warnings)


@pytest.mark.parametrize("name", list(config.DEBUG_INT_KNOBS))
def test_debug_value_above_its_maximum_is_an_error(name):
    maximum = config.DEBUG_INT_KNOBS[name].maximum
    assert load(with_section("Debug", **{name: maximum})).debug == dataclasses.replace(
        load(MIX).debug, **{config._snake(name): maximum})
    assert_one_problem(with_section("Debug", **{name: maximum + 1}),
                       f"config: Debug.{name} must be <= {maximum}, got {maximum + 1}")


def test_integers_beyond_64_bits_are_refused_not_crashed():
    assert_one_problem(with_section("Debug", ConnectTimeout=2**64), "Debug.ConnectTimeout is out of range")
    base = {"Capability": "echo", "Endpoint": "+echo", "Command": "/bin/e", "MaxConcurrency": -2**70}
    assert_one_problem(provider(CBORPluginKaetzchen=[base]), "MaxConcurrency is out of range")


def test_default_sphinx_workers_follow_the_cpu_count_within_the_maximum(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 4096)
    assert load(MIX).debug.num_sphinx_workers == config.MAX_WORKERS
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert load(MIX).debug.num_sphinx_workers == 1


# --- Debug.EpochPeriod (test networks) -------------------------------------------------------


def test_epoch_period_defaults_to_the_reference_20_minutes():
    cfg = load(MIX)
    assert cfg.debug.epoch_period == 0 and cfg.epoch_period == 20 * 60
    assert not EpochClock(cfg.epoch_period).is_warped
    assert load(with_section("Debug", EpochPeriod=20 * 60)).debug.epoch_period == 0


AUTHORITY_TOML = f"""
[Authority]
Addresses = ["127.0.0.1:29999"]
DataDir = "/tmp/kp-auth"
[[Mixes]]
IdentityKey = "79b5562e8fe654f94078b112e8a98ba7901f853ae695bed7e0e3910bad049664"
[[Providers]]
Identifier = "provider1"
IdentityKey = "{AUTHORITY_KEY.hex()}"
[Debug]
Layers = 1
MinNodesPerLayer = 1
EpochPeriod = %d
"""


@pytest.mark.parametrize("period", [10, 30, 20 * 60])
def test_epoch_period_builds_the_same_clock_as_the_authority(period):
    from katzenpost.authority import config as authority_config
    authority = authority_config.parse(AUTHORITY_TOML % period)
    cfg = load(with_section("Debug", EpochPeriod=period))
    assert cfg.epoch_period == authority.epoch_period == period


def test_epoch_period_marks_the_config_unsafe_and_warns():
    cfg = load(with_section("Debug", EpochPeriod=30))
    assert cfg.debug.is_unsafe and EpochClock(cfg.epoch_period).is_warped
    assert any("Debug.EpochPeriod is 30 s: for test networks only" in w for w in cfg.warnings)


def test_epoch_period_below_the_authority_minimum_is_refused_by_both():
    from katzenpost.authority import config as authority_config
    too_short = MIN_TEST_PERIOD - 1
    with pytest.raises(authority_config.AuthorityConfigError, match="Debug.EpochPeriod"):
        authority_config.parse(AUTHORITY_TOML % too_short)
    assert_one_problem(with_section("Debug", EpochPeriod=too_short), "Debug.EpochPeriod")


@pytest.mark.parametrize("period", [-1, 1, 9, 20 * 60 + 1, 2**40])
def test_epoch_period_out_of_range_is_an_error(period):
    assert_one_problem(with_section("Debug", EpochPeriod=period),
                       f"config: Debug.EpochPeriod must be 0 or 10..1200 seconds, got {period}")


def test_epoch_period_must_be_an_integer():
    assert_one_problem(with_section("Debug", EpochPeriod="30"), "Debug.EpochPeriod must be an integer")


def test_provider_defaults_apply_without_a_provider_block():
    document = copy.deepcopy(MIX)
    document["Server"]["IsProvider"] = True
    prov = load(document).provider
    assert prov.user_db == config.UserDBConfig("bolt", "/srv/mix1/users.db", "")
    assert prov.spool_db == config.SpoolDBConfig("bolt", "/srv/mix1/spool.db")
    assert prov.sql_db is None and prov.kaetzchen == () and prov.cbor_plugin_kaetzchen == ()
    assert not (prov.enable_user_registration_http or prov.binary_recipients
                or prov.case_sensitive_recipients or prov.enable_ephemeral_clients
                or prov.trust_on_first_use)
    assert prov.recipient_delimiter == "" and prov.advertise_user_registration_http_addresses == ()


def test_provider_fields_are_read():
    prov = load(provider(BinaryRecipients=True, CaseSensitiveRecipients=True, RecipientDelimiter="+",
                         EnableEphemeralClients=True, TrustOnFirstUse=True,
                         AdvertiseUserRegistrationHTTPAddresses=["http://a.example:80"])).provider
    assert prov.binary_recipients and prov.case_sensitive_recipients and prov.recipient_delimiter == "+"
    assert prov.enable_ephemeral_clients and prov.trust_on_first_use
    assert prov.advertise_user_registration_http_addresses == ("http://a.example:80",)


def test_addresses_default_to_the_global_ipv4_on_port_3219(monkeypatch):
    document = copy.deepcopy(MIX)
    del document["Server"]["Addresses"]
    monkeypatch.setattr(config, "discover_global_ipv4", lambda: "198.51.100.7")
    assert load(document).server.addresses == ("198.51.100.7:3219",)
    monkeypatch.setattr(config, "discover_global_ipv4", lambda: None)
    assert_one_problem(document, "Server.Addresses is not set")


def test_discovered_address_is_global_ipv4_or_none():
    import ipaddress
    found = config.discover_global_ipv4()
    assert found is None or (ipaddress.ip_address(found).version == 4
                             and ipaddress.ip_address(found).is_global)


def test_log_file_is_relative_to_data_dir():
    assert load(with_section("Logging", File="node.log")).log_file_path == "/srv/mix1/node.log"
    assert load(with_section("Logging", File="/var/log/kp.log")).log_file_path == "/var/log/kp.log"
    assert load(with_section("Logging", File="x.log", Disable=True)).log_file_path is None


def test_generate_only_and_debug_identity_key_return_new_configs():
    cfg = load(MIX)
    assert cfg.with_generate_only().debug.generate_only and not cfg.debug.generate_only
    seed = bytes(range(1, 33))
    keyed = cfg.with_debug_identity_key(seed)
    assert keyed.debug.identity_key == seed and keyed.debug.is_unsafe
    assert seed.hex() not in repr(keyed)
    with pytest.raises(ValueError):
        cfg.with_debug_identity_key(seed + bytes(32))  # public half does not match the seed


# --- Server ----------------------------------------------------------------------------------


@pytest.mark.parametrize("given, normalized", [
    ("Example.COM", "example.com"),
    ("bücher.example", "xn--bcher-kva.example"),
    ("MIX-1.example.", "mix-1.example."),
    ("xn--bcher-kva.example", "xn--bcher-kva.example"),
])
def test_identifier_is_idna_lookup_normalized(given, normalized):
    assert load(with_section("Server", Identifier=given)).server.identifier == normalized


@pytest.mark.parametrize("bad", ["under_score", "-lead.example", "trail-.example", "a..b",
                                 "ab--cd", "sp ace", "xn--ab", "xn--abc-6ja"])
def test_identifier_breaking_std3_rules_is_refused(bad):
    assert_one_problem(with_section("Server", Identifier=bad), "Server.Identifier: failed to normalize")


def test_identifier_longer_than_32_bytes_is_refused():
    assert_one_problem(with_section("Server", Identifier="a" * 33), "longer than 32 bytes")
    assert load(with_section("Server", Identifier="a" * 32)).server.identifier == "a" * 32


@pytest.mark.parametrize("address, rule", [
    ("mix.example.org:3219", "not a literal IP"),
    ("127.0.0.1", "not host:port"),
    ("127.0.0.1:0", "invalid port"),
    ("127.0.0.1:65536", "invalid port"),
    ("::1:3219", "IPv6 hosts need brackets"),
    ("[::1:3219", "not host:port"),
    (":3219", "empty host"),
])
def test_server_addresses_must_be_literal_ip_port(address, rule):
    assert_one_problem(with_section("Server", Addresses=["127.0.0.1:1", address]),
                       "Server.Addresses[1]", rule)


def test_server_addresses_empty_list_is_refused():
    assert_one_problem(with_section("Server", Addresses=[]), "Server.Addresses must list at least one")


def test_alt_addresses_keys_are_lowercased_and_tcp_entries_checked():
    cfg = load(with_section("Server", AltAddresses={"TCP": ["mix.example.org:3219"], "onion": ["x"]}))
    assert dict(cfg.server.alt_addresses) == {"tcp": ("mix.example.org:3219",), "onion": ("x",)}
    assert_one_problem(with_section("Server", AltAddresses={"TCP": ["host:99999"]}),
                       "Server.AltAddresses.TCP[0]", "invalid port")
    assert_one_problem(with_section("Server", AltAddresses={"tcp": ["a:1"], "TCP": ["b:2"]}),
                       "duplicates transport 'tcp'")


@pytest.mark.parametrize("alt, rule", [
    ({"tcp": "127.0.0.1:1"}, "Server.AltAddresses.tcp must be an array of strings"),
    ({"tcp": [1]}, "Server.AltAddresses.tcp must be an array of strings"),
])
def test_alt_addresses_values_must_be_arrays_of_strings(alt, rule):
    assert_one_problem(with_section("Server", AltAddresses=alt), rule)


def test_alt_addresses_must_be_a_table():
    assert_one_problem(with_section("Server", AltAddresses=["tcp"]), "Server.AltAddresses must be a table")


def test_alt_addresses_may_not_override_a_derived_transport():
    assert_one_problem(with_section("Server", AltAddresses={"tcp4": ["192.0.2.9:1"]}),
                       "Server.AltAddresses.tcp4", "would override")
    cfg = load(with_section("Server", AltAddresses={"tcp4": ["192.0.2.9:1"]},
                            OnlyAdvertiseAltAddresses=True))
    assert cfg.server.only_advertise_alt_addresses


def test_data_dir_must_be_set_and_absolute():
    assert_one_problem(with_section("Server", DataDir="var/lib/kp"), "Server.DataDir must be an absolute path")
    document = copy.deepcopy(MIX)
    del document["Server"]["DataDir"]
    assert_one_problem(document, "Server.DataDir is not set")


def test_a_bad_data_dir_is_reported_once_not_again_for_the_paths_derived_from_it():
    document = provider()
    document["Server"]["DataDir"] = "relative"
    document["Management"] = {"Enable": True}
    assert_one_problem(document, "Server.DataDir must be an absolute path")


# --- Logging, Management ---------------------------------------------------------------------


def test_logging_level_is_case_insensitive_and_stored_uppercase():
    assert load(with_section("Logging", Level="debug")).logging.level == "DEBUG"
    assert load(with_section("Logging", Level="")).logging.level == "NOTICE"
    for level in config.LOG_LEVELS:
        assert load(with_section("Logging", Level=level.lower())).logging.level == level


def test_logging_level_invalid():
    assert_one_problem(with_section("Logging", Level="LOUD"), "config: Logging.Level 'LOUD' is invalid")


def test_management_path_must_be_absolute_when_enabled():
    assert_one_problem(with_section("Management", Enable=True, Path="sock"),
                       "Management.Path must be absolute")
    assert load(with_section("Management", Enable=False, Path="sock")).management.path == "sock"
    assert load(with_section("Management", Enable=True, Path="/run/kp.sock")).management.path == "/run/kp.sock"


# --- PKI -------------------------------------------------------------------------------------


def test_pki_public_key_hex_or_base64():
    hex_doc = copy.deepcopy(MIX)
    hex_doc["PKI"]["Nonvoting"]["PublicKey"] = AUTHORITY_KEY.hex().upper()
    assert load(hex_doc).pki.nonvoting.public_key == AUTHORITY_KEY


@pytest.mark.parametrize("key, rule", [
    ("", "is not set"),
    ("zz" * 32, "must decode to 32 bytes"),  # valid base64 of 48 bytes
    ("!!" * 22, "neither hex nor base64"),
    ("00" * 31, "must decode to 32 bytes"),
    ("AAAA", "must decode to 32 bytes"),
])
def test_pki_public_key_invalid(key, rule):
    document = copy.deepcopy(MIX)
    document["PKI"]["Nonvoting"]["PublicKey"] = key
    assert_one_problem(document, "PKI.Nonvoting.PublicKey", rule)


def test_pki_address_must_be_literal_ip_port():
    document = copy.deepcopy(MIX)
    document["PKI"]["Nonvoting"]["Address"] = "authority.example:2323"
    assert_one_problem(document, "PKI.Nonvoting.Address must be a literal IP:port")


def test_pki_voting_is_accepted():
    # The voting block's own rules: tests/test_voting_node_config.py.
    document = copy.deepcopy(MIX)
    document["PKI"] = {"Voting": {"Peers": [{"Addresses": ["127.0.0.1:1"],
                                             "IdentityPublicKey": AUTHORITY_KEY_B64,
                                             "LinkPublicKey": AUTHORITY_KEY_B64}]}}
    pki = load(document).pki
    assert pki.nonvoting is None and pki.voting.peers[0].identity_public_key == AUTHORITY_KEY
    document["PKI"]["Voting"]["Peers"][0]["Addresses"] = ["host:1"]
    assert_one_problem(document, "PKI.Voting.Peers[0].Addresses[0]")


def test_pki_voting_and_nonvoting_together():
    document = copy.deepcopy(MIX)
    document["PKI"]["Voting"] = {"Peers": [{"Addresses": ["127.0.0.1:1"],
                                            "IdentityPublicKey": AUTHORITY_KEY_B64,
                                            "LinkPublicKey": AUTHORITY_KEY_B64}]}
    assert_one_problem(document, "cannot configure voting and nonvoting pki")


def test_pki_with_neither_is_a_clean_error():
    document = copy.deepcopy(MIX)
    document["PKI"] = {}
    assert_one_problem(document, "PKI block must contain [PKI.Nonvoting]")


# --- Provider --------------------------------------------------------------------------------


def test_provider_block_on_a_mix_is_refused():
    document = copy.deepcopy(MIX)
    document["Provider"] = {"BinaryRecipients": True}
    assert_one_problem(document, "Provider block set when not a Provider")


def test_user_db_backends():
    assert load(provider(UserDB={"Backend": "sqlite"})).provider.user_db.backend == "bolt"
    cfg = load(provider(UserDB={"Backend": "bolt", "Bolt": {"UserDB": "/data/u.db"}}))
    assert cfg.provider.user_db.bolt_user_db == "/data/u.db"
    cfg = load(provider(UserDB={"Backend": "extern", "Extern": {"ProviderURL": "https://auth.example/x"}}))
    assert cfg.provider.user_db.extern_provider_url == "https://auth.example/x"
    assert_one_problem(provider(UserDB={"Backend": "mysql"}), "config: Provider.UserDB.Backend 'mysql' is invalid")
    assert_one_problem(provider(UserDB={"Bolt": {"UserDB": "u.db"}}), "Provider.UserDB.Bolt.UserDB must be an absolute path")
    assert_one_problem(provider(UserDB={"Backend": "extern"}), "Provider.UserDB.Extern.ProviderURL is required")
    assert_one_problem(provider(UserDB={"Backend": "extern", "Extern": {"ProviderURL": "ftp://x/"}}),
                       "must be an http or https URL")


def test_spool_db_backends():
    cfg = load(provider(SpoolDB={"Backend": "bolt", "Bolt": {"SpoolDB": "/data/s.db"}}))
    assert cfg.provider.spool_db.bolt_spool_db == "/data/s.db"
    assert_one_problem(provider(SpoolDB={"Backend": "extern"}), "Provider.SpoolDB.Backend 'extern' is invalid")
    assert_one_problem(provider(SpoolDB={"Bolt": {"SpoolDB": "s.db"}}), "Provider.SpoolDB.Bolt.SpoolDB must be an absolute")


def test_sql_backends_need_a_valid_sqldb_block():
    sqldb = {"Backend": "pgx", "DataSourceName": "postgres://kp:secret@127.0.0.1/kp"}
    cfg = load(provider(UserDB={"Backend": "sql"}, SpoolDB={"Backend": "sql"}, SQLDB=sqldb))
    assert cfg.provider.sql_db.data_source_name == sqldb["DataSourceName"]
    assert "secret" not in repr(cfg)
    assert_one_problem(provider(SpoolDB={"Backend": "sql"}), "needs a [Provider.SQLDB] block")
    assert_one_problem(provider(UserDB={"Backend": "sql"}, SQLDB={"Backend": "mysql", "DataSourceName": "x"}),
                       "Provider.SQLDB.Backend 'mysql' is invalid")
    assert_one_problem(provider(UserDB={"Backend": "sql"}, SQLDB={"Backend": "pgx"}),
                       "Provider.SQLDB.DataSourceName is not set")
    unused = load(provider(SQLDB=sqldb))
    assert unused.warnings == ("SQL database configured but not used for the User or Spool databases.",)


def test_trust_on_first_use_needs_the_embedded_user_db():
    assert_one_problem(provider(TrustOnFirstUse=True, UserDB={"Backend": "extern",
                                                              "Extern": {"ProviderURL": "http://a/"}}),
                       "Provider.TrustOnFirstUse")


def test_user_registration_http_addresses():
    cfg = load(provider(EnableUserRegistrationHTTP=True, UserRegistrationHTTPAddresses=["localhost:8080"]))
    assert cfg.provider.user_registration_http_addresses == ("localhost:8080",)
    assert_one_problem(provider(EnableUserRegistrationHTTP=True), "must list at least one host:port")
    assert_one_problem(provider(EnableUserRegistrationHTTP=True, UserRegistrationHTTPAddresses=["x:0"]),
                       "Provider.UserRegistrationHTTPAddresses[0]")


@pytest.mark.parametrize("endpoint, rule", [
    ("+Loop", "not in normalized form"),
    ("a b", "not a valid username"),
    ("", "not a valid username"),
    ("x" * 65, "longer than 64 bytes"),
    ("a@b", "not a valid e-mail local part"),
    ("a..b", "not a valid e-mail local part"),
    ("ｌｏｏｐ", "not in normalized form"),
])
def test_kaetzchen_endpoint_rules(endpoint, rule):
    assert_one_problem(provider(Kaetzchen=[{"Capability": "loop", "Endpoint": endpoint}]),
                       "Provider.Kaetzchen[0].Endpoint", rule)


def test_kaetzchen_fields_and_disable():
    cfg = load(provider(Kaetzchen=[{"Capability": "loop", "Endpoint": "+loop", "Disable": True,
                                    "Config": {"a": {"b": [1, 2]}}}]))
    (loop,) = cfg.provider.kaetzchen
    assert loop.disable and loop.config["a"]["b"] == (1, 2)
    (plain,) = load(provider(Kaetzchen=[{"Capability": "loop", "Endpoint": "+loop"}])).provider.kaetzchen
    assert plain.disable is False and dict(plain.config) == {}
    assert_one_problem(provider(Kaetzchen=[{"Endpoint": "+loop"}]), "Provider.Kaetzchen[0].Capability is not set")
    assert_one_problem(provider(Kaetzchen=[{"Capability": "loop", "Endpoint": "+loop", "Colour": 1}]),
                       "Provider.Kaetzchen[0].Colour")


@pytest.mark.parametrize("field_name", ["Kaetzchen", "CBORPluginKaetzchen"])
def test_service_lists_must_be_arrays_of_tables(field_name):
    assert_one_problem(provider(**{field_name: {"Capability": "loop"}}),
                       f"Provider.{field_name} must be an array of tables")


def test_unknown_keys_in_nested_tables_are_named_with_their_full_path():
    document = provider(UserDB={"Bolt": {"UserDB": "/u.db", "Extra": 1}},
                        SQLDB={"Backend": "pgx", "DataSourceName": "x", "Pool": 3})
    document["PKI"]["Nonvoting"]["Port"] = 1
    assert_one_problem(document, "Undecoded keys in config file: [", "PKI.Nonvoting.Port",
                       "Provider.UserDB.Bolt.Extra", "Provider.SQLDB.Pool")


def test_duplicate_capabilities_and_endpoints():
    duplicate = provider(Kaetzchen=[{"Capability": "echo", "Endpoint": "+e1"}],
                         CBORPluginKaetzchen=[{"Capability": "echo", "Endpoint": "+e2", "Command": "/bin/e"}])
    assert_one_problem(duplicate, "config: Kaetzchen: 'echo' configured multiple times")
    same_endpoint = provider(Kaetzchen=[{"Capability": "loop", "Endpoint": "+x"},
                                        {"Capability": "keyserver", "Endpoint": "+x"}])
    assert_one_problem(same_endpoint, "endpoint '+x' is used by more than one service")


def test_cbor_plugin_rules():
    base = {"Capability": "echo", "Endpoint": "+echo", "Command": "/bin/echo_server"}
    assert load(provider(CBORPluginKaetzchen=[base])).provider.cbor_plugin_kaetzchen[0].max_concurrency == 1
    assert_one_problem(provider(CBORPluginKaetzchen=[{**base, "Command": ""}]),
                       "Provider.CBORPluginKaetzchen[0].Command is not set")
    assert_one_problem(provider(CBORPluginKaetzchen=[{**base, "MaxConcurrency": 0}]),
                       "Provider.CBORPluginKaetzchen[0].MaxConcurrency must be 1..1024")
    assert_one_problem(provider(CBORPluginKaetzchen=[{**base, "MaxConcurrency": config.MAX_WORKERS + 1}]),
                       "Provider.CBORPluginKaetzchen[0].MaxConcurrency must be 1..1024")
    top = load(provider(CBORPluginKaetzchen=[{**base, "MaxConcurrency": config.MAX_WORKERS}]))
    assert top.provider.cbor_plugin_kaetzchen[0].max_concurrency == config.MAX_WORKERS
    assert_one_problem(provider(CBORPluginKaetzchen=[{**base, "Config": {"log_level": 3}}]),
                       "Provider.CBORPluginKaetzchen[0].Config.log_level must be a string")
