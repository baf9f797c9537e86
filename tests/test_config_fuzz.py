"""Property tests: no configuration, however malformed, crashes the loader. Valid sample
configurations mutated field by field (so both the loading and the error paths are exercised,
which a test below checks), random TOML built from the real section and field names with values
of every type and size, random bytes, and random host names and endpoints all end in a Config or
a ConfigError listing problems."""
import copy
import random
import tomllib
from pathlib import Path

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


# --- mutations of valid configurations --------------------------------------------------------

CONFIGS = Path(__file__).parent / "configs"
BASES = [tomllib.loads((CONFIGS / name).read_text())
         for name in ("minimal_mix.toml", "minimal_provider.toml", "sample_provider.toml")]
# Values a field may validly take, gathered from the bases (plus the obvious ones), so that a
# mutation often keeps the file valid and the loading path is exercised, not only the errors.
VALID_VALUES: dict[tuple[str, str], list] = {}
for _base in BASES:
    for _section, _table in _base.items():
        for _field, _value in _table.items():
            VALID_VALUES.setdefault((_section, _field), []).append(_value)
for _field in config.DEBUG_INT_KNOBS:
    VALID_VALUES.setdefault(("Debug", _field), []).extend([0, 1, 20, 500])
for _field in config.DEBUG_BOOLS:
    VALID_VALUES.setdefault(("Debug", _field), []).extend([True, False])
VALID_VALUES[("Logging", "Level")] = ["ERROR", "WARNING", "NOTICE", "INFO", "DEBUG", "debug"]
VALID_VALUES[("Logging", "Disable")] = [True, False]
VALID_VALUES[("Server", "Identifier")] = ["mix2.example.net", "Node-3", "xn--bcher-kva.example"]


def mutate(document: dict, mutation: tuple) -> None:
    kind, section, field, value = mutation
    table = document.setdefault(section, {})
    if kind == "delete":
        table.pop(field, None)
    elif kind == "valid" and (section, field) in VALID_VALUES:
        table[field] = VALID_VALUES[(section, field)][value % len(VALID_VALUES[(section, field)])]
    elif kind == "any":
        table[field] = value


def mutation_of(kind, field_values):
    """(kind, section, field, value) over every section and field."""
    return st.sampled_from(sorted(SECTION_FIELDS)).flatmap(
        lambda sec: st.tuples(st.just(kind), st.just(sec), st.sampled_from(SECTION_FIELDS[sec]),
                              field_values))


mutations = st.one_of(mutation_of("valid", st.integers(0, 50)),
                      mutation_of("delete", st.none()),
                      mutation_of("any", values))


def outcome_of(document: dict) -> str:
    """'loaded', 'refused' (ConfigError with problems) or 'unwritable' (not expressible in TOML)."""
    try:
        text = toml.dumps(document)
        tomllib.loads(text)
    except Exception:  # the toml writer cannot express every value (e.g. mixed arrays)
        return "unwritable"
    try:
        config.load_text(text)
    except config.ConfigError as err:
        assert err.problems and all(isinstance(p, str) and p.startswith("config: ") for p in err.problems)
        return "refused"
    return "loaded"


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(range(len(BASES))), st.lists(mutations, max_size=3))
def test_mutated_valid_configurations_load_or_list_problems(base, changes):
    document = copy.deepcopy(BASES[base])
    for change in changes:
        mutate(document, change)
    outcome_of(document)


def test_the_mutations_reach_both_the_loading_and_the_error_paths():
    """Guards the property test above against discarding or refusing everything."""
    rng = random.Random(20240611)
    seen = {"loaded": 0, "refused": 0, "unwritable": 0}
    sections = sorted(SECTION_FIELDS)
    for _ in range(300):
        document = copy.deepcopy(rng.choice(BASES))
        for _ in range(rng.randint(0, 2)):
            section = rng.choice(sections)
            field = rng.choice(SECTION_FIELDS[section])
            kind = rng.choice(["valid", "valid", "delete", "any"])
            value = rng.randint(0, 50) if kind == "valid" else rng.choice(
                [None, -1, 2**40, "", "x", [1, "a"], {"k": 1}, True, 1.5])
            if value is None and kind == "any":
                continue
            mutate(document, (kind, section, field, value))
        seen[outcome_of(document)] += 1
    assert seen["loaded"] >= 60 and seen["refused"] >= 60, seen


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
