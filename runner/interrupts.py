"""SIGINT and SIGTERM deferred in the main thread across code they must not cut half-way.

A signal handler's exception (KeyboardInterrupt; the CLI's SIGTERM exception) is raised in the
main thread at whatever bytecode it is running, including between a lock's acquisition and the
`try` that releases it: inside `contextlib.contextmanager`'s `__enter__` after the generator
took the lock, at the entry of its `__exit__`, in `threading.Condition.__enter__`, `__exit__`
and `wait`. The lock is then left held (a store's next call, or its `close`, waits for it
forever) or released twice. So the stores run those parts in `deferred()` blocks: a signal that
arrives meanwhile is noted and acted on at the end of the outermost block, or earlier at a
`checkpoint()` (where a wait may raise); waits inside a block are cut into `bounded()` slices so
a Ctrl-C still ends them within `SLICE` seconds.

The deferral applies to the signals routed through `install` (the CLI routes SIGINT and
SIGTERM); blocks in other threads cost a thread check and change nothing (signal handlers run
in the main thread only). Signal dispositions are process-wide, and so is this module's state.

A handler can also run where an exception cannot propagate: in a weakref callback or a
`__del__` (importlib's module-lock callbacks run during every import), whose exceptions Python
reports as "Exception ignored" and drops. A Ctrl-C landing there was lost, and `runner apply`
ran its run to the end and exited 0. `install` therefore also hooks `sys.unraisablehook`: the
exception a routed signal raised, dropped there, is noted again and acted on at the next end
of a deferred block, `checkpoint()` or `flush()` (which the CLI calls before it exits).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, overload

if TYPE_CHECKING:
    from concurrent.futures import Future

T = TypeVar("T")
Action = Callable[[int, FrameType | None], object]

SLICE = 0.05  # the longest a wait in a deferred block goes without looking for a signal


class _State:
    """The main thread's deferral: what it nests, what arrived meanwhile."""

    depth = 0  # deferred() and held() blocks the main thread is in
    held = 0  # of which held() blocks: nothing noted is acted on in them
    noted: ClassVar[list[int]] = []  # signals that arrived in the blocks, in order
    actions: ClassVar[dict[int, Action]] = {}  # what each routed signal does
    raised: tuple[int, BaseException] | None = None  # the last action's exception
    unraisable: Callable[[Any], object] = sys.__unraisablehook__  # the hook before ours


_main = threading.main_thread().ident  # the thread signal handlers run in


def _forked() -> None:
    global _main  # a child's main thread is the one that forked
    _main = threading.main_thread().ident


os.register_at_fork(after_in_child=_forked)  # after threading's own


def _is_main() -> bool:
    return threading.get_ident() == _main


def _handle(signum: int, frame: FrameType | None) -> None:
    if _State.depth:  # handlers run in the main thread: in a block, note it
        _State.noted.append(signum)
        return
    _State.noted.clear()  # a block leaving just now: this signal's action stands for them
    _act(signum, frame)


def _act(signum: int, frame: FrameType | None) -> None:
    """Run the signal's action, keeping what it raises (see `_unraisable`)."""
    try:
        _State.actions[signum](signum, frame)
    except BaseException as exc:
        _State.raised = (signum, exc)
        raise


def _unraisable(unraisable: Any) -> None:
    """`sys.unraisablehook`: an exception a routed signal's action raised, dropped where it
    landed (a weakref callback, a `__del__`), is noted again instead of reported."""
    raised = _State.raised
    if raised is not None and unraisable.exc_value is raised[1]:
        _State.raised = None
        _State.noted.append(raised[0])
        return
    _State.unraisable(unraisable)


def install(signum: int, action: Action) -> None:
    """Route `signum` through the deferral: `action(signum, frame)` is what the signal does
    (raise, typically), at once outside a block, at the block's end inside one. Main thread
    only, like `signal.signal`."""
    _State.actions[signum] = action
    signal.signal(signum, _handle)
    if sys.unraisablehook is not _unraisable:
        _State.unraisable = sys.unraisablehook
        sys.unraisablehook = _unraisable


def flush() -> None:
    """Act now on a signal noted and not acted on yet (one dropped where it landed, see
    `_unraisable`): the CLI calls it before it exits, so such a Ctrl-C still ends in 130.
    Outside any block of the main thread; does nothing elsewhere or when nothing is noted."""
    if _State.noted and not _State.depth and _is_main():
        noted, _State.noted = _State.noted, []
        _act(noted[0], None)


class _Deferred:
    """See `deferred`."""

    __slots__ = ()

    def __enter__(self) -> None:
        if _is_main():
            _State.depth += 1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not _is_main():
            return
        _State.depth -= 1
        if _State.depth or not _State.noted:
            return
        noted, _State.noted = _State.noted, []
        _act(noted[0], None)


_DEFERRED = _Deferred()


def deferred() -> _Deferred:
    """A block that SIGINT and SIGTERM do not cut: one arriving inside is acted on when the
    main thread leaves its outermost block (its exception is raised there, from the `with`),
    or at a `checkpoint()` inside. Blocks nest; in other threads they do nothing."""
    return _DEFERRED


class _Held:
    """See `held`."""

    def __init__(self) -> None:
        self.noted: list[int] = []
        self._start = -1  # where this block's signals begin in `_State.noted` (-1: not main)

    def __enter__(self) -> list[int]:
        if _is_main():
            self._start = len(_State.noted)
            _State.depth += 1
            _State.held += 1
        return self.noted

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._start < 0:
            return
        _State.held -= 1
        _State.depth -= 1
        self.noted += _State.noted[self._start :]
        del _State.noted[self._start :]


def held() -> _Held:
    """A block whose SIGINT and SIGTERM are noted and dropped, never acted on (the cancel
    that follows a Ctrl-C must not be cut short by a second one); yields the list of the
    signals noted, filled when the block ends."""
    return _Held()


def checkpoint() -> None:
    """Inside a deferred block of the main thread, act now on a signal noted so far (raise
    its exception here): call it where raising leaves nothing half-done, e.g. between the
    slices of a wait. Does nothing in a held block, elsewhere, or when nothing was noted."""
    if _State.noted and not _State.held and _is_main():
        noted, _State.noted = _State.noted, []
        _act(noted[0], None)


@overload
def bounded(timeout: float) -> float: ...
@overload
def bounded(timeout: None) -> float | None: ...
def bounded(timeout: float | None) -> float | None:
    """`timeout`, cut to `SLICE` inside a deferred block of the main thread (None: wait
    without end), so a wait there returns in time for its caller's `checkpoint()`."""
    if _State.depth and _is_main():
        return SLICE if timeout is None else min(timeout, SLICE)
    return timeout


def result(future: Future[T]) -> T:
    """`future.result()`, never leaving the future's lock held if a signal lands while the
    main thread waits (a thread that sets the future would wait for it forever); a signal
    still ends the wait within `SLICE`."""
    with deferred():
        while True:
            try:
                return future.result(timeout=bounded(None))
            except TimeoutError:
                if future.done():
                    raise  # the future's own
                checkpoint()


def wait(event: threading.Event, timeout: float | None = None) -> bool:
    """`event.wait(timeout)`, never leaving the event's lock held if a signal lands while the
    main thread waits (the thread that sets the event, and every later wait, would block on
    it forever); a signal still ends the wait within `SLICE`."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with deferred():
        while not event.wait(bounded(None if deadline is None else deadline - time.monotonic())):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            checkpoint()
        return True
