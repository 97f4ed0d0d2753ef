"""A run as a CI system reads it: JUnit XML and a Markdown summary (pure: Run + logs -> text).

The JUnit file follows the schema Jenkins and Surefire publishers read (tests/unit/fixtures/
junit.xsd): one `<testcase classname=WORKFLOW name=TASK-INSTANCE-ID>` per task instance. The
summary is GitHub-flavoured Markdown with a Mermaid Gantt chart of the attempts. See docs/CI.md.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from runner.models import Attempt, Reason, Run, RunState, TaskRecord, TaskState

LOG_LINES = 50  # lines of a failed task's log in <system-out>
SUMMARY_LIMIT = 1024 * 1024  # GitHub's limit for one step's summary
SLOWEST = 10  # rows of the slowest-tasks table
GANTT_ATTEMPTS = 100  # attempts drawn in the Gantt chart
FAILED_ROWS = 200  # rows of the failed-tasks table

# Characters XML 1.0 cannot carry (terminal colour codes start with one, \x1b).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def mask(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret value replaced by `***` (longest first)."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def tail_lines(text: str, n: int = LOG_LINES) -> str:
    """The last `n` lines of a log."""
    lines = text.splitlines()
    return "\n".join(lines[-n:]) + ("\n" if lines else "")


def task_seconds(task: TaskRecord) -> float:
    """From the first attempt's start to the last one's end (0 while nothing ended)."""
    ends = [a.finished_at for a in task.attempts if a.finished_at is not None]
    if not task.attempts or not ends:
        return 0.0
    return max(0.0, max(ends) - min(a.started_at for a in task.attempts))


def counts_as_failure(task: TaskRecord) -> bool:
    """A failed task that fails the run (not allowed by `allowFailure`)."""
    return task.state is TaskState.FAILED and not task.allow_failure


def failure_message(task: TaskRecord) -> str:
    """`exit 1 after 3 of 3 attempts`: how the last attempt ended and how many there were."""
    last = task.attempts[-1] if task.attempts else None
    return f"{_ending(last)} after {len(task.attempts)} of {task.retries + 1} attempts"


def _ending(last: Attempt | None) -> str:
    if last is None:
        return "no attempt"
    if last.reason is Reason.EXIT and last.exit_code is not None:
        return f"exit {last.exit_code}"
    if last.error:
        return last.error
    return last.reason.value if last.reason else last.state.value


def not_run_message(run: Run, task: TaskRecord) -> str:
    """Why a task that did not succeed or fail has no result."""
    if task.state is TaskState.SKIPPED:
        return "skipped: its `when` condition was not met by its dependencies"
    if task.state is TaskState.CANCELLED:
        return f"cancelled: the run {run.reason or 'was cancelled or stopped early'}"
    return f"not finished: {task.waiting_reason or task.state.value} when the report was written"


# ---------------------------------------------------------------------- JUnit


def _f(seconds: float) -> str:
    return f"{seconds:.3f}"


def junit_xml(run: Run, *, logs: Mapping[str, str], secrets: Iterable[str] = ()) -> str:
    """The run as JUnit XML. `logs` maps the task ids of failed tasks to their last attempt's
    log; the last LOG_LINES lines go in `<system-out>`."""
    secret_list = [s for s in secrets if s]
    failures = sum(1 for t in run.tasks if counts_as_failure(t))
    skipped = sum(1 for t in run.tasks if t.state is not TaskState.SUCCEEDED) - failures
    total = _f(_run_seconds(run))
    counts = {"tests": str(len(run.tasks)), "failures": str(failures), "errors": "0"}
    root = ET.Element("testsuites", {"name": run.workflow, **counts, "time": total})
    suite = ET.SubElement(
        root,
        "testsuite",
        {
            "name": run.id,
            **counts,
            "skipped": str(skipped),
            "time": total,
            "timestamp": _timestamp(run.created_at),
        },
    )
    props = ET.SubElement(suite, "properties")
    for name, value in _properties(run):
        ET.SubElement(props, "property", {"name": name, "value": _clean(value, secret_list)})
    for task in run.tasks:
        _testcase(suite, run, task, logs.get(task.id, ""), secret_list)
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{body}\n'


def _properties(run: Run) -> list[tuple[str, str]]:
    props = [("run", run.id), ("state", run.state.value)]
    if run.reason:
        props.append(("reason", run.reason))
    props.extend((f"param.{k}", str(v)) for k, v in sorted(run.params.items()))
    return props


def _testcase(suite: ET.Element, run: Run, task: TaskRecord, log: str, secrets: list[str]) -> None:
    case = ET.SubElement(
        suite,
        "testcase",
        {"classname": run.workflow, "name": task.id, "time": _f(task_seconds(task))},
    )
    if task.state is TaskState.SUCCEEDED:
        return
    if task.state is TaskState.FAILED:
        message = failure_message(task)
        if task.allow_failure:
            text = f"allowed failure (allowFailure): {message}"
            ET.SubElement(case, "skipped", {"message": _clean(text, secrets)})
        else:
            reason = task.attempts[-1].reason if task.attempts else None
            attrs = {"message": _clean(message, secrets), "type": reason or "failed"}
            ET.SubElement(case, "failure", attrs).text = _clean(message, secrets)
        if log:
            ET.SubElement(case, "system-out").text = _clean(tail_lines(log), secrets)
        return
    ET.SubElement(case, "skipped", {"message": _clean(not_run_message(run, task), secrets)})


def _clean(text: str, secrets: list[str]) -> str:
    return _NOT_XML.sub("\ufffd", mask(text, secrets) if secrets else text)


def _timestamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _run_seconds(run: Run) -> float:
    if run.started_at is None:
        return 0.0
    end = run.finished_at
    if end is None:
        ends = [a.finished_at for t in run.tasks for a in t.attempts if a.finished_at is not None]
        end = max(ends, default=run.started_at)
    return max(0.0, end - run.started_at)


# ---------------------------------------------------------------------- Markdown

_ICONS = {RunState.SUCCEEDED: "✅", RunState.FAILED: "❌", RunState.CANCELLED: "⛔"}


def markdown(
    run: Run, *, secrets: Iterable[str] = (), limit: int = SUMMARY_LIMIT, log_command: str = ""
) -> str:
    """The run as a Markdown summary of at most `limit` bytes (UTF-8): a state line, the failed
    tasks with their reason and log command, the slowest tasks, a Gantt chart of the attempts.
    `log_command` is how a reader gets a task's log (default `runner logs RUN TASK`)."""
    command = log_command or f"runner logs {run.id}"
    parts = [
        _state_section(run),
        _failed_section(run, command),
        _slowest_section(run),
        _gantt_section(run),
    ]
    text = mask("\n".join(p for p in parts if p), [s for s in secrets if s])
    return truncate(text, limit=limit, note=f"`runner get run {run.id}` shows the whole run")


