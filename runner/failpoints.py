"""Named fault-injection points, no-ops unless configured (RUNNER_FAILPOINTS).

Spec: comma-separated `name=action`, action one of `crash` (the process dies at once, as with
kill -9), `error` (raise StoreUnavailable), `pause(SECONDS)`. Example:
`RUNNER_FAILPOINTS=claim.after_commit=crash`. Tests use them to kill at exact code points
instead of guessing with timers.
"""

from __future__ import annotations

import os
import re
import signal
import threading

from runner import errors

_ACTION = re.compile(r"^(crash|error|pause\((\d+(?:\.\d+)?)\))$")


class Failpoints:
    def __init__(self, spec: str = "") -> None:
        self._actions: dict[str, float | str] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            name, sep, action = item.partition("=")
            if not sep or not _ACTION.match(action.strip()):
                raise errors.ConfigError(
                    f"RUNNER_FAILPOINTS: {item!r}: expected name=crash|error|pause(SECONDS)"
                )
            match = _ACTION.match(action.strip())
            assert match is not None
            self._actions[name.strip()] = (
                float(match.group(2)) if match.group(2) else match.group(1)
            )

    def __bool__(self) -> bool:
        return bool(self._actions)

    def hit(self, name: str) -> None:
        """Run the action configured for `name`, if any."""
        action = self._actions.get(name)
        if action is None:
            return
        if action == "crash":
            os.kill(os.getpid(), signal.SIGKILL)
        elif action == "error":
            raise errors.StoreUnavailable(f"failpoint {name}")
        elif isinstance(action, float):
            threading.Event().wait(action)
