"""What a server's connection handler needs of an asyncio.StreamWriter, keeping what it wrote
(the harnesses feed the request into an asyncio.StreamReader and check the answer)."""


class _Transport:
    def set_write_buffer_limits(self, high=None, low=None):
        pass

    def abort(self):
        pass


class RecordingWriter:
    def __init__(self):
        self.transport = _Transport()
        self.sent = bytearray()

    def write(self, data):
        self.sent += data

    async def drain(self):
        pass

    def close(self):
        pass

    async def wait_closed(self):
        pass
