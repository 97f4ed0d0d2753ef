"""Task graphs (runner.dag)."""

from __future__ import annotations

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_topo_order_is_networkx_lexicographical_order(data: st.DataObject) -> None:
    count = data.draw(st.integers(1, 15))
    orders = data.draw(st.lists(st.integers(0, 4), min_size=count, max_size=count))
    graph: dag.Graph = nx.DiGraph()
    for i, order in enumerate(orders):
        graph.add_node(f"n{i}", order=order)
    edges = data.draw(st.lists(st.tuples(st.integers(0, count - 1), st.integers(0, count - 1))))
    graph.add_edges_from((f"n{a}", f"n{b}") for a, b in edges if a < b)
    expected = nx.lexicographical_topological_sort(graph, key=lambda n: orders[int(n[1:])])
    assert dag.topo_order(graph) == list(expected)


def test_topo_order_refuses_a_cycle() -> None:
    with pytest.raises(nx.NetworkXUnfeasible):
        dag.topo_order(dag.from_depends({"a": ["b"], "b": ["a"]}))
