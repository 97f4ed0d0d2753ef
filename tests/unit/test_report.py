"""JUnit XML (checked against the Jenkins/Surefire schema) and Markdown summaries of runs."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import xmlschema

from runner import report
from runner.models import (
    Attempt,
    AttemptState,
    Reason,
    Run,
    RunState,
    TaskRecord,
    TaskState,
)

XSD = Path(__file__).parent / "fixtures" / "junit.xsd"
T0 = 1_800_000_000.0


@pytest.fixture(scope="module")
def schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(XSD))


def _attempt(n: int, state: AttemptState, start: float, end: float, code: int) -> Attempt:
    return Attempt(
        number=n,
        state=state,
        worker="w",
        token=n,
        exit_code=code,
        reason=Reason.EXIT,
        error=None if code == 0 else f"exit code {code}",
        started_at=T0 + start,
        finished_at=T0 + end,
    )


def _run() -> Run:
    ok = AttemptState.SUCCEEDED
    bad = AttemptState.FAILED
    tasks = (
        TaskRecord(
            id="build",
            name="build",
            state=TaskState.SUCCEEDED,
            priority=0,
            attempts=(_attempt(1, ok, 0, 2, 0),),
        ),
        TaskRecord(
            id="test[os=linux]",
            name="test",
            state=TaskState.FAILED,
            priority=0,
            retries=2,
            attempts=(
                _attempt(1, bad, 2, 3, 1),
                _attempt(2, bad, 3.5, 4, 1),
                _attempt(3, bad, 5, 7.25, 1),
            ),
        ),
        TaskRecord(
            id="lint",
            name="lint",
            state=TaskState.FAILED,
            priority=0,
            allow_failure=True,
            attempts=(_attempt(1, bad, 0, 0.5, 2),),
        ),
        TaskRecord(id="deploy", name="deploy", state=TaskState.SKIPPED, priority=0),
    )
    return Run(
        id="ci-1",
        workflow="ci",
        state=RunState.FAILED,
        created_at=T0,
        started_at=T0,
        finished_at=T0 + 7.5,
        tasks_total=4,
        tasks_done=4,
        tasks=tasks,
        params={"env": "prod"},
    )


def _logs() -> dict[str, str]:
    lines = [f"line {i} TOKEN=s3cr3t \x1b[31mred\x1b[0m" for i in range(1, 61)]
    return {"test[os=linux]": "\n".join(lines) + "\n", "lint": "lint failed\n"}


def test_junit_is_valid_against_the_schema(schema: xmlschema.XMLSchema) -> None:
    text = report.junit_xml(_run(), logs=_logs(), secrets=["s3cr3t"])
    schema.validate(text)


def test_junit_has_one_testcase_per_task_with_its_result() -> None:
    root = ET.fromstring(report.junit_xml(_run(), logs=_logs(), secrets=["s3cr3t"]))
    suite = root.find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("4", "1", "2")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert list(cases) == ["build", "test[os=linux]", "lint", "deploy"]
    assert {c.get("classname") for c in cases.values()} == {"ci"}
    assert cases["build"].get("time") == "2.000"
    assert list(cases["build"]) == []
    failure = cases["test[os=linux]"].find("failure")
    assert failure is not None
    assert failure.get("message") == "exit 1 after 3 of 3 attempts"
    assert cases["test[os=linux]"].get("time") == "5.250"
    out = cases["test[os=linux]"].findtext("system-out") or ""
    assert out.splitlines()[0].startswith("line 11 ")  # the last 50 of 60 lines
    assert len(out.splitlines()) == 50
    assert "s3cr3t" not in out
    assert "TOKEN=***" in out
    assert "\x1b" not in out  # not an XML character
    allowed = cases["lint"].find("skipped")
    assert allowed is not None
    assert allowed.get("message") == "allowed failure (allowFailure): exit 2 after 1 of 1 attempts"
    skipped = cases["deploy"].find("skipped")
    assert skipped is not None
    assert skipped.get("message", "").startswith("skipped:")


def test_junit_of_a_cancelled_run_marks_unfinished_tasks_skipped(
    schema: xmlschema.XMLSchema,
) -> None:
    run = Run(
        id="r",
        workflow="w",
        state=RunState.CANCELLED,
        created_at=T0,
        reason="interrupted",
        tasks=(
            TaskRecord(id="a", name="a", state=TaskState.CANCELLED, priority=0),
            TaskRecord(id="b", name="b", state=TaskState.RUNNING, priority=0),
        ),
    )
    text = report.junit_xml(run, logs={})
    schema.validate(text)
    messages = [s.get("message") for s in ET.fromstring(text).iter("skipped")]
    assert messages == [
        "cancelled: the run interrupted",
        "not finished: running when the report was written",
    ]


EXPECTED_MD = """\
## ❌ `ci`: run `ci-1` failed

4 task instances (2 failed, 1 skipped, 1 succeeded) in 7.5s

### Failed tasks

| task | reason | log |
|---|---|---|
| `test[os=linux]` | exit 1 after 3 of 3 attempts | `runner logs ci-1 test[os=linux]` |
| `lint` | exit 2 after 1 of 1 attempts (allowed by allowFailure) | `runner logs ci-1 lint` |

### Slowest tasks

| task | state | time |
|---|---|---:|
| `test[os=linux]` | failed | 5.2s |
| `build` | succeeded | 2.0s |
| `lint` | failed | 0.5s |

### Attempts

```mermaid
gantt
    dateFormat x
    axisFormat %H:%M:%S
    build #1 :done, 1800000000000, 1800000002000
    lint #1 :crit, 1800000000000, 1800000000500
    test[os=linux] #1 :crit, 1800000002000, 1800000003000
    test[os=linux] #2 :crit, 1800000003500, 1800000004000
    test[os=linux] #3 :crit, 1800000005000, 1800000007250
```
"""


def test_markdown_summary_is_exact() -> None:
    assert report.markdown(_run()) == EXPECTED_MD


def test_markdown_masks_secrets_and_escapes_table_cells() -> None:
    run = Run(
        id="r",
        workflow="w",
        state=RunState.FAILED,
        created_at=T0,
        started_at=T0,
        reason="failed | tok=abc",
    )
    text = report.markdown(run, secrets=["abc"])
    assert "reason: failed \\| tok=***" in text
    assert "abc" not in text


def test_markdown_is_cut_at_the_limit_with_a_note() -> None:
    failed = tuple(
        TaskRecord(
            id=f"t{i}",
            name="t",
            state=TaskState.FAILED,
            priority=0,
            attempts=(_attempt(1, AttemptState.FAILED, i, i + 1, 1),),
        )
        for i in range(300)
    )
    run = Run(id="r", workflow="w", state=RunState.FAILED, created_at=T0, tasks=failed)
    whole = report.markdown(run)
    text = report.markdown(run, limit=4096)
    assert len(whole.encode()) > 4096
    assert len(text.encode()) <= 4096
    assert text.endswith(
        "_Summary truncated at 4096 bytes; `runner get run r` shows the whole run._\n"
    )
    assert text.count("```") % 2 == 0


def test_truncate_closes_an_open_code_fence() -> None:
    text = "intro\n```mermaid\n" + "x\n" * 1000 + "```\n"
    cut = report.truncate(text, limit=200, note="n")
    assert len(cut.encode()) <= 200
    assert cut.count("```") == 2
