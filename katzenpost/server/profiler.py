"""The management command PROFILE's recorder: a bounded sampling profile of the running node.

Our extension (the reference has no such command), off unless `[Debug] EnableProfiling = true`.
A sampler thread reads every other thread's Python stack with `sys._current_frames()` every
INTERVAL_S and counts identical stacks; at the end it writes, into the DataDir (mode 0600):

    profile-<UTC time>.folded   collapsed stacks, "thread;outermost;...;innermost samples" a line
                                (the input of the usual flame-graph tools)
    profile-<UTC time>.svg      the same as a flame graph (drawn by katzenpost.server.flamegraph)

In process and in pure Python, so it needs neither ptrace nor an extra package, and it runs
wherever the node runs. What it cannot see: native frames. Time spent in C with the GIL released
(the crypto workers' batch unwrap, epoll, zmq) shows as the Python frame that called it; for
native frames use py-spy from outside (bench/profile_node.py, docs/operations.md).

Safety in production: one recording at a time, at most MAX_SECONDS, at most MAX_STACKS distinct
stacks of at most MAX_DEPTH frames (usually tens of KiB; at worst under 12 MiB .folded and 24 MiB .svg,
tested), the last MAX_KEPT recordings kept. A sample holds the GIL for tens of microseconds (a few threads, tens of
frames each); at 200 samples a second that is well under 1 % of one core (the sampler's own CPU
time is measured and logged with each recording). Files appear complete or not at all (written
under a temporary name, then renamed), the .svg first.
"""
import contextlib
import logging
import os
import sys
import threading
import time

from katzenpost.server import flamegraph

log = logging.getLogger("katzenpost.server.profiler")

MAX_SECONDS = 60
INTERVAL_S = 0.005           # 200 samples a second
MAX_DEPTH = 48               # frames per stack (innermost kept; the rest is one "[deeper]" frame)
MAX_STACKS = 2000            # distinct stacks; samples of further ones count as "[other stacks]"
MAX_LABEL = 120              # characters of a frame label
MAX_KEPT = 10                # recordings kept in the DataDir; older ones are removed
PREFIX = "profile-"


class ProfileBusy(Exception):
    """A recording is already running (one at a time)."""


