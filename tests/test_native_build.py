"""The build lock (fastmi/runtime/build_lock.py): a holder that dies, however it dies,
releases it at once; a live holder makes the wait stop at its limit with a message that
names the lock, its holder and how to clear it."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from fastmi.runtime import build_lock


def test_a_dead_holder_releases_the_lock_at_once(tmp_path):
    lock = tmp_path / "build.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(600)\n", str(lock)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(build_lock.BuildLockTimeout, match="still holds"):
            with build_lock.hold(lock, what="x", timeout=0.2):
                pass
        holder.kill()  # SIGKILL: no chance to unlock or clean up
        holder.wait()
        start = time.monotonic()
        with build_lock.hold(lock, what="x", timeout=30) as locked:
            assert locked
        assert time.monotonic() - start < 2
    finally:
        holder.kill()
        holder.wait()


def test_a_bad_timeout_setting_is_named(monkeypatch):
    monkeypatch.setenv(build_lock.TIMEOUT_ENV, "soon")
    with pytest.raises(ValueError, match="FASTMI_BUILD_LOCK_TIMEOUT='soon'"):
        build_lock.timeout_s()
