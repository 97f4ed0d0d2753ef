"""forEach against the same run written out statically: 1 -> N -> 1 no-op call tasks.

Usage: python benchmarks/foreach.py [--n 1000] [--repeat 5] [--store sqlite|etcd://...]
The static plan has N tasks in the file; the dynamic one has one `forEach` task over a list
of N items written by the root (docs/WORKFLOW.md, "Fan-out over a task's output"). Both roots
run the same command. Prints the median wall seconds (min-max) of each and their ratio; the
goal (issue 22) is dynamic <= 1.2 x static on SQLite. Not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from runner import bench, benchrun
from runner.models import ForEach, Kind, Plan, TaskSpec


def root(n: int) -> TaskSpec:
    script = f'python3 -c \'print("items=" + str(list(range({n}))))\' >> "$RUNNER_OUTPUT"'
    return TaskSpec(id="list", name="list", kind=Kind.RUN, run=script)


def call(task_id: str, *depends: str, for_each: ForEach | None = None) -> TaskSpec:
    return TaskSpec(
        id=task_id,
        name=task_id,
        kind=Kind.CALL,
        call=bench.NOOP,
        depends=depends,
        for_each=for_each,
    )


def static(n: int) -> Plan:
    middle = [call(f"each{i}", "list") for i in range(n)]
    join = call("join", *(t.id for t in middle))
    return Plan(workflow=f"static-{n}", tasks=(root(n), *middle, join))


def dynamic(n: int) -> Plan:
    each = call("each", "list", for_each=ForEach(task="list", output="items", limit=n))
    return Plan(workflow=f"dynamic-{n}", tasks=(root(n), each, call("join", "each")))


def walls(plan: Plan, *, store: str, folder: Path, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        url = benchrun.fresh_url(store, folder)
        try:
            result = bench.run_workload(url, plan, slots=4, log_dir=str(folder))
        finally:
            benchrun.discard(url)
        if result.run.state.value != "succeeded":
            raise RuntimeError(f"run {result.run.id} ended {result.run.state.value}")
        out.append(result.wall)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--store", default="sqlite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        results = {}
        for name, plan in (("static", static(args.n)), ("dynamic", dynamic(args.n))):
            results[name] = walls(plan, store=args.store, folder=folder, repeat=args.repeat)
            print(f"{name:8s} 1 -> {args.n} -> 1: {bench.summary(results[name])} s")
    ratio = statistics.median(results["dynamic"]) / statistics.median(results["static"])
    print(f"dynamic / static: {ratio:.2f} (goal <= 1.20)")


if __name__ == "__main__":
    main()
