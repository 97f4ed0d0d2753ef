"""What per-attempt containment costs W4: 1,000 × `true` on a fresh embedded store, 4 slots,
each run right after its own `seq 1000 | xargs -P4 -n1 true`, in three variants that alternate:

- `on`: the default (each attempt's leader joins a cgroup of its own, docs/SECURITY.md);
- `nojoin`: the cgroups are made and cleared as usual, but the leader does not join its own
  (the script's `echo 0 >…/cgroup.procs` is left out): what the join alone costs;
- `off`: `Executor(contain=False)`, process groups only.

    python benchmarks/containment.py [--repeat 6]

Prints the median (min–max) ratio to xargs's wall time and the CPU per task of each variant
(docs/PERFORMANCE.md, "Sixth pass"). `nojoin` is a measurement only, never a mode of runner.
Not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
from pathlib import Path

from runner import bench, benchrun
from runner.executor import Executor, _contain
from runner.models import Kind

VARIANTS = ("on", "nojoin", "off")


def _use(variant: str, join: object) -> None:
    bench.Executor = functools.partial(Executor, contain=variant != "off")  # type: ignore[attr-defined]
    _contain.Cgroup.wrap = join if variant != "nojoin" else (lambda self, argv: argv)  # type: ignore[method-assign]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=6)
    args = ap.parse_args()
    join = _contain.Cgroup.wrap
    plan = bench.independent(1000, Kind.RUN)
    ratios: dict[str, list[float]] = {v: [] for v in VARIANTS}
    cpus: dict[str, list[float]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="runner-contain-") as tmp:
        setup = benchrun.Setup(store="sqlite", folder=Path(tmp))
        for _ in range(args.repeat):
            for variant in VARIANTS:
                _use(variant, join)
                ref = benchrun.xargs()
                if ref is None:
                    print("seq or xargs is missing", file=sys.stderr)
                    return 1
                result = benchrun._run(setup, plan)
                ratios[variant].append(result.wall / ref)
                cpus[variant].append(result.cpu)
    print(f"load {os.getloadavg()[0]:.1f}")
    for variant in VARIANTS:
        r = ratios[variant]
        print(
            f"{variant:7} ratio to xargs {bench.summary(r)}×,"
            f" CPU {statistics.median(cpus[variant]):.2f} ms per task"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
