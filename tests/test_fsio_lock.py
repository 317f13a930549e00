"""The per-profile write lock (envbuild.core.fsio.exclusive_lock): wait, say so once, give up clearly, and
survive a killed holder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from envbuild.core.errors import LockBusyError
from envbuild.core.fsio import exclusive_lock

# Another process takes the lock with envbuild's own function, prints "held", then sleeps.
_HOLDER = textwrap.dedent("""\
    import sys, time
    from pathlib import Path
    from envbuild.core.fsio import exclusive_lock
    with exclusive_lock(Path(sys.argv[1]), timeout=5):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
    """)


def _hold(path: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path), str(seconds)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_an_uncontended_lock_never_calls_on_wait_and_can_be_taken_again(tmp_path: Path) -> None:
    calls: list[None] = []
    path = tmp_path / "locks" / ".cu126.lock"
    for _ in range(2):
        with exclusive_lock(path, timeout=0, on_wait=lambda: calls.append(None)):
            assert path.exists()
    assert calls == []


def test_a_held_lock_calls_on_wait_once_then_raises_lock_busy(tmp_path: Path) -> None:
    path = tmp_path / ".cu126.lock"
    holder = _hold(path, 30)
    calls: list[float] = []
    started = time.monotonic()
    try:
        with pytest.raises(LockBusyError) as caught, exclusive_lock(
                path, timeout=0.5, on_wait=lambda: calls.append(time.monotonic())):
            pytest.fail("the lock was taken while another process held it")
    finally:
        holder.kill()
        holder.wait()
    assert len(calls) == 1 and calls[0] - started < 0.4  # said at once, not at the deadline
    assert time.monotonic() - started >= 0.5
    assert caught.value.message == f"another envbuild has held {path} for over 0.5 s"
    assert caught.value.hint == "let it finish (or stop it), then run the command again"


def test_the_waiter_gets_the_lock_when_the_holder_finishes(tmp_path: Path) -> None:
    path = tmp_path / ".cu126.lock"
    holder = _hold(path, 0.5)
    calls: list[None] = []
    with exclusive_lock(path, timeout=20, on_wait=lambda: calls.append(None)):
        assert holder.wait(timeout=5) == 0  # the holder had to finish first
    assert calls == [None]


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    path = tmp_path / ".cu126.lock"
    holder = _hold(path, 60)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    calls: list[None] = []
    with exclusive_lock(path, timeout=0, on_wait=lambda: calls.append(None)):
        pass
    assert calls == []


def test_one_process_holding_it_makes_a_second_thread_wait(tmp_path: Path) -> None:
    """Two lock objects on one path in one process exclude each other too (`lock --all` threads)."""
    path = tmp_path / ".cu126.lock"
    order: list[str] = []
    inside = threading.Event()

    def second() -> None:
        inside.wait()
        with exclusive_lock(path, timeout=10, on_wait=lambda: order.append("waiting")):
            order.append("second")

    thread = threading.Thread(target=second)
    thread.start()
    with exclusive_lock(path, timeout=1):
        inside.set()
        time.sleep(0.4)
        order.append("first done")
    thread.join(timeout=10)
    assert order == ["waiting", "first done", "second"]
