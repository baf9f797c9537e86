"""Control messages from the I/O thread to one pipeline thread (crypto worker or scheduler).

Immutable objects (mix keys, routes, endpoints, maxDelay, halt) travel on a SimpleQueue; a byte on
a zmq PAIR socket wakes the receiving thread's poll. Packet data never goes this way.
"""
import itertools
import logging
import queue
import threading

import zmq

log = logging.getLogger("katzenpost.server")

# zmq releases an inproc name only some time after its socket is closed (in its I/O thread), so
# a restarted thread's channel must not reuse its predecessor's: every channel gets a new suffix.
_incarnations = itertools.count()

HALT = "halt"


class ControlChannel:
    """The sending end lives on the owning thread; the receiving thread connects a PAIR socket
    to `address`, drains its wake-up bytes and calls `apply`."""

    def __init__(self, context, address):
        """`address` is a base inproc name; the bound one (`self.address`) is unique to this
        channel."""
        self.address = f"{address}-{next(_incarnations)}"
        self._inbox = queue.SimpleQueue()
        self._wake = context.socket(zmq.PAIR)
        self._wake.setsockopt(zmq.LINGER, 0)
        self._wake.bind(self.address)

    def post(self, kind, value=None):
        self._inbox.put((kind, value))
        self._wake.send(b"c")

    def close(self):
        self._wake.close(linger=0)

    def apply(self, handlers, owner):
        """Run every queued message through `handlers[kind](value)`; True when a halt came."""
        halt = False
        while True:
            try:
                kind, value = self._inbox.get_nowait()
            except queue.Empty:
                return halt
            if kind == HALT:
                halt = True
            elif kind in handlers:
                handlers[kind](value)
            else:
                log.error("%s: unknown control message %r", owner, kind)


class ControlledThread(threading.Thread):
    """A pipeline thread steered from the owning (I/O) thread through its `self._control`."""

    _control: ControlChannel

    def post(self, kind, value):
        self._control.post(kind, value)

    def request_halt(self):
        self._control.post(HALT)

    def close_control(self):
        self._control.close()
