"""A Ctrl-C that lands anywhere in a store call of the main thread leaves no lock of the store
held, and is never lost (runner.interrupts).

CPython runs a signal's Python handler at an eval-breaker check, between two bytecode
instructions; KeyboardInterrupt is raised there. Instead of hoping a real signal lands in the
few instructions where it does harm, `_SigintAt(n)` runs the process's SIGINT handler before the
n-th instruction the main thread executes (every one in turn, a superset of the real checks),
and each test then looks, while the KeyboardInterrupt is being handled (where `runner apply`
cancels its run and closes its store), at what the store holds. Before the fix the handler at
the end of `contextmanager.__enter__` left the store's lock held, and `runner apply`'s
`store.close()` waited for it forever.
"""

from __future__ import annotations

import fcntl
import functools
import os
import signal
import subprocess
import sys
import threading
import time
import types
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, cast

import pytest

from runner import interrupts
from runner.store import open_store
from runner.store.etcd import client as etcd_client
from runner.store.etcd import runs as etcd_runs
from runner.store.etcd.watch import Watcher
from runner.store.sqlite.store import SqliteStore
from tests.contract import plans
from tests.contract.plans import T0


@pytest.fixture(autouse=True)
def _routed() -> Iterator[None]:
    """SIGINT routed through runner.interrupts, as `runner` routes it; put back after."""
    before = signal.getsignal(signal.SIGINT)
    interrupts.install(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)
        interrupts._State.actions.pop(signal.SIGINT, None)
        assert (interrupts._State.depth, interrupts._State.noted) == (0, [])


class _SigintAt:
    """A tracer that runs the current SIGINT handler before the `at`-th bytecode instruction
    the main thread executes (as CPython does when a SIGINT has just arrived), then stops
    tracing; `count` is how many instructions it saw."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.count = 0
        self.landed = False

    def __call__(self, frame: FrameType, event: str, arg: object) -> _SigintAt | None:
        frame.f_trace_opcodes = True
        if event == "opcode":
            self.count += 1
            if self.count == self.at:
                sys.settrace(None)
                self.landed = True
                handler = signal.getsignal(signal.SIGINT)
                assert callable(handler)
                handler(signal.SIGINT, frame)
        return self


def _traced(tracer: _SigintAt, call: Callable[[], object]) -> None:
    before = sys.gettrace()
    sys.settrace(tracer)
    try:
        call()
    finally:
        sys.settrace(before)


def _instructions(call: Callable[[], object]) -> int:
    counter = _SigintAt(at=0)
    _traced(counter, call)
    return counter.count


def _sweep(
    setup: Callable[[], Any], call: Callable[[Any], object], check: Callable[[Any], list[str]]
) -> None:
    """For each instruction of `call(setup())`: a SIGINT handled there raises
    KeyboardInterrupt out of the call, and `check` finds nothing wrong while it is handled."""
    first = setup()
    total = _instructions(functools.partial(call, first))
    assert total > 50
    wrong: list[str] = []
    for at in range(1, total + 1):
        subject, tracer = setup(), _SigintAt(at)
        try:
            _traced(tracer, functools.partial(call, subject))
        except KeyboardInterrupt:
            wrong += [f"SIGINT at instruction {at}: {w}" for w in check(subject)]
        else:
            if tracer.landed:  # landed, yet the call returned: the Ctrl-C was lost
                wrong.append(f"SIGINT at instruction {at}: no KeyboardInterrupt")
        assert not wrong, "\n".join(wrong[:10])


def _held(lock: Any) -> bool:
    """Whether `lock` (a threading.Lock) is held, by anyone."""
    if lock.acquire(blocking=False):
        lock.release()
        return False
    return True


def _flock_held(db_path: str) -> bool:
    fd = os.open(db_path + "-lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _store_left(store: SqliteStore) -> list[str]:
    """What the store holds that nothing will release (the interrupted call has ended)."""
    db = store.db
    left = []
    if _held(db.lock):
        left.append("the store's lock is held (close() would wait for it forever)")
    if _held(db.cond):
        left.append("the store's condition is held (the next commit would wait forever)")
    if not db.closed and db.connection().in_transaction:
        left.append("a transaction is open (the next one fails to begin)")
    if _flock_held(db.path):
        left.append("the file's writer lock is held")
    return left


@dataclass
class Subject:
    """A store and a pending run of it, for one trial."""

    store: SqliteStore
    run_id: str


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    opened = cast(SqliteStore, open_store(f"sqlite:///{tmp_path / 'state.db'}"))
    try:
        yield opened
    finally:
        if not _held(opened.db.lock):  # (a failure before the fix could leave it held)
            with interrupts.held():
                opened.close()


def _new_run(store: SqliteStore) -> Subject:
    run_id = plans.new_run_id()
    store.create_run(plans.plan(plans.task("a")), run_id=run_id, now=T0)
    return Subject(store, run_id)


def test_a_sigint_anywhere_in_a_store_read_leaves_nothing_held(store: SqliteStore) -> None:
    subject = _new_run(store)
    _sweep(
        lambda: subject,
        lambda s: s.store.get_run(s.run_id, tasks=False),
        lambda s: _store_left(s.store),
    )


def test_a_sigint_anywhere_in_a_store_write_leaves_nothing_held(store: SqliteStore) -> None:
    """A write also wakes the waiters, under the waiters' condition."""
    _sweep(
        lambda: _new_run(store),
        lambda s: s.store.cancel_run(s.run_id, now=T0),
        lambda s: _store_left(s.store),
    )


