"""Task graphs (runner.dag)."""

from __future__ import annotations

from runner import dag, models


def _spec(tid: str, *deps: str) -> models.TaskSpec:
    return models.TaskSpec(id=tid, name=tid, kind=models.Kind.RUN, run="x", depends=deps)


def test_cycle_is_reported_from_the_first_declared_task() -> None:
    graph = dag.from_depends({"a": ["c"], "b": ["a"], "c": ["b"], "d": []})
    assert dag.find_cycle(graph) == ["a", "c", "b", "a"]
    assert dag.find_cycle(dag.from_depends({"x": [], "y": ["x"]})) is None


def test_order_levels_and_neighbours_are_stable() -> None:
    graph = dag.build([_spec("z"), _spec("b", "z"), _spec("a", "z"), _spec("j", "a", "b")])
    assert graph.nodes["j"]["spec"].id == "j"
    assert dag.topo_order(graph) == ["z", "b", "a", "j"]
    assert dag.levels(graph) == [["z"], ["b", "a"], ["j"]]
    assert dag.predecessors(graph, "j") == ["b", "a"]
    assert dag.successors(graph, "z") == ["b", "a"]
    assert dag.upstream(graph, "j") == {"z", "a", "b"}
    assert dag.is_acyclic(graph)
