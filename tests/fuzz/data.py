"""A small reader that splits one fuzz input into typed pieces (like atheris's
FuzzedDataProvider, but without atheris, so harnesses also run in the plain test suite)."""


class Reader:
    """Consumes `data` from the front; past the end every read returns zeros / empty bytes."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)
        self.pos = 0

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def uint(self, nbytes: int) -> int:
        return int.from_bytes(self.take(nbytes).ljust(nbytes, b"\0"), "big")

    def choice(self, n: int) -> int:
        """An index in range(n) from one byte."""
        return self.byte() % n

    def take(self, n: int) -> bytes:
        chunk = self.data[self.pos:self.pos + max(n, 0)]
        self.pos += len(chunk)
        return chunk

    def exact(self, n: int) -> bytes:
        """n bytes, zero-padded if the input ran out."""
        return self.take(n).ljust(n, b"\0")

    def sized(self, nbytes: int = 2) -> bytes:
        """A length prefix of `nbytes`, then that many bytes."""
        return self.take(self.uint(nbytes))

    def rest(self) -> bytes:
        return self.take(self.remaining())
