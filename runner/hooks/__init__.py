"""Delivering run hooks (`spec.hooks`, docs/HOOKS.md): take a recorded delivery from the store
under a lease, send it (a webhook POST or a command), record the result with its token.

`Deliverer` is what the leading scheduler, `runner worker` and `runner apply` run; the store
(`Store.claim_hook` / `finish_hook`) keeps the outbox, so any of them may deliver and a dead
one's delivery is taken up again when its lease lapses.
"""

from __future__ import annotations

from runner.hooks._deliver import Deliverer, Render
from runner.hooks._send import HookEnv, resolve_headers

__all__ = ["Deliverer", "HookEnv", "Render", "resolve_headers"]