def test_a_sigint_anywhere_in_a_store_wait_leaves_nothing_held(store: SqliteStore) -> None:
    """The waiter's condition, its poll of the WAL file and of the database's version."""
    _sweep(lambda: store, lambda s: s.wait(0.002), _store_left)


def test_a_sigint_anywhere_in_close_closes_the_store_whole_or_not_at_all(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"

    def check(s: SqliteStore) -> list[str]:
        if not s.db.closed:
            return _store_left(s)
        return ["the WAL watch is left open"] if s._waiter.watcher.active else []

    _sweep(lambda: cast(SqliteStore, open_store(url)), lambda s: s.close(), check)


def test_apply_s_cancel_and_close_after_a_sigint_in_a_store_read_return(
    store: SqliteStore,
) -> None:
    """What `runner apply` does on Ctrl-C, wherever the signal lands in its follow loop's
    read: while the KeyboardInterrupt is handled it stores the cancel and closes the store
    (before the fix, at some landing points, close() waited for the lock forever)."""
    url = f"sqlite:///{store.path}"
    first = _new_run(store)
    total = _instructions(functools.partial(first.store.get_run, first.run_id, tasks=False))
    for at in range(1, total + 1):
        s = _new_run(cast(SqliteStore, open_store(url)))
        try:
            _traced(_SigintAt(at), functools.partial(s.store.get_run, s.run_id, tasks=False))
        except KeyboardInterrupt:
            assert not _store_left(s.store), f"SIGINT at instruction {at}"
            with interrupts.held():
                assert s.store.cancel_run(s.run_id, now=T0).state.value == "cancelled"
                s.store.close()
        else:
            pytest.fail(f"SIGINT at instruction {at}: no KeyboardInterrupt")


def test_a_sigint_while_a_write_waits_for_another_process_ends_the_wait(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transaction defers a Ctrl-C, but not for the time another process holds the file's
    writer lock (up to the busy timeout, 30 s): the wait's next round raises it."""
    subject = _new_run(store)
    rounds = []

    def sleep(seconds: float) -> None:  # the writer lock's backoff, instead of sleeping
        rounds.append(seconds)
        if len(rounds) == 1:
            signal.raise_signal(signal.SIGINT)  # noted: the transaction defers it
        elif len(rounds) > 3:  # (without the fix it waits on: end it, the assert says so)
            raise OSError("still waiting")

    clock = types.SimpleNamespace(monotonic=time.monotonic, sleep=sleep)
    monkeypatch.setattr("runner.store.sqlite.checkpoint.time", clock)
    other = os.open(store.path + "-lock", os.O_RDWR)  # another process's hold of it
    fcntl.flock(other, fcntl.LOCK_EX)
    try:
        with pytest.raises(KeyboardInterrupt):
            store.cancel_run(subject.run_id, now=T0)
    finally:
        os.close(other)
    assert len(rounds) == 1
    assert not _store_left(store)


def _watcher() -> Watcher:
    return Watcher(cast(etcd_client.Client, None), "runner/")  # its watch thread not started


def test_a_sigint_anywhere_in_an_etcd_watcher_wait_leaves_its_condition_free() -> None:
    def check(watcher: Watcher) -> list[str]:
        owned = watcher._cond._is_owned()  # type: ignore[attr-defined]
        return ["its condition is held: the watch thread would wait forever"] if owned else []

    _sweep(_watcher, lambda w: w.wait(0, 0.002), check)


def test_a_sigint_anywhere_in_waiting_for_a_run_s_chunks_leaves_their_lock_free(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """etcd's create_run waits for its sender threads to write the run's chunks; a chunk
    future's lock left held would stop the sender that sets it, which close() joins."""
    monkeypatch.setattr(interrupts, "SLICE", 0.001)

    def chunks(future: Future[list[str]]) -> etcd_runs._Chunks:
        sending = etcd_runs._Chunks(cast(Any, None), cast(Any, None), cast(Any, None))
        sending.pending.append(future)
        return sending

    written: Future[list[str]] = Future()
    threading.Timer(0.005, written.set_result, (["k"],)).start()  # a few slices of waiting
    total = _instructions(chunks(written).wait)
    assert total > 50
    for at in range(1, total + 1):  # the signal lands: the wait goes on until it does
        future: Future[list[str]] = Future()
        try:
            _traced(_SigintAt(at), chunks(future).wait)
        except KeyboardInterrupt:
            owned = future._condition._is_owned()  # type: ignore[attr-defined]
            assert not owned, f"SIGINT at instruction {at}: the chunk's lock is held"
        else:
            pytest.fail(f"SIGINT at instruction {at}: no KeyboardInterrupt")


def test_a_sigint_anywhere_in_waiting_for_an_event_leaves_its_lock_free() -> None:
    """`runner worker`, `runner serve` and `apply`'s local workers wait in the main thread for
    an Event their worker thread sets: its lock left held would stop that thread for good."""

    def check(event: threading.Event) -> list[str]:
        owned = event._cond._is_owned()  # type: ignore[attr-defined]
        return ["the event's lock is held: setting it would wait forever"] if owned else []

    _sweep(threading.Event, lambda event: interrupts.wait(event, 0.002), check)


def test_waiting_for_an_event_returns_whether_it_was_set() -> None:
    event = threading.Event()
    assert not interrupts.wait(event, 0.001)
    threading.Timer(0.01, event.set).start()
    assert interrupts.wait(event)


# ---------------------------------------------------------------------- the deferral itself


def test_a_sigint_in_a_deferred_block_is_raised_at_its_end() -> None:
    reached = []

    def nested() -> None:
        with interrupts.deferred():
            with interrupts.deferred():
                signal.raise_signal(signal.SIGINT)
                reached.append("inner end")
            reached.append("outer end")

    with pytest.raises(KeyboardInterrupt):
        nested()
    assert reached == ["inner end", "outer end"]


def test_a_checkpoint_raises_a_noted_sigint_inside_the_block() -> None:
    reached = []

    def block() -> None:
        with interrupts.deferred():
            signal.raise_signal(signal.SIGINT)
            reached.append("before")
            interrupts.checkpoint()
            reached.append("after")

    with pytest.raises(KeyboardInterrupt):
        block()
    assert reached == ["before"]


def test_a_held_block_drops_its_signals_and_says_which() -> None:
    with interrupts.held() as noted, interrupts.deferred():
        signal.raise_signal(signal.SIGINT)
        interrupts.checkpoint()  # does nothing in a held block
    assert noted == [signal.SIGINT]


def test_waits_are_cut_into_slices_only_in_a_deferred_block_of_the_main_thread() -> None:
    assert interrupts.bounded(10.0) == 10.0
    with interrupts.deferred():
        assert interrupts.bounded(10.0) == interrupts.SLICE
        assert interrupts.bounded(None) == interrupts.SLICE
        seen: list[float | None] = []
        thread = threading.Thread(target=lambda: seen.append(interrupts.bounded(10.0)))
        thread.start()
        thread.join()
        assert seen == [10.0]


def _sigint_in_a_weakref_callback() -> None:
    """A SIGINT whose handler runs inside a weakref callback, as importlib's module-lock
    callbacks run during every import: Python drops what the callback raises."""

    class Thing:
        pass

    thing = Thing()
    ref = weakref.ref(thing, lambda _: signal.raise_signal(signal.SIGINT))
    del thing  # the callback runs here; its KeyboardInterrupt is "ignored"
    assert ref() is None


def test_a_sigint_dropped_in_a_weakref_callback_is_raised_at_the_next_block_end() -> None:
    """`runner apply` ran its run to the end and exited 0 after such a Ctrl-C (2 of 200
    interrupts sent 0-350 ms after it started)."""
    _sigint_in_a_weakref_callback()
    assert interrupts._State.noted == [signal.SIGINT]
    with pytest.raises(KeyboardInterrupt), interrupts.deferred():
        pass


def test_flush_raises_a_dropped_sigint_outside_any_block() -> None:
    interrupts.flush()  # nothing noted: nothing happens
    _sigint_in_a_weakref_callback()
    with pytest.raises(KeyboardInterrupt):
        interrupts.flush()


def test_other_unraisable_exceptions_still_reach_the_previous_hook() -> None:
    seen: list[BaseException | None] = []
    previous = interrupts._State.unraisable
    interrupts._State.unraisable = lambda u: seen.append(u.exc_value)
    try:

        class Thing:
            pass

        thing = Thing()
        ref = weakref.ref(thing, lambda _: 1 / 0)
        del thing
        assert ref() is None
    finally:
        interrupts._State.unraisable = previous
    assert [type(e) for e in seen] == [ZeroDivisionError]
    assert interrupts._State.noted == []


def test_orjson_is_imported_with_interrupts_deferred() -> None:
    """orjson's module init crashes the process (SIGSEGV) when a KeyboardInterrupt is raised
    inside it: 15 of 120 Ctrl-Cs sent 80-95 ms after `runner apply` started, while the SQLite
    store's modules loaded. The stores import it in a deferred block."""
    script = (
        "import signal, sys\n"
        "from runner import interrupts\n"
        "interrupts.install(signal.SIGINT, signal.default_int_handler)\n"
        "depths = []\n"
        "def hook(event, args):\n"
        "    if event == 'import' and args[0] == 'orjson':\n"
        "        depths.append(interrupts._State.depth)\n"
        "sys.addaudithook(hook)\n"
        "import runner.store.sqlite.rows\n"
        "import runner.store.etcd.records\n"
        "print(depths)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[1]"  # the first import loads it, in a block