def _state_section(run: Run) -> str:
    icon = _ICONS.get(run.state, "⏳")
    states: dict[str, int] = {}
    for task in run.tasks:
        states[task.state.value] = states.get(task.state.value, 0) + 1
    tally = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
    line = f"## {icon} {_code(run.workflow)}: run {_code(run.id)} {run.state.value}"
    detail = f"{len(run.tasks)} task instances ({tally or 'none'}) in {_seconds(_run_seconds(run))}"
    if run.reason:
        detail += f"; reason: {_cell(run.reason)}"
    return f"{line}\n\n{detail}\n"


def _failed_section(run: Run, command: str) -> str:
    failed = [t for t in run.tasks if t.state is TaskState.FAILED]
    if not failed:
        return ""
    rows = ["### Failed tasks", "", "| task | reason | log |", "|---|---|---|"]
    for task in failed[:FAILED_ROWS]:
        reason = failure_message(task) + (
            " (allowed by allowFailure)" if task.allow_failure else ""
        )
        rows.append(f"| {_code(task.id)} | {_cell(reason)} | {_code(f'{command} {task.id}')} |")
    if len(failed) > FAILED_ROWS:
        rows.append(f"\n… and {len(failed) - FAILED_ROWS} more failed tasks")
    return "\n".join(rows) + "\n"


def _slowest_section(run: Run) -> str:
    timed = sorted((t for t in run.tasks if task_seconds(t) > 0), key=task_seconds, reverse=True)[
        :SLOWEST
    ]
    if not timed:
        return ""
    rows = ["### Slowest tasks", "", "| task | state | time |", "|---|---|---:|"]
    rows += [f"| {_code(t.id)} | {t.state.value} | {_seconds(task_seconds(t))} |" for t in timed]
    return "\n".join(rows) + "\n"


_GANTT_TAGS = {"succeeded": "done", "failed": "crit", "lost": "crit", "running": "active"}


def _gantt_section(run: Run) -> str:
    attempts = sorted(
        ((t, a) for t in run.tasks for a in t.attempts if a.started_at),
        key=lambda ta: ta[1].started_at,
    )
    if not attempts:
        return ""
    lines = [
        "### Attempts",
        "",
        "```mermaid",
        "gantt",
        "    dateFormat x",
        "    axisFormat %H:%M:%S",
    ]
    end_default = max((a.finished_at or a.started_at for _, a in attempts), default=0.0)
    for task, a in attempts[:GANTT_ATTEMPTS]:
        tag = _GANTT_TAGS.get(a.state.value)
        start = int(a.started_at * 1000)
        end = max(start + 1, int((a.finished_at or end_default) * 1000))
        tags = f"{tag}, " if tag else ""
        lines.append(f"    {_gantt_name(task.id)} #{a.number} :{tags}{start}, {end}")
    lines.append("```")
    if len(attempts) > GANTT_ATTEMPTS:
        lines.append(f"\nThe first {GANTT_ATTEMPTS} of {len(attempts)} attempts are drawn.")
    return "\n".join(lines) + "\n"


def _gantt_name(task_id: str) -> str:
    # ':' ends a Gantt task's title, '#' and ';' start comments and statements
    return re.sub(r"[:#;]", "_", task_id)


def _code(text: str) -> str:
    quoted = text.replace("`", "'")
    return f"`{quoted}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(int(seconds), 60)
    return (
        f"{minutes // 60}h{minutes % 60:02d}m{rest:02d}s"
        if minutes >= 60
        else f"{minutes}m{rest:02d}s"
    )


def truncate(text: str, *, limit: int, note: str) -> str:
    """`text` cut to at most `limit` UTF-8 bytes at a line end, with a note saying so (and a
    code fence closed if the cut left one open)."""
    data = text.encode()
    if len(data) <= limit:
        return text
    tail = f"\n\n_Summary truncated at {limit} bytes; {note}._\n"
    budget = max(0, limit - len(tail.encode()) - len("```\n"))
    kept = data[:budget].decode(errors="ignore")
    kept = kept[: kept.rfind("\n") + 1]
    if kept.count("```") % 2:
        kept += "```\n"
    return kept + tail
