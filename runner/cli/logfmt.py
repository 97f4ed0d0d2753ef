"""`--log-format json` for the long-running commands: one JSON object a line on stderr.

Each line has `time` (ISO-8601 UTC), `level`, `component` (the logger below `runner.`),
`event` (the record's `action` extra, else its message template: both are bounded, so log
shippers can index them), `run`, `task`, `worker` (null when unknown) and `message`; `error`
holds a traceback when there is one. Only the CLI configures logging (docs/METRICS.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from typing import Any

FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    """A log record as one JSON line; `worker` fills the field when the record has none."""

    def __init__(self, *, worker: str | None = None) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = vars(record)
        stamp = dt.datetime.fromtimestamp(record.created, dt.UTC)
        line: dict[str, Any] = {
            "time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "component": record.name.removeprefix("runner."),
            "event": fields.get("action") or str(record.msg),
            "run": fields.get("run_id", fields.get("run")),
            "task": fields.get("task_id", fields.get("task")),
            "worker": fields.get("worker_id", fields.get("worker", self.worker)),
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def add_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--log-format",
        choices=FORMATS,
        default="text",
        help="json: one JSON object a line on stderr (time, level, component, event, run, "
        "task, worker, message), for log shippers",
    )


def configure(args: argparse.Namespace, *, worker: str | None = None) -> None:
    """Switch the root handlers to `args.log_format` (main set up text logging already)."""
    if getattr(args, "log_format", "text") != "json":
        return
    for handler in logging.getLogger().handlers:
        handler.setFormatter(JsonFormatter(worker=worker))


def announce(args: argparse.Namespace, text: str, *, event: str, **fields: Any) -> None:
    """A status line of the command (`worker ... serving ...`): plain text on stderr, or a
    JSON log line at info level whatever the log level, so json output stays all JSON."""
    if getattr(args, "log_format", "text") != "json":
        print(text, file=sys.stderr, flush=True)
        return
    record = logging.LogRecord("runner.cli", logging.INFO, "", 0, text, None, None)
    record.__dict__.update(action=event, **fields)
    formatter = JsonFormatter()
    print(formatter.format(record), file=sys.stderr, flush=True)
