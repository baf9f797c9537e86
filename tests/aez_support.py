"""Helpers shared by the AEZ tests: vector loading and the backends to run every case on."""
import json
from pathlib import Path

import pytest

from katzenpost._core import aez as core

VECTORS = Path(__file__).parent / "vectors" / "katzenpost" / "aez" / "testdata"
ENCRYPT_FILES = ["encrypt.json", "encrypt_no_ad.json", "encrypt_33_byte_ad.json",
                 "encrypt_16_byte_key.json"]
BACKENDS = ["aesni", "portable"]


def load(name):
    return json.loads((VECTORS / name).read_text())


def h(hex_string):
    return bytes.fromhex(hex_string)


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Runs the test once per AES-round backend (AES-NI skipped on CPUs without it)."""
    if request.param == "aesni" and not core.cpu_has_aesni():
        pytest.skip("CPU has no AES-NI")
    core._set_backend(request.param)
    assert core._backend() == request.param
    yield request.param
    core._set_backend("auto")
