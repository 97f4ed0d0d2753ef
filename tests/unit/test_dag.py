"""Task graphs (runner.dag)."""

from __future__ import annotations

from itertools import pairwise

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


def _both(orders: list[int], edges: list[tuple[int, int]]) -> tuple[dag.Graph, nx.DiGraph[str]]:
    """The same graph as runner's and as networkx's (the oracle: runner no longer uses it)."""
    ours = dag.Graph()
    theirs: nx.DiGraph[str] = nx.DiGraph()
    for i, order in enumerate(orders):
        ours.add_node(f"n{i}", order=order)
        theirs.add_node(f"n{i}", order=order)
    for a, b in edges:
        ours.add_edge(f"n{a}", f"n{b}")
        theirs.add_edge(f"n{a}", f"n{b}")
    return ours, theirs


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_topo_order_and_levels_are_networkx_s(data: st.DataObject) -> None:
    count = data.draw(st.integers(1, 15))
    orders = data.draw(st.lists(st.integers(0, 4), min_size=count, max_size=count))
    edges = data.draw(st.lists(st.tuples(st.integers(0, count - 1), st.integers(0, count - 1))))
    ours, theirs = _both(orders, [(a, b) for a, b in edges if a < b])
    expected = nx.lexicographical_topological_sort(theirs, key=lambda n: orders[int(n[1:])])
    assert dag.topo_order(ours) == list(expected)
    generations = [set(g) for g in nx.topological_generations(theirs)]
    assert [set(level) for level in dag.levels(ours)] == generations
    for node in ours:
        assert dag.upstream(ours, node) == nx.ancestors(theirs, node)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_a_cycle_is_found_exactly_when_networkx_finds_one(data: st.DataObject) -> None:
    count = data.draw(st.integers(1, 8))
    edges = data.draw(st.lists(st.tuples(st.integers(0, count - 1), st.integers(0, count - 1))))
    ours, theirs = _both([0] * count, edges)
    cycle = dag.find_cycle(ours)
    assert (cycle is None) == nx.is_directed_acyclic_graph(theirs)
    assert dag.is_acyclic(ours) == nx.is_directed_acyclic_graph(theirs)
    if cycle is not None:
        assert cycle[0] == cycle[-1]
        for task, dep in pairwise(cycle):  # each depends on the next
            assert theirs.has_edge(dep, task)


def test_topo_order_refuses_a_cycle() -> None:
    with pytest.raises(dag.Unfeasible):
        dag.topo_order(dag.from_depends({"a": ["b"], "b": ["a"]}))
