"""Log rotation in a real process: rename the file, send SIGHUP, and the process writes to a
new file at the old path — on every SIGHUP, not only the first. A failed reopen is fatal."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# The child sets up logging to a file, installs the SIGHUP handler, then logs each line it
# reads from stdin and acknowledges it on stdout.
CHILD = r"""
import logging, sys
from katzenpost import log
log.setup_logging(level="NOTICE", file_path=sys.argv[1])
log.install_sighup_handler()
logger = logging.getLogger("katzenpost.server")
print("ready", flush=True)
for line in sys.stdin:
    log.notice(logger, line.strip())
    print("ack", flush=True)
"""

TIMEOUT = 10.0


def start_child(log_path: Path) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(log_path)], cwd=REPO,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "ready\n"
    return child


def say(child: subprocess.Popen, message: str) -> None:
    child.stdin.write(message + "\n")
    child.stdin.flush()
    assert child.stdout.readline() == "ack\n"


def wait_for(predicate, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_every_sighup_after_a_rename_reopens_the_log_file(tmp_path):
    log_path = tmp_path / "node.log"
    child = start_child(log_path)
    try:
        say(child, "first")
        for generation in (1, 2):
            os.rename(log_path, tmp_path / f"node.log.{generation}")
            child.send_signal(signal.SIGHUP)
            wait_for(log_path.exists, f"the new log file after SIGHUP #{generation}")
            say(child, f"after rotation {generation}")
    finally:
        child.stdin.close()
        assert child.wait(timeout=TIMEOUT) == 0
    assert (tmp_path / "node.log.1").read_text().splitlines()[-1].endswith("NOTI server: first")
    assert "after rotation 1" in (tmp_path / "node.log.2").read_text()
    assert "after rotation 2" not in (tmp_path / "node.log.2").read_text()
    assert log_path.read_text().splitlines()[-1].endswith("NOTI server: after rotation 2")


def test_failed_reopen_on_sighup_shuts_the_process_down(tmp_path):
    directory = tmp_path / "logs"
    directory.mkdir()
    log_path = directory / "node.log"
    child = start_child(log_path)
    try:
        say(child, "first")
        os.unlink(log_path)
        directory.rmdir()  # reopening now fails
        child.send_signal(signal.SIGHUP)
        assert child.wait(timeout=TIMEOUT) == -signal.SIGTERM
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
