"""Logging for the node: the NOTICE level, the reference's line format, stdout or a log file in
DataDir, and reopening that file on SIGHUP so that rotation by rename works.

Every module logs through `logging.getLogger("katzenpost.<area>")`; this module only installs
the one handler on the root logger. It must never log secrets itself.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from typing import Callable, TextIO

NOTICE = 25
logging.addLevelName(NOTICE, "NOTICE")

# Level name (config) -> level number; the printed form is the first four letters.
LEVELS = {
    "ERROR": logging.ERROR,
    "WARNING": logging.WARNING,
    "NOTICE": NOTICE,
    "INFO": logging.INFO,
    "DEBUG": logging.DEBUG,
}
DEFAULT_LEVEL = "NOTICE"
_SHORT_NAMES = {
    logging.CRITICAL: "CRIT",
    logging.ERROR: "ERRO",
    logging.WARNING: "WARN",
    NOTICE: "NOTI",
    logging.INFO: "INFO",
    logging.DEBUG: "DEBU",
}
LOG_FILE_MODE = 0o600
ROTATE_FAILURE_MESSAGE = "failed to rotate log file, shutting down server"


def notice(logger: logging.Logger, message: str, *args) -> None:
    """Log at NOTICE (between INFO and WARNING): `log.notice(logger, "Listening on: %s", addr)`."""
    logger.log(NOTICE, message, *args, stacklevel=2)


def module_name(logger_name: str) -> str:
    """The module shown in a line: the last dotted component (katzenpost.server -> server)."""
    return logger_name.rsplit(".", 1)[-1]


class LineFormatter(logging.Formatter):
    """`HH:MM:SS.mmm LEVL module: message`, local time, like the reference's logs."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        millis = int(record.msecs)
        level = _SHORT_NAMES.get(record.levelno) or record.levelname[:4].upper()
        line = f"{stamp}.{millis:03d} {level} {module_name(record.name)}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class ReopenableFileHandler(logging.StreamHandler):
    """Appends to a file opened 0600; `reopen()` switches to a fresh open of the same path."""

    def __init__(self, path: str):
        self.path = path
        super().__init__(self._open())

    def _open(self) -> TextIO:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, LOG_FILE_MODE)
        return os.fdopen(fd, "a", encoding="utf-8", errors="backslashreplace")

    def reopen(self) -> None:
        """Open the path again (after a rename by logrotate); raises OSError on failure."""
        new_stream = self._open()
        self.acquire()
        try:
            old_stream = self.setStream(new_stream)
        finally:
            self.release()
        if old_stream is not None:
            old_stream.close()

    def close(self) -> None:
        self.acquire()
        try:
            if self.stream is not None:
                self.stream.close()
        finally:
            self.release()
        super().close()


_state_lock = threading.Lock()
_installed: logging.Handler | None = None


def setup_logging(*, level: str = DEFAULT_LEVEL, file_path: str | None = None, disable: bool = False,
                  stream: TextIO | None = None) -> logging.Handler:
    """Install the node's log handler on the root logger (replacing a previous one).

    `file_path` is absolute (the caller resolves Logging.File against DataDir); None means
    `stream` (default stdout). Raises OSError if the file cannot be opened, KeyError for an
    unknown level name.
    """
    global _installed
    level_number = LEVELS[level.upper()]
    if disable:
        handler: logging.Handler = logging.NullHandler()
    elif file_path:
        handler = ReopenableFileHandler(file_path)
    else:
        handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(LineFormatter())
    root = logging.getLogger()
    with _state_lock:
        if _installed is not None:
            root.removeHandler(_installed)
            _installed.close()
        root.addHandler(handler)
        root.setLevel(logging.CRITICAL + 1 if disable else level_number)
        _installed = handler
    return handler


def reset_logging() -> None:
    """Remove the handler installed by setup_logging (tests, and a clean exit)."""
    global _installed
    with _state_lock:
        if _installed is not None:
            logging.getLogger().removeHandler(_installed)
            _installed.close()
            _installed = None


def setup_from_config(config) -> logging.Handler:
    """Logging as a katzenpost.config.Config asks for (Logging.File relative to DataDir)."""
    return setup_logging(level=config.logging.level, file_path=config.log_file_path,
                         disable=config.logging.disable)


def reopen_log_file() -> bool:
    """Reopen the log file if logging goes to one; True if a file was reopened.

    Call this from the event loop or any thread (not from inside a signal handler: it takes
    the handler's lock). Raises OSError if the file cannot be opened again.
    """
    with _state_lock:
        handler = _installed
    if isinstance(handler, ReopenableFileHandler):
        handler.reopen()
        return True
    return False


def _default_rotate_failure(err: BaseException) -> None:
    logging.getLogger("katzenpost.server").error("%s: %s", ROTATE_FAILURE_MESSAGE, err)
    os.kill(os.getpid(), signal.SIGTERM)  # the graceful halt path


def install_sighup_handler(on_failure: Callable[[BaseException], None] | None = None) -> None:
    """Reopen the log file on every SIGHUP (not only the first, unlike the reference).

    The reopen runs on a short-lived thread so that it never takes the handler lock inside a
    signal handler; a failure calls `on_failure(err)` (default: log and send SIGTERM to self,
    the reference's fatal shutdown).
    """
    failure = on_failure or _default_rotate_failure

    def reopen_in_thread() -> None:
        try:
            reopen_log_file()
        except OSError as err:
            failure(err)

    def on_sighup(signum, frame) -> None:
        threading.Thread(target=reopen_in_thread, name="log-reopen", daemon=True).start()

    signal.signal(signal.SIGHUP, on_sighup)
