"""Property tests: no configuration, however malformed, crashes the loader. Random bytes,
random TOML built from the real section and field names with values of every type and size,
and random host names and endpoints all end in a Config or a ConfigError listing problems."""
import tomllib

import toml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config_support import NESTED_FIELDS, SECTION_FIELDS
from katzenpost import config

PLAUSIBLE = ["127.0.0.1:1", "[::1]:2", "/abs", "relative", "bolt", "sql", "extern", "pgx", "+loop",
             "loop", "http://a/", "kAiVchOBwHVtKJVFJLsdCQ9UyN2SlfhLHYqT8ePBetg=", "DEBUG", "x:0"]

scalars = st.one_of(st.integers(min_value=-2**70, max_value=2**70), st.booleans(),
                    st.text(max_size=40), st.sampled_from(PLAUSIBLE), st.floats(allow_nan=False))
key_names = st.one_of(st.sampled_from(NESTED_FIELDS), st.text(min_size=1, max_size=8))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(key_names, inner, max_size=4)),
                      max_leaves=12)


def section(name: str):
    names = SECTION_FIELDS[name] + [field.lower() for field in SECTION_FIELDS[name]]
    return st.dictionaries(st.sampled_from(names), values, max_size=6)


documents = st.fixed_dictionaries({}, optional={name: section(name) for name in SECTION_FIELDS})


def load_or_problems(text: str) -> None:
    try:
        config.load_text(text)
    except config.ConfigError as err:
        assert err.problems and all(isinstance(p, str) and p.startswith("config: ") for p in err.problems)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(documents)
def test_any_document_of_real_sections_loads_or_lists_problems(document):
    try:
        text = toml.dumps(document)
        tomllib.loads(text)
    except Exception:  # the toml writer cannot express every value (e.g. mixed arrays)
        return
    load_or_problems(text)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_load_or_list_problems(data):
    try:
        config.load_bytes(data)
    except config.ConfigError as err:
        assert err.problems


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=30))
def test_name_and_address_rules_raise_value_error_only(text):
    for rule in (config.idna_lookup_to_ascii, config.username_case_mapped, config.split_host_port,
                 config.check_ip_port):
        try:
            rule(text)
        except ValueError:
            pass
