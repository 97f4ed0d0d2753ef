"""`runner validate` and `runner plan`: check workflow files and show what they expand to."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from runner import errors, planview, workflow
from runner.cli import common
from runner.config import Settings

VALIDATE_EXAMPLES = """\
examples:
  runner validate examples/*.yaml workflows/*.yaml
  runner validate etl.yaml --format json | jq '.[].message'
  runner validate workflows/*.yaml --format github   # annotations in a GitHub Actions step

Each problem reads FILE:LINE:COL: message (github: ::error file=F,line=L,col=C::message).
Exit 0 when every file is valid, 2 otherwise.
"""

PLAN_EXAMPLES = """\
examples:
  runner plan examples/diamond.yaml
  runner plan examples/etl.yaml --param date=2026-03-01 --format json
  runner plan examples/matrix.yaml --format dot | dot -Tsvg > plan.svg
  runner plan examples/matrix.yaml --format mermaid
  runner plan examples/params.yaml --params-file params.yaml -p shards=2

text shows levels (tasks of one level can run together) with priorities, retries, timeouts and
dependencies; json is the plan with its hash (the same file and params give the same hash).
"""


def add_parsers(sub: Any) -> None:
    """Add this module's commands to the `runner` subparsers."""
    add_validate_parser(sub)
    add_plan_parser(sub)


def add_validate_parser(sub: Any) -> None:
    p = sub.add_parser(
        "validate",
        help="check workflow files and report every problem",
        description="Check each FILE: YAML, schema, names, dependencies, cycles, schedules, "
        "durations and template references. All problems of a file are reported at once.",
        epilog=VALIDATE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument(
        "--format",
        choices=["text", "json", "github"],
        default="text",
        help="text (FILE:LINE:COL: message, also what GitLab and plain CI read), json, or "
        "github (workflow-command annotations); default: text",
    )
    p.set_defaults(func=cmd_validate)


def cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    problems: list[errors.Problem] = []
    for file in args.files:
        try:
            plan = workflow.plan(workflow.load(file))
        except errors.WorkflowInvalid as exc:
            problems.extend(exc.problems)
            if args.format == "text":
                print(exc.message, file=sys.stderr)
            continue
        if args.format == "text":
            print(f"{file}: ok ({plan.workflow}, {len(plan.tasks)} task instances)")
    if args.format == "json":
        print(json.dumps([p.as_dict() for p in problems], indent=2, ensure_ascii=False))
    elif args.format == "github":
        from runner.cli import gha

        for p in problems:
            where: dict[str, str | int] = {"file": p.file}
            if p.line > 0:
                where.update(line=p.line, col=p.col)
            print(gha.command("error", p.message, **where))
    return errors.EXIT_USAGE if problems else errors.EXIT_OK


def add_plan_parser(sub: Any) -> None:
    p = sub.add_parser(
        "plan",
        help="expand a workflow into its task DAG and print it",
        description="Validate FILE, expand matrices and params, and print the plan.",
        epilog=PLAN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", metavar="FILE")
    common.add_param_flags(p)
    p.add_argument(
        "--format",
        choices=sorted(planview.RENDERERS),
        default="text",
        help="text (levels), json (the plan), dot or mermaid; default: text",
    )
    p.set_defaults(func=cmd_plan)


def cmd_plan(args: argparse.Namespace, settings: Settings) -> int:
    params = common.parse_params(args.param)
    plan = workflow.load_plan(args.file, params=params, params_file=args.params_file)
    sys.stdout.write(planview.RENDERERS[args.format](plan))
    return errors.EXIT_OK
