"""A lock file that serializes the native builds of one cache key across processes.

It is an ``fcntl.flock`` on a file: the kernel drops the lock when its holder dies, however
it dies (SIGKILL, the OOM killer, a closed terminal), so a killed build never leaves a lock
behind that blocks the next one. That is the difference from torch's ``FileBaton``, which
is a file whose mere existence is the lock and which outlives a killed holder.

The lock only spares a second process a duplicate build: the builds themselves run in
private folders and move their result into place atomically (native_build.py), so two
processes building at once, or a process that finds flock unsupported on its filesystem,
still load a whole library. Hence:

- the wait is bounded (``FASTMI_BUILD_LOCK_TIMEOUT`` seconds, default 900) and raises
  :class:`BuildLockTimeout` naming the lock, its holder and how to clear it;
- where the filesystem (or the OS: Windows) does not implement flock, the build goes
  ahead without the lock.

The lock file is never deleted: deleting a flock'ed file lets a later process lock a new
file of the same name while a waiter still holds the old one, and two processes would both
hold "the" lock. An unlocked lock file blocks nobody.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import socket
import sys
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock; builds go ahead unlocked (see above), fastmi still imports
    fcntl = None

TIMEOUT_ENV = "FASTMI_BUILD_LOCK_TIMEOUT"
DEFAULT_TIMEOUT_S = 900.0  # a CUDA build for several architectures takes minutes on a busy machine
POLL_S = 0.1

# flock errors that mean "this filesystem cannot lock", not "someone holds it"
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class BuildLockTimeout(RuntimeError):
    """The build lock stayed held by a live process for longer than the wait limit."""


def timeout_s() -> float:
    """The wait limit: ``FASTMI_BUILD_LOCK_TIMEOUT`` seconds, else 900."""
    value = os.environ.get(TIMEOUT_ENV)
    if not value:
        return DEFAULT_TIMEOUT_S
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"{TIMEOUT_ENV}={value!r} is not a number of seconds") from None
    if seconds < 0:
        raise ValueError(f"{TIMEOUT_ENV}={value!r} is negative")
    return seconds


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _describe_owner(fd: int) -> str:
    """Who holds the lock, from what its holder wrote into the file."""
    try:
        owner = json.loads(os.pread(fd, 4096, 0).decode() or "null")
    except (OSError, ValueError):
        owner = None
    if not isinstance(owner, dict) or "pid" not in owner:
        return "a process that has not written its name yet"
    pid, host = owner.get("pid"), owner.get("host", "?")
    text = f"pid {pid} on {host} since {owner.get('since', '?')}"
    if pid == os.getpid() and host == socket.gethostname():
        text += " (this process, another thread)"
    elif host == socket.gethostname() and isinstance(pid, int) and not _alive(pid):
        # flock follows the open file, so a child the owner forked before it died can hold it
        text += ", which has exited: a process it started still holds the lock"
    return text


def _write_owner(fd: int, what: str) -> None:
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "what": what,
             "since": datetime.datetime.now().isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(owner).encode(), 0)


@contextlib.contextmanager
def hold(path, *, what: str, timeout: float | None = None):
    """Holds the lock file ``path`` (created if missing) for the ``with`` body.

    Waits at most ``timeout`` seconds (default: :func:`timeout_s`) for another holder,
    saying once on stderr what it waits for; yields True when it holds the lock, False
    when the filesystem cannot lock (the caller goes ahead unlocked)."""
    path = Path(path)
    limit = timeout_s() if timeout is None else timeout
    if fcntl is None:
        yield False
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    # os.open's descriptors are not inherited across exec (PEP 446): ninja and the
    # compilers it starts do not get the lock, so they cannot keep it alive after we die.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    locked = False
    try:
        start = time.monotonic()
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
                break
            except BlockingIOError:
                pass
            except OSError as exc:
                if exc.errno not in _UNSUPPORTED:
                    raise
                print(f"fastmi: {path.parent} does not support file locks ({exc.strerror}); "
                      f"building {what} without one", file=sys.stderr, flush=True)
                break
            waited = time.monotonic() - start
            if not announced:
                print(f"fastmi: waiting for {what}: {_describe_owner(fd)} is building it "
                      f"(lock {path}; waiting up to {limit:.0f} s, {TIMEOUT_ENV} sets the limit)",
                      file=sys.stderr, flush=True)
                announced = True
            if waited >= limit:
                raise BuildLockTimeout(
                    f"gave up after {waited:.0f} s waiting for {what}: {_describe_owner(fd)} still holds "
                    f"the build lock {path}. A killed build releases it by itself, so its holder is alive: "
                    f"let it finish, raise {TIMEOUT_ENV} (seconds), or stop that process "
                    f"(`fuser -v {path}` lists it); deleting the lock file does not stop it")
            time.sleep(POLL_S)
        if locked:
            _write_owner(fd, what)
        yield locked
    finally:
        if locked:
            os.ftruncate(fd, 0)  # a reader must not name a holder that is gone
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
