"""The delivery loop: claim a recorded delivery, send it, record the result with its token."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection

from runner import errors
from runner.failpoints import Failpoints
from runner.hooks import _send
from runner.models import HookDelivery, HookState, Run
from runner.store.base import Store

logger = logging.getLogger(__name__)

Render = Callable[[Run], bytes]  # the run's JSON (the `get run -o json` contract)
LEASE_FOR = 60.0  # seconds a deliverer holds a claimed delivery (longer than a try may take)
RETRY_DELAY = 2.0  # backoff before the first retry, doubling per failed try
RETRY_MAX = 300.0
POLL = 1.0  # seconds between looks at the outbox in `run` (not on every store change: cheap)
IDLE_WAIT = 1.0  # longest pause of `settle` between looks at its run's deliveries


class Deliverer:
    """Delivers due hooks of the store (or of one run), one at a time, under leases."""

    def __init__(
        self,
        store: Store,
        *,
        name: str,
        render: Render,
        env: _send.HookEnv | None = None,
        failpoints: Failpoints | None = None,
        lease_for: float = LEASE_FOR,
        retry_delay: float = RETRY_DELAY,
        report: Callable[[str], None] | None = None,
        kinds: Collection[str] | None = None,
    ) -> None:
        self.store = store
        self.name = name
        self.render = render
        self.env = env or _send.HookEnv()
        self.failpoints = failpoints or Failpoints()
        self.lease_for = lease_for
        self.retry_delay = retry_delay
        self.kinds = kinds  # None: every kind; ("webhook",) for a scheduler (docs/HOOKS.md)
        self.report = report or (lambda text: logger.warning("%s", text))

    def backoff(self, attempt: int) -> float:
        """Seconds before the try after failed try number `attempt` (>= 1)."""
        return float(min(RETRY_MAX, self.retry_delay * 2 ** max(0, attempt - 1)))

    def deliver_due(
        self, *, run_id: str | None = None, clock: Callable[[], float] = time.time
    ) -> int:
        """Deliver every delivery due now (of `run_id` only, when given); how many tries."""
        tries = 0
        while True:
            got = self.store.claim_hook(
                self.name, now=clock(), lease_for=self.lease_for, run_id=run_id, kinds=self.kinds
            )
            if got is None:
                return tries
            self.deliver(got, clock=clock)
            tries += 1

    def deliver(self, delivery: HookDelivery, *, clock: Callable[[], float] = time.time) -> None:
        """Send one claimed delivery and record how it went (a stale claim records nothing)."""
        try:
            run = self.store.get_run(delivery.run_id)
        except errors.RunNotFound:  # deleted by gc meanwhile, with its deliveries
            return
        body = self.render(run)
        self.failpoints.hit("hook.before_send")
        error = None
        if clock() >= delivery.expires_at:  # paused past the lease: another may have it now
            return
        try:
            _send.send(delivery, run, body, self.env)
        except _send.SendError as exc:
            error = str(exc)
        self.failpoints.hit("hook.after_send")
        retry_at = None
        if error is not None and delivery.attempt <= delivery.spec.retries:
            retry_at = clock() + self.backoff(delivery.attempt)
        try:
            state = self.store.finish_hook(delivery, now=clock(), error=error, retry_at=retry_at)
        except errors.LeaseLost:
            self.report(f"hook {delivery.key}: taken over by another deliverer; not recorded")
            return
        if state is HookState.FAILED:
            self.report(f"hook {delivery.key}: gave up after {delivery.attempt} tries: {error}")
        elif state is HookState.DUE:
            self.report(f"hook {delivery.key}: try {delivery.attempt} failed ({error}); retrying")

    def run(
        self,
        stop: threading.Event,
        *,
        active: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Deliver every `POLL` seconds while `active()` holds, until `stop` is set; store
        errors are reported and retried, they never end the loop."""
        while not stop.wait(POLL):
            if not active():
                continue
            try:
                self.deliver_due(clock=clock)
            except errors.RunnerError as exc:
                self.report(f"hooks: {exc.message}; retrying")

    def start(
        self,
        stop: threading.Event,
        *,
        active: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.time,
    ) -> threading.Thread:
        """`run` in a daemon thread."""
        thread = threading.Thread(
            target=self.run,
            args=(stop,),
            kwargs={"active": active, "clock": clock},
            name="hooks",
            daemon=True,
        )
        thread.start()
        return thread

    def settle(self, run_id: str, *, within: float, clock: Callable[[], float] = time.time) -> bool:
        """Deliver the hooks of one ended run, waiting up to `within` seconds for retries
        (`runner apply`); True when none is left due."""
        deadline = time.monotonic() + within
        while True:
            self.deliver_due(run_id=run_id, clock=clock)
            pending = [
                h
                for h in self.store.get_run(run_id).hooks
                if h.state in (HookState.DUE, HookState.DELIVERING)
            ]
            if not pending:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            soonest = min(h.due_at for h in pending) - clock()
            self.store.wait(max(0.01, min(left, soonest, IDLE_WAIT)), run_id=run_id)
