"""locks: one run per pipeline on a host (kernel flock, released on process death).

    >>> with pipeline_lock(ws.state_dir, "churn") as lock:      # doctest: +SKIP
    ...     run_id = reg.start_run(pipeline="churn")
    ...     lock.set_run_id(run_id)                              # diagnostics only
    ...     ...                                                  # the run

A second acquisition while the first is held raises :class:`~ambidex.errors.LockedError`
(``lock.held``, exit 75) naming the holder read from the lock file.

Why ``flock`` and not a PID file: the kernel drops the lock when the holder's last file
descriptor closes, which includes ``kill -9``, an OOM kill and a power cut, so a crashed run
never blocks the next one and nothing ever has to guess whether a PID is stale. The pid,
host, start time and run id written into the file are for the error message only; a file
left behind holding the pid of some live, unrelated process blocks nothing.

What the lock promises, precisely (flock locks belong to an *open file description*):

- every call of :func:`pipeline_lock` opens the file anew, so a second acquisition is refused
  whether it comes from another process, another thread of this process, or the same thread
  (the lock is not re-entrant);
- the descriptor is close-on-exec, so stage processes started with ``subprocess`` do not
  inherit it (an orphaned stage cannot keep the next run out); a child made with a bare
  ``fork()`` (``multiprocessing`` with the fork start method) shares it until it exits;
- the file is never deleted: unlinking a lock file lets two processes hold locks on two
  different inodes under the same name;
- flock over NFS/CIFS is emulated or local to one client, so a lock directory on a network
  filesystem is refused (several hosts sharing a registry need a database lease instead).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from .db import NETWORK_FILESYSTEMS, filesystem_of
from .errors import AmbidexError, LockedError, UsageError

__all__ = ["pipeline_lock", "PipelineLock", "lock_path", "read_holder", "LOCKS_DIR"]

LOCKS_DIR = "locks"
_NAME = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_DIR_MODE, _FILE_MODE = 0o750, 0o640
_MAX_INFO = 4096


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def lock_path(state_dir: str | os.PathLike, pipeline_name: str) -> Path:
    """``<state_dir>/locks/<pipeline>.lock``; UsageError if the name breaks the pipeline-name grammar."""
    if not isinstance(pipeline_name, str) or not _NAME.fullmatch(pipeline_name):
        raise UsageError(f"{pipeline_name!r} is not a valid pipeline name.", code="usage.invalid_name",
                         hint="Use 1 to 63 lowercase letters, digits, '_' or '-', starting with a letter.")
    return Path(state_dir) / LOCKS_DIR / f"{pipeline_name}.lock"


@dataclass
class PipelineLock:
    """A held pipeline lock: where it is and what its file says about the holder (this process)."""

    path: Path
    pipeline: str
    pid: int
    host: str
    started_at: dt.datetime
    run_id: str | None = None
    _fd: int = field(default=-1, repr=False)

    def to_dict(self) -> dict:
        return {"pid": self.pid, "host": self.host, "started_at": _iso(self.started_at),
                "run_id": self.run_id, "pipeline": self.pipeline}

    def set_run_id(self, run_id: str | None) -> None:
        """Record the run id in the lock file once the run exists (diagnostics only)."""
        self.run_id = run_id
        self._write()

    def _write(self) -> None:
        data = (json.dumps(self.to_dict(), sort_keys=True) + "\n").encode()
        # Write first, then cut the tail: a reader sees either the old first line or the new
        # one, never an empty file (readers parse the first line only).
        os.pwrite(self._fd, data, 0)
        os.ftruncate(self._fd, len(data))


def read_holder(path: str | os.PathLike) -> dict | None:
    """What a lock file says about its last holder (pid, host, started_at, run_id), or None if unreadable.

    Diagnostics only: the holder may be gone and the pid reused; only flock knows who holds it.
    """
    try:
        with open(path, "rb") as f:
            return _parse_holder(f.read(_MAX_INFO))
    except OSError:
        return None


def _parse_holder(raw: bytes) -> dict | None:
    try:
        info = json.loads(raw.split(b"\n", 1)[0].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _describe(info: dict | None) -> str:
    if not info:
        return "held by another process (its lock file records no details yet)"
    text = f"held by pid {info.get('pid', '?')} on host {info.get('host', '?')}"
    if info.get("started_at"):
        text += f" since {info['started_at']}"
    if info.get("run_id"):
        text += f", run {info['run_id']}"
    return text


def _make_dir(path: Path) -> None:
    if path.is_dir():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=_DIR_MODE)
    except FileExistsError:
        return
    os.chmod(path, _DIR_MODE)  # mkdir's mode is filtered by the umask


def _refuse_network_fs(directory: Path, mounts: Path) -> None:
    fstype, mountpoint = filesystem_of(directory, mounts)
    kind = fstype.lower()
    if kind in NETWORK_FILESYSTEMS or kind.startswith(("nfs", "smb", "cifs")):
        raise AmbidexError(
            f"Refusing to keep pipeline locks in {directory} on a network filesystem "
            f"({fstype} mounted at {mountpoint}): flock there is emulated or local to one client, "
            "so two runs of a pipeline could run at once.",
            code="lock.network_filesystem",
            hint="Set 'state:' in ambidex.yaml to a folder on a local disk.",
            path=str(directory), fstype=fstype)


@contextlib.contextmanager
def pipeline_lock(state_dir: str | os.PathLike, pipeline_name: str, *, run_id: str | None = None,
                  clock: Callable[[], dt.datetime] | None = None,
                  mounts: str | os.PathLike = "/proc/mounts") -> Iterator[PipelineLock]:
    """Hold the lock of ``pipeline_name`` for the ``with`` block, or raise LockedError (exit 75) at once.

    ``clock`` gives the start time written for diagnostics; ``mounts`` is the mount table used to
    refuse a network filesystem.

    >>> with pipeline_lock(Path(".ambidex"), "churn", run_id="3f2a") as lock:   # doctest: +SKIP
    ...     lock.path
    PosixPath('.ambidex/locks/churn.lock')
    """
    path = lock_path(state_dir, pipeline_name)
    _make_dir(path.parent)
    _refuse_network_fs(path.parent, Path(mounts))
    try:
        # No O_TRUNC: the holder's diagnostics must survive a refused attempt.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, _FILE_MODE)
    except OSError as e:
        hint = ("It is a symlink; remove it (ambidex recreates the file)." if e.errno == errno.ELOOP
                else "Check that the state folder exists and is writable by this user.")
        raise AmbidexError(f"Cannot open lock file {path}: {e.strerror}.", code="lock.unavailable",
                           hint=hint, path=str(path)) from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            info = _parse_holder(os.pread(fd, _MAX_INFO, 0))
            raise LockedError(
                f"Pipeline '{pipeline_name}' is already running: {_describe(info)}.",
                hint="That run releases the lock when it ends (a crashed run releases it at once); "
                     f"try again later, or see 'ambidex runs list --pipeline {pipeline_name}'.",
                pipeline=pipeline_name, path=str(path), holder=info) from None
        except OSError as e:  # ENOLCK, EOPNOTSUPP: a filesystem without flock
            raise AmbidexError(f"Cannot lock {path}: {e.strerror}.", code="lock.unavailable",
                               hint="Set 'state:' in ambidex.yaml to a folder on a local disk.",
                               path=str(path)) from e
        lock = PipelineLock(path=path, pipeline=pipeline_name, pid=os.getpid(), host=socket.gethostname(),
                            started_at=(clock or _utcnow)(), run_id=run_id, _fd=fd)
        lock._write()
        try:
            yield lock
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # still held: nobody reads a finished run as the holder
    finally:
        os.close(fd)  # the kernel releases the flock with the last descriptor