class Profiler:
    """Starts bounded recordings into `data_dir`, one at a time. Thread-safe."""

    def __init__(self, data_dir, *, max_seconds=MAX_SECONDS, interval_s=INTERVAL_S, keep=MAX_KEPT):
        self.data_dir = str(data_dir)
        self.max_seconds = max_seconds
        self.interval_s = interval_s
        self.keep = keep
        self._lock = threading.Lock()
        self._sampler = None

    @property
    def running(self):
        sampler = self._sampler
        return sampler is not None and sampler.is_alive()

    def start(self, seconds):
        """Begin a recording of `seconds` (1..max_seconds); returns the .folded path it will have
        once done. Raises ValueError for a bad duration and ProfileBusy while one runs."""
        if isinstance(seconds, bool) or not isinstance(seconds, int) or not 1 <= seconds <= self.max_seconds:
            raise ValueError(f"profile: seconds must be an integer in 1..{self.max_seconds}, got {seconds!r}")
        with self._lock:
            if self.running:
                raise ProfileBusy("a profile is already being recorded")
            stem = self._new_stem()
            self._sampler = _Sampler(stem, seconds, self.interval_s, self._prune)
            self._sampler.start()
        log.info("profile: recording %d s into %s.folded", seconds, stem)
        return stem + ".folded"

    def stop(self, timeout=10.0):
        """End a running recording early (what it has is still written) and wait for it."""
        sampler = self._sampler
        if sampler is not None:
            sampler.stop_event.set()
            sampler.join(timeout)

    def _new_stem(self):
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        stem = os.path.join(self.data_dir, PREFIX + stamp)
        n = 1
        while any(os.path.lexists(stem + ext) for ext in (".folded", ".svg")):
            n += 1
            stem = os.path.join(self.data_dir, f"{PREFIX}{stamp}-{n}")
        return stem

    def _prune(self):
        """Remove all but the newest `keep` recordings (both files of each)."""
        try:
            names = os.listdir(self.data_dir)
        except OSError:
            return
        stems = {os.path.join(self.data_dir, name[:-len(ext)]) for name in names
                 for ext in (".folded", ".svg") if name.startswith(PREFIX) and name.endswith(ext)}
        stems = sorted(stems, key=_newest_mtime)
        for stem in stems[:max(0, len(stems) - self.keep)]:
            for ext in (".folded", ".svg"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(stem + ext)


class _Sampler(threading.Thread):
    """One recording: samples until its time is up or `stop_event`, then writes the files."""

    def __init__(self, stem, seconds, interval_s, after_write):
        super().__init__(name="katzenpost-profiler", daemon=True)
        self.stem = stem
        self.seconds = seconds
        self.interval_s = interval_s
        self.stop_event = threading.Event()
        self._after_write = after_write
        self._counts = {}          # (thread ident, code ids innermost first) -> samples
        self._labels = {}          # id(code) -> (code, label); holding the code keeps its id unique
        self._names = {}           # thread ident -> name
        self._overflow = {}        # thread ident -> samples of stacks beyond MAX_STACKS
        self.samples = 0

    def run(self):
        cpu0, wall0 = time.thread_time(), time.monotonic()
        try:
            end = wall0 + self.seconds
            while time.monotonic() < end and not self.stop_event.wait(self.interval_s):
                self._sample()
            cpu, wall = time.thread_time() - cpu0, time.monotonic() - wall0
            self._write(cpu, wall)
            log.info("profile: %d samples in %.1f s written to %s.folded (sampler CPU %.2f %% of one core)",
                     self.samples, wall, self.stem, 100.0 * cpu / max(wall, 1e-9))
        except Exception:
            log.exception("profile: recording into %s failed", self.stem)
        finally:
            self._counts = self._labels = None

    def _sample(self):
        own = threading.get_ident()
        counts, labels = self._counts, self._labels
        frames = sys._current_frames()
        try:
            for ident, frame in frames.items():
                if ident == own:
                    continue
                ids = []
                while frame is not None and len(ids) < MAX_DEPTH:
                    code = frame.f_code
                    key = id(code)
                    if key not in labels:
                        labels[key] = (code, _label(code))
                    ids.append(key)
                    frame = frame.f_back
                if frame is not None:
                    ids.append(0)                      # the "[deeper]" marker
                stack = (ident, tuple(ids))
                if stack in counts or len(counts) < MAX_STACKS:
                    counts[stack] = counts.get(stack, 0) + 1
                else:
                    self._overflow[ident] = self._overflow.get(ident, 0) + 1
                if ident not in self._names:
                    self._names.update((t.ident, t.name) for t in threading.enumerate())
        finally:
            frame = None
            del frames                                 # no frame outlives the sample
        self.samples += 1

    def _stacks(self):
        """{(thread name, outermost label, ..., innermost label): samples}."""
        stacks = {}
        for (ident, ids), count in self._counts.items():
            labels = [self._labels[i][1] if i else "[deeper]" for i in reversed(ids)]
            key = (self._names.get(ident, f"thread-{ident}"), *labels)
            stacks[key] = stacks.get(key, 0) + count
        for ident, count in self._overflow.items():
            key = (self._names.get(ident, f"thread-{ident}"), "[other stacks]")
            stacks[key] = stacks.get(key, 0) + count
        return stacks

    def _write(self, cpu, wall):
        stacks = self._stacks()
        title = (f"katzenpost PROFILE: {self.samples} samples over {wall:.1f} s every "
                 f"{self.interval_s * 1000:g} ms (sampler CPU {100.0 * cpu / max(wall, 1e-9):.2f} %)")
        _write_private(self.stem + ".svg", flamegraph.render_svg(stacks, title))
        _write_private(self.stem + ".folded", "".join(line + "\n" for line in flamegraph.collapsed_lines(stacks)))
        self._after_write()


def _newest_mtime(stem):
    times = []
    for ext in (".folded", ".svg"):
        with contextlib.suppress(OSError):
            times.append(os.lstat(stem + ext).st_mtime)
    return max(times, default=0.0)


def _label(code):
    """'qualname (package/module.py:line)' of a code object, at most MAX_LABEL characters."""
    parts = code.co_filename.replace("\\", "/").rsplit("/", 2)
    where = "/".join(parts[-2:])
    where = f" ({where[-MAX_LABEL // 2:]}:{code.co_firstlineno})"
    name = getattr(code, "co_qualname", code.co_name)
    room = MAX_LABEL - len(where)
    if len(name) > room:                       # keep the innermost part of a long qualname
        name = ".." + name[-(room - 2):]
    return name + where


def _write_private(path, text):
    """Write `path` (mode 0600) complete or not at all: a temporary name, then a rename."""
    tmp = f"{path}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
