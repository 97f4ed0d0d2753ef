"""Big HTML fragments built in Python: a 1,000-task run's table has tens of thousands of
values, which a template would escape one call at a time (docs/UI.md, performance)."""

from __future__ import annotations

from html import escape
from typing import Any


def _attempts(task: dict[str, Any]) -> str:
    return " ".join(
        f'<span class="att s-{a["state"]}" title="{a["state"]} {escape(a["reason"] or "")}">'
        f"#{a['number']} {a['state']}</span>"
        for a in task["attempts"]
    )


def task_rows(rows: list[dict[str, Any]]) -> str:
    """The run page's task table body: one row per task (`views.task_json` + href, info)."""
    out = []
    for t in rows:
        workers = ", ".join(dict.fromkeys(a["worker"] for a in t["attempts"]))
        outputs = " ".join(
            f"<code>{escape(k)}={escape(v)}</code>" for k, v in sorted(t["outputs"].items())
        )
        out.append(
            f'<tr data-task="{escape(t["id"])}" data-state="{t["state"]}">'
            f'<td><a href="{escape(t["href"])}">{escape(t["id"])}</a></td>'
            f'<td><span class="badge s-{t["state"]}">{t["state"]}</span></td>'
            f"<td>{t['priority']}</td><td>{_attempts(t)}</td><td>{escape(workers)}</td>"
            f"<td>{escape(t['info'])}</td><td>{outputs}</td></tr>"
        )
    return "".join(out)
