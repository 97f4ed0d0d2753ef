"""Task graphs: cycles, stable topological order, levels, neighbours.

Edges point downstream: `a -> b` means b depends on a. Orders are stable: among tasks that could go
in either order, the one declared first in the file comes first.

A small graph of our own (insertion-ordered dicts) rather than networkx: these few walks are all
runner needs, and importing networkx cost `runner apply` about 75 ms of its start-up
(docs/PERFORMANCE.md, "Fast by default"). The tests check the order against networkx's.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any


class Unfeasible(ValueError):
    """The graph has a cycle, so it has no topological order."""


class Graph:
    """Nodes with attributes (`spec`, `order`) and their edges, in insertion order."""

    __slots__ = ("nodes", "pred", "succ")

    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}  # node -> its attributes
        self.succ: dict[str, dict[str, None]] = {}  # node -> its dependents (an ordered set)
        self.pred: dict[str, dict[str, None]] = {}  # node -> its dependencies

    def add_node(self, node: str, **attrs: Any) -> None:
        if node not in self.nodes:
            self.nodes[node] = {}
            self.succ[node] = {}
            self.pred[node] = {}
        self.nodes[node].update(attrs)

    def add_edge(self, dep: str, node: str) -> None:
        """`node` depends on `dep` (either is added if new)."""
        self.add_node(dep)
        self.add_node(node)
        self.succ[dep][node] = None
        self.pred[node][dep] = None

    def __iter__(self) -> Iterator[str]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)


def build(tasks: Iterable[Any]) -> Graph:
    """The graph of task instances (TaskSpecs); node attributes `spec` and `order`."""
    graph = Graph()
    specs = list(tasks)
    for order, spec in enumerate(specs):
        graph.add_node(spec.id, spec=spec, order=order)
    for spec in specs:
        for dep in spec.depends:
            graph.add_edge(dep, spec.id)
    return graph


def from_depends(depends: Mapping[str, Sequence[str]]) -> Graph:
    """The graph of names from `{task: [its dependencies]}`, in mapping order."""
    graph = Graph()
    for order, name in enumerate(depends):
        graph.add_node(name, order=order)
    for name, deps in depends.items():
        for dep in deps:
            if dep in depends:
                graph.add_edge(dep, name)
    return graph


def find_cycle(graph: Graph) -> list[str] | None:
    """A cycle as `[a, b, c, a]` where each task depends on the next, or None.

    The cycle starts at its task declared first, so the same file always names the same cycle.
    """
    if is_acyclic(graph):
        return None
    # A depth-first walk downstream from each node in declaration order, without recursion;
    # the first edge back into the current path closes a cycle.
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in graph:
        if root in state:
            continue
        path = [root]
        stack = [iter(graph.succ[root])]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                downstream = path[path.index(nxt) :]  # each depends on the one before
                names = list(reversed(downstream))  # each depends on the next
                start = min(range(len(names)), key=lambda i: _order(graph, names[i]))
                names = names[start:] + names[:start]
                return [*names, names[0]]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(graph.succ[nxt]))
    return None


def topo_order(graph: Graph) -> list[str]:
    """Every node, dependencies first, ties broken by declaration order (`order`, then the
    graph's order); `Unfeasible` if there is a cycle."""
    rank = {n: (int(attrs.get("order", 0)), i) for i, (n, attrs) in enumerate(graph.nodes.items())}
    waiting = {n: len(preds) for n, preds in graph.pred.items() if preds}
    ready = [(rank[n], n) for n in graph if n not in waiting]
    heapq.heapify(ready)
    out: list[str] = []
    while ready:
        node = heapq.heappop(ready)[1]
        out.append(node)
        for succ in graph.succ[node]:
            waiting[succ] -= 1
            if not waiting[succ]:
                del waiting[succ]
                heapq.heappush(ready, (rank[succ], succ))
    if waiting:
        raise Unfeasible("the graph has a cycle")
    return out


def levels(graph: Graph) -> list[list[str]]:
    """Generations: level 0 has no dependencies; level n depends on level n-1 at the latest."""
    waiting = {n: len(preds) for n, preds in graph.pred.items()}
    level = [n for n, count in waiting.items() if not count]
    out: list[list[str]] = []
    while level:
        out.append(sorted(level, key=lambda n: _order(graph, n)))
        nxt: list[str] = []
        for node in level:
            for succ in graph.succ[node]:
                waiting[succ] -= 1
                if not waiting[succ]:
                    nxt.append(succ)
        level = nxt
    return out


def predecessors(graph: Graph, node: str) -> list[str]:
    """Direct dependencies of `node`, in declaration order."""
    return sorted(graph.pred[node], key=lambda n: _order(graph, n))


def successors(graph: Graph, node: str) -> list[str]:
    """Direct dependents of `node`, in declaration order."""
    return sorted(graph.succ[node], key=lambda n: _order(graph, n))


def upstream(graph: Graph, node: str) -> set[str]:
    """Every transitive dependency of `node`."""
    seen: set[str] = set()
    todo = list(graph.pred[node])
    while todo:
        dep = todo.pop()
        if dep not in seen:
            seen.add(dep)
            todo.extend(graph.pred[dep])
    return seen


def is_acyclic(graph: Graph) -> bool:
    try:
        topo_order(graph)
    except Unfeasible:
        return False
    return True


def _order(graph: Graph, node: str) -> int:
    return int(graph.nodes[node].get("order", 0))
