"""A provider killed with SIGKILL leaves no plugin process behind (parent-death signal)."""
import os
import signal
import subprocess
import sys
import time

SCRIPT = r"""
import asyncio, logging, shutil, sys
from katzenpost.provider.kaetzchen.cborplugin import PluginProcess

async def main():
    plugin = PluginProcess([shutil.which("katzenpost-echo-plugin") or sys.argv[1],
                            "-log_dir", sys.argv[2]], logging.getLogger("t"))
    await plugin.start(20)
    print(plugin.proc.pid, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def test_plugins_die_with_a_killed_provider(tmp_path):
    echo = os.path.join(os.path.dirname(sys.executable), "katzenpost-echo-plugin")
    parent = subprocess.Popen([sys.executable, "-c", SCRIPT, echo, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        pid = int(parent.stdout.readline())
        os.kill(pid, 0)                                   # the plugin runs
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            # a zombie of init's is gone too once reaped; check the state
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().split(") ")[1].startswith("Z"):
                        return
            except FileNotFoundError:
                return
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
        raise AssertionError("the plugin outlived its killed provider")
    finally:
        if parent.poll() is None:
            parent.kill()
