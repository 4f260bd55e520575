"""Pipeline locks: one run at a time, the holder named, exit 75, and a crash never blocks the next run."""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import threading

import pytest

from ambidex.errors import AmbidexError, LockedError, UsageError
from ambidex.locks import lock_path, pipeline_lock, read_holder

HOLDER = textwrap.dedent("""\
    import subprocess, sys, time
    from ambidex.locks import pipeline_lock
    with pipeline_lock(sys.argv[1], sys.argv[2], run_id="run-abc"):
        if len(sys.argv) > 3:  # an orphan-to-be: even with close_fds=False it must not inherit the lock
            child = subprocess.Popen(["sleep", "60"], close_fds=False)
            print(child.pid, flush=True)
        print("locked", flush=True)
        time.sleep(60)
    """)


@pytest.fixture
def holder(tmp_path):
    """Start a process holding the lock of pipeline 'churn'; yields (process, state_dir, child pids)."""
    procs, children = [], []

    def start(name="churn", spawn_child=False):
        args = [sys.executable, "-c", HOLDER, str(tmp_path / "state"), name] + (["child"] if spawn_child else [])
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        line = proc.stdout.readline().strip()
        if spawn_child:
            children.append(int(line))
            line = proc.stdout.readline().strip()
        assert line == "locked"
        return proc

    yield start, tmp_path / "state", children
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_second_process_gets_locked_error_naming_the_holder(holder):
    start, state, _ = holder
    proc = start()
    with pytest.raises(LockedError) as info:
        with pipeline_lock(state, "churn"):
            pytest.fail("acquired a lock another process holds")
    err = info.value
    assert err.exit_code == 75 and err.code == "lock.held"
    assert f"pid {proc.pid}" in err.message
    assert f"on host {socket.gethostname()}" in err.message and "run run-abc" in err.message
    assert "since 20" in err.message and err.message.count("Z") >= 1
    assert "releases the lock when it ends" in err.hint
    envelope = err.to_dict()
    assert envelope["exit_code"] == 75 and envelope["details"]["holder"]["pid"] == proc.pid


def test_kill_9_of_the_holder_frees_the_lock_at_once(holder):
    start, state, _ = holder
    proc = start()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with pipeline_lock(state, "churn", run_id="next") as lock:
        assert read_holder(lock.path)["pid"] == os.getpid()
        assert read_holder(lock.path)["run_id"] == "next"


def test_an_orphaned_child_of_a_killed_holder_does_not_keep_the_lock(holder):
    start, state, children = holder
    proc = start(spawn_child=True)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    os.kill(children[0], 0)  # the orphan still runs
    with pipeline_lock(state, "churn"):
        pass


def test_other_pipelines_are_not_blocked(holder):
    start, state, _ = holder
    start("churn")
    with pipeline_lock(state, "demand"):
        pass


def test_a_stale_file_with_a_live_unrelated_pid_does_not_block(tmp_path):
    path = lock_path(tmp_path, "churn")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"pid": 1, "host": socket.gethostname(), "started_at": "2020-01-01T00:00:00Z",
                                "run_id": "ancient"}) + "\n")
    assert os.path.exists("/proc/1")  # pid 1 is alive and is not us
    with pipeline_lock(tmp_path, "churn", run_id="new") as lock:
        info = read_holder(path)
        assert info["pid"] == os.getpid() and info["run_id"] == "new" and lock.run_id == "new"


def test_a_garbage_lock_file_does_not_block(tmp_path):
    path = lock_path(tmp_path, "churn")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\xff\x00 not json" * 1000)
    with pipeline_lock(tmp_path, "churn"):
        assert read_holder(path)["pid"] == os.getpid()


def test_another_thread_is_refused_too(tmp_path):
    """flock belongs to the open file description; every pipeline_lock call opens its own."""
    errors = []

    def contender():
        try:
            with pipeline_lock(tmp_path, "churn"):
                errors.append(None)
        except LockedError as e:
            errors.append(e)

    with pipeline_lock(tmp_path, "churn"):
        t = threading.Thread(target=contender)
        t.start()
        t.join()
    assert isinstance(errors[0], LockedError) and f"pid {os.getpid()}" in errors[0].message
    t = threading.Thread(target=contender)  # released: now a thread may take it
    t.start()
    t.join()
    assert errors[1] is None


def test_the_lock_is_not_reentrant(tmp_path):
    with pipeline_lock(tmp_path, "churn"):
        with pytest.raises(LockedError):
            with pipeline_lock(tmp_path, "churn"):
                pass


def test_diagnostics_written_updated_and_cleared(tmp_path):
    clock = lambda: dt.datetime(2026, 5, 2, 2, 0, 1, tzinfo=dt.timezone.utc)  # noqa: E731
    with pipeline_lock(tmp_path, "churn", clock=clock) as lock:
        info = read_holder(lock.path)
        assert info == {"pid": os.getpid(), "host": socket.gethostname(), "started_at": "2026-05-02T02:00:01Z",
                        "run_id": None, "pipeline": "churn"}
        lock.set_run_id("3f2a")
        assert read_holder(lock.path)["run_id"] == "3f2a"
        assert lock.path.read_text().count("\n") == 1  # the shorter rewrite left no tail
    assert lock.path.exists() and lock.path.read_bytes() == b""  # never unlinked; emptied on release


def test_modes_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        with pipeline_lock(tmp_path / "state", "churn") as lock:
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE(lock.path.parent.stat().st_mode) == 0o750
    assert stat.S_IMODE(lock.path.stat().st_mode) == 0o640


@pytest.mark.parametrize("name", ["../etc", "Churn", "", "a/b", "x" * 64, "1abc"])
def test_invalid_pipeline_names_are_refused(tmp_path, name):
    with pytest.raises(UsageError) as info:
        with pipeline_lock(tmp_path, name):
            pass
    assert info.value.exit_code == 2
    assert not (tmp_path / "locks").exists()


def test_a_symlinked_lock_file_is_refused(tmp_path):
    (tmp_path / "locks").mkdir()
    (tmp_path / "elsewhere").write_text("")
    (tmp_path / "locks" / "churn.lock").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(AmbidexError) as info:
        with pipeline_lock(tmp_path, "churn"):
            pass
    assert info.value.code == "lock.unavailable" and "symlink" in info.value.hint


def test_lock_dir_on_a_network_filesystem_is_refused(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text(f"/dev/sda1 / ext4 rw 0 0\nserver:/export {tmp_path} nfs4 rw 0 0\n")
    with pytest.raises(AmbidexError) as info:
        with pipeline_lock(tmp_path / "state", "churn", mounts=mounts):
            pass
    assert info.value.code == "lock.network_filesystem" and "nfs4" in info.value.message
    assert "state:" in info.value.hint
