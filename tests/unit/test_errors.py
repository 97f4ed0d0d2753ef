from __future__ import annotations

from runner import errors


def test_problem_formats_file_line_col() -> None:
    p = errors.Problem(file="w.yaml", line=3, col=5, message="bad")
    assert str(p) == "w.yaml:3:5: bad"


def test_workflow_invalid_sorts_problems_and_exits_2() -> None:
    a = errors.Problem(file="w.yaml", line=9, col=1, message="later")
    b = errors.Problem(file="w.yaml", line=2, col=4, message="earlier")
    exc = errors.WorkflowInvalid([a, b])
    assert exc.problems == [b, a]
    assert exc.message == "w.yaml:2:4: earlier\nw.yaml:9:1: later"
    assert exc.exit_code == 2


def test_error_docstring_is_default_message() -> None:
    assert errors.StoreUnavailable().message == "The store cannot be reached."
    assert errors.StoreUnavailable().exit_code == 3


def test_worker_lease_lost_is_a_lease_lost_naming_the_worker() -> None:
    exc = errors.WorkerLeaseLost("w-1")
    assert isinstance(exc, errors.LeaseLost)
    assert exc.worker_id == "w-1"
    assert exc.message == "worker w-1: its lease expired; stop its tasks and register"


def test_every_error_class_is_in_the_drawn_tree() -> None:
    tree = errors.__doc__ or ""
    classes = [
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, errors.RunnerError)
    ]
    missing = [cls.__name__ for cls in classes if f" {cls.__name__} (" not in tree]
    assert missing == []
