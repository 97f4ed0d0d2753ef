"""Building the hook deliverer of a command (docs/HOOKS.md): the run's JSON as `get run -o json`
prints it, the process environment for `{fromEnv: NAME}` secrets and command hooks, and the
failpoints of the settings."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

from runner.config import Settings

if TYPE_CHECKING:
    from runner.hooks import Deliverer
    from runner.models import Run
    from runner.store import Store

APPLY_WAIT = 30.0  # seconds `runner apply` waits for its run's hooks (retries included)
STOP_WAIT = 5.0  # seconds a stopping worker lets a delivery in progress finish


def deliverer(
    settings: Settings,
    store: Store,
    *,
    name: str,
    report: Callable[[str], None] | None = None,
    kinds: Collection[str] | None = None,
) -> Deliverer:
    """A deliverer for this process; `kinds=("webhook",)` for a scheduler, whose machine need
    not have what command hooks run (workers run those, like tasks)."""
    from runner import views
    from runner.failpoints import Failpoints
    from runner.hooks import Deliverer, HookEnv

    def render(run: Run) -> bytes:
        return json.dumps(views.run_json(run), indent=2).encode()

    return Deliverer(
        store,
        name=name,
        render=render,
        env=HookEnv(environ=dict(os.environ)),
        failpoints=Failpoints(settings.failpoints),
        lease_for=settings.hook_lease,
        retry_delay=settings.hook_retry_delay,
        report=report,
        kinds=kinds,
    )
