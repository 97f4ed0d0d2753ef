"""Secret env values: read when an attempt starts, masked in logs, tails and outputs, also
when a secret is split across two writes of the task (docs/SECURITY.md)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner import errors, models, workflow
from runner.executor import Executor, _secrets
from runner.executor._log import LogSink
from runner.models import SecretRef
from tests.unit.test_executor import ENV, wait_until

SECRET = "s3cr3t-Value"


def _masked(secrets: list[str], chunks: list[bytes]) -> bytes:
    masker = _secrets.Masker(_secrets.patterns(secrets))
    return b"".join(masker.feed(c) for c in chunks) + masker.flush()


def test_masker_masks_a_secret_split_at_every_point() -> None:
    data = f"before {SECRET} after\n".encode()
    for cut in range(len(data)):
        assert _masked([SECRET], [data[:cut], data[cut:]]) == b"before *** after\n"


def test_masker_masks_a_secret_written_one_byte_at_a_time() -> None:
    data = f"x{SECRET}{SECRET[:4]}y{SECRET}".encode()
    assert _masked([SECRET], [bytes([b]) for b in data]) == b"x***s3cry***"


def test_masker_holds_back_only_a_possible_secret_start() -> None:
    masker = _secrets.Masker(_secrets.patterns([SECRET]))
    assert masker.feed(b"line one\n") == b"line one\n"  # nothing held: no secret starts here
    assert masker.feed(b"tail s3c") == b"tail "
    assert masker.flush() == b"s3c"  # the output ended: it was no secret


def test_masker_masks_the_longer_of_two_overlapping_secrets_whole() -> None:
    assert _masked(["abc", "abcdef"], [b"abcdef abc"]) == b"*** ***"


def test_masker_output_does_not_depend_on_how_the_stream_is_cut() -> None:
    secrets = ["aab", "aaab", "ab", "-----BEGIN-----\nKEYkeyKEY\n-----END-----"]
    data = b"xaaab ab aab-----BEGIN-----\nKEYkeyKEY\n-----END-----aa"
    whole = _masked(secrets, [data])
    assert whole == b"x*** *** ******aa"
    for i in range(len(data)):
        for j in range(i, len(data)):
            assert _masked(secrets, [data[:i], data[i:j], data[j:]]) == whole


def test_multiline_secret_lines_are_masked_on_their_own() -> None:
    pem = "-----BEGIN KEY-----\nAAAAbbbbCCCC\n-----END KEY-----"
    out = _masked([pem], [b"key line: AAAAbbbbCCCC\n"])
    assert out == b"key line: ***\n"


def test_log_sink_masks_file_and_tail_across_writes(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    with LogSink(path, limit=4096, secrets=_secrets.patterns([SECRET])) as sink:
        sink.write(b"token=s3cr3")
        sink.write(b"t-Value!\nnext s3")
        sink.note("done")
    text = path.read_text()
    assert SECRET not in text
    assert [line.split(" ", 1)[1] for line in text.splitlines()] == [
        "token=***!",
        "next s3",
        "[runner] done",
    ]
    assert sink.tail() == text


def test_resolve_reads_env_and_file_and_says_what_is_missing(tmp_path: Path) -> None:
    secret_file = tmp_path / "token"
    secret_file.write_text("from-file\n")
    refs = {
        "A": SecretRef(from_env="CI_A"),
        "B": SecretRef(from_file=str(secret_file)),
    }
    assert _secrets.resolve(refs, {"CI_A": "from-env"}) == {"A": "from-env", "B": "from-file"}
    with pytest.raises(_secrets.SecretError, match="secret env A: the variable CI_A is not set"):
        _secrets.resolve(refs, {})
    with pytest.raises(_secrets.SecretError, match=r"secret env C: cannot read .*/nope"):
        _secrets.resolve({"C": SecretRef(from_file=str(tmp_path / "nope"))}, {})


@pytest.fixture
def executor(tmp_path: Path) -> Iterator[Executor]:
    ex = Executor(
        slots=1,
        log_dir=str(tmp_path / "logs"),
        log_limit=4096,
        grace=1.0,
        secret_source={"CI_TOKEN": SECRET},
        masked=["extra-secret"],
    )
    yield ex
    ex.close()


def _spec(run: str, **env: SecretRef) -> models.TaskSpec:
    return models.TaskSpec(id="t", name="t", kind=models.Kind.RUN, run=run, secret_env=env)


def test_executor_gives_the_secret_to_the_task_and_masks_it_when_split(
    executor: Executor, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    spec = _spec(
        'printf "half %s" "$(printf %s "$TOKEN" | cut -c1-4)"; '
        f"while [ ! -f {go} ]; do sleep 0.02; done; "
        'printf "%s\\n" "$(printf %s "$TOKEN" | cut -c5-)"; '
        'echo "k=$TOKEN" >> "$RUNNER_OUTPUT"; echo "extra-secret $((1+1))"; '
        '[ "$TOKEN" = "s3cr3t-Value" ]',
        TOKEN=SecretRef(from_env="CI_TOKEN"),
    )
    log = executor.log_path("r1/t/1")

    def release_when_half_written() -> None:  # the first half has reached the log: split
        wait_until(lambda: log.exists() and "half " in log.read_text())
        go.touch()

    threading.Thread(target=release_when_half_written, daemon=True).start()
    result = executor.run(spec, env=ENV, log_name="r1/t/1", cancel=threading.Event())
    assert result.succeeded, result.log_tail
    lines = [line.split(" ", 1)[1] for line in result.log_tail.splitlines()]
    assert lines == ["half ***", "*** 2"]
    assert log.read_text() == result.log_tail
    assert result.outputs == {"k": "***"}


def test_executor_fails_an_attempt_whose_secret_is_unset(executor: Executor) -> None:
    spec = _spec("echo never", TOKEN=SecretRef(from_env="CI_MISSING"))
    result = executor.run(spec, env=ENV, log_name="r1/t/2", cancel=threading.Event())
    assert result.reason is models.Reason.ERROR
    assert result.error == (
        "secret env TOKEN: the variable CI_MISSING is not set where the worker runs; "
        "set it there (see docs/SECURITY.md)"
    )
    assert "never" not in result.log_tail


def test_plan_keeps_only_the_reference(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(
        "apiVersion: runner/v1\nkind: Workflow\nmetadata: {name: w}\nspec:\n"
        "  env: {SHARED: {fromFile: /run/secrets/s}, PLAIN: p}\n"
        "  tasks:\n    - name: a\n      run: 'true'\n"
        "      env: {TOKEN: {fromEnv: CI_TOKEN}, SHARED: own}\n"
    )
    spec = workflow.load_plan(str(path)).tasks[0]
    assert spec.env == {"PLAIN": "p", "SHARED": "own"}
    assert spec.secret_env == {"TOKEN": SecretRef(from_env="CI_TOKEN")}
    assert spec.to_dict()["secretEnv"] == {"TOKEN": {"fromEnv": "CI_TOKEN"}}
    assert models.TaskSpec.from_dict(spec.to_dict()) == spec


def test_secret_reference_problems_are_located_and_human() -> None:
    text = (
        "apiVersion: runner/v1\nkind: Workflow\nmetadata: {name: w}\nspec:\n  tasks:\n"
        "    - name: a\n      run: 'true'\n      env:\n"
        "        A: {fromEnv: 1BAD}\n        B: {fromEnv: X, fromFile: y}\n"
        "        C: {fromVault: x}\n        D: {}\n"
    )
    with pytest.raises(errors.WorkflowInvalid) as info:
        workflow.loads(text, file="w.yaml")
    assert info.value.message.splitlines() == [
        "w.yaml:9:22: tasks.a.env.A.fromEnv: '1BAD' is not valid; the name of an environment "
        "variable of the worker",
        "w.yaml:10:12: tasks.a.env.B: give fromEnv or fromFile, not both",
        "w.yaml:11:13: tasks.a.env.C: unknown key 'fromVault' (known: fromEnv, fromFile)",
        "w.yaml:12:12: tasks.a.env.D: needs one of fromEnv or fromFile",
    ]
