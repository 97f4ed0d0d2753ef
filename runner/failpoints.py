"""Named fault-injection points, no-ops unless configured (RUNNER_FAILPOINTS).

Spec: comma-separated `name=action`, action one of `crash` (the process dies at once, as with
kill -9), `error` (raise StoreUnavailable), `pause(SECONDS)`, `kill(SIGNAME)` (the process sends
itself that signal, e.g. `kill(TERM)`: a signal landing at exactly that point). Example:
`RUNNER_FAILPOINTS=claim.after_commit=crash`. Tests use them to kill at exact code points
instead of guessing with timers.
"""

from __future__ import annotations

import os
import re
import signal
import threading

from runner import errors

_ACTION = re.compile(r"^(crash|error|pause\((\d+(?:\.\d+)?)\)|kill\(([A-Z]+)\))$")


class Failpoints:
    def __init__(self, spec: str = "") -> None:
        self._actions: dict[str, float | str] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            name, sep, action = item.partition("=")
            if not sep or not _ACTION.match(action.strip()):
                raise errors.ConfigError(
                    f"RUNNER_FAILPOINTS: {item!r}: "
                    "expected name=crash|error|pause(SECONDS)|kill(SIGNAME)"
                )
            match = _ACTION.match(action.strip())
            assert match is not None
            self._actions[name.strip()] = (
                float(match.group(2)) if match.group(2) else match.group(1)
            )
            if match.group(3) and not hasattr(signal, f"SIG{match.group(3)}"):
                raise errors.ConfigError(
                    f"RUNNER_FAILPOINTS: {item!r}: no signal SIG{match.group(3)}"
                )

    def spec(self, prefix: str) -> str:
        """The spec of the points whose name starts with `prefix` (for a helper process)."""
        items = []
        for name, action in sorted(self._actions.items()):
            if name.startswith(prefix):
                items.append(
                    f"{name}=" + (f"pause({action})" if isinstance(action, float) else action)
                )
        return ",".join(items)

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
        elif action.startswith("kill("):
            os.kill(os.getpid(), getattr(signal, f"SIG{action[5:-1]}"))
