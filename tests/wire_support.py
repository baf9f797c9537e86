"""Helpers shared by the wire tests: the Go transcript and its deterministic random streams."""
import hashlib
import json
from pathlib import Path

TRANSCRIPT = Path(__file__).parent / "vectors/wire/katzenpost_xxhfs_transcript.json"
INITIATOR_LABEL = "katzenpost wire vector: initiator"
RESPONDER_LABEL = "katzenpost wire vector: responder"


def load_transcript() -> dict:
    transcript = json.loads(TRANSCRIPT.read_text())
    # The labels are stated in the file's prose; check we replay the streams it describes.
    assert f"'{INITIATOR_LABEL}'" in transcript["initiator_rng"]
    assert f"'{RESPONDER_LABEL}'" in transcript["responder_rng"]
    return transcript


class ShakeStream:
    """The transcript's RNG: the SHAKE-256 output stream of a label, read front to back."""

    def __init__(self, label: str) -> None:
        self._stream = hashlib.shake_256(label.encode()).digest(1024)
        self._position = 0

    def __call__(self, length: int) -> bytes:
        chunk = self._stream[self._position:self._position + length]
        self._position += length
        assert len(chunk) == length, "the transcript stream ran out"
        return chunk
