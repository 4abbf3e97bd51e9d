"""The model graph: which nodes each node was computed from.

Provenance is traced, not declared: inside `track_graph()` a
`TorchFunctionMode` records, for every tensor a torch operation produces, the
set of nodes its inputs came from. A `BayesianNet` built there records for each
node the nodes its distribution parameters (or deterministic value) came from.
Tracing is off by default, so training loops pay nothing for it;
`bn.graph` re-runs a template's function under tracing when needed, and a net
built by hand records its graph inside `with ppl.BayesianNet() as bn:`.

The graph is a `networkx.DiGraph` whose nodes carry `kind` ('stochastic',
'deterministic' or 'factor'), `dist` (class name) and `observed`.
"""
import contextlib

import networkx as nx
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

from ppl.stochastic_tensor import StochasticTensor

__all__ = ["track_graph", "parents", "children", "markov_blanket", "layout", "draw"]


class _Provenance(TorchFunctionMode):
    """Propagates `origin[tensor] = {node names}` through every torch operation."""

    def __init__(self):
        super().__init__()
        self.origin = WeakIdKeyDictionary()

    def sources(self, obj):
        """Union of the node names behind every tensor in the (nested) object."""
        found = set()
        for leaf in tree_flatten(obj)[0]:
            if isinstance(leaf, StochasticTensor):
                found.add(leaf.name)
            elif isinstance(leaf, torch.Tensor):
                found |= self.origin.get(leaf, frozenset())
        return found

    def mark(self, obj, names):
        names = frozenset(names)
        for leaf in tree_flatten(obj)[0]:
            if isinstance(leaf, torch.Tensor):
                self.origin[leaf] = names

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        names = self.sources((args, kwargs))
        if names:
            self.mark(out, names)
        return out


_active = []


def active_tracker():
    """The innermost `_Provenance` in effect, or None."""
    return _active[-1] if _active else None


@contextlib.contextmanager
def track_graph():
    """Record the model graph of every `BayesianNet` built inside the block."""
    tracker = _Provenance()
    _active.append(tracker)
    try:
        with tracker:
            yield tracker
    finally:
        _active.pop()


def _stochastic_neighbours(graph, name, direction):
    """Nearest stochastic/factor nodes up or down, looking through deterministic ones."""
    if name not in graph:
        raise KeyError(f"the model graph has no node named {name!r} "
                       f"(nodes: {', '.join(map(str, graph.nodes)) or 'none'})")
    step = graph.predecessors if direction == "up" else graph.successors
    found, frontier, seen = set(), list(step(name)), set()
    while frontier:
        node = frontier.pop()
        if node in seen:
            continue
        seen.add(node)
        if graph.nodes[node]["kind"] == "deterministic":
            frontier.extend(step(node))
        else:
            found.add(node)
    return found


def parents(graph, name):
    """Stochastic parents of `name` (deterministic nodes in between are looked through)."""
    return _stochastic_neighbours(graph, name, "up")


def children(graph, name):
    """Stochastic children and factors of `name`, through deterministic nodes."""
    return _stochastic_neighbours(graph, name, "down")


def markov_blanket(graph, name):
    """Parents, children and the children's other parents: all a Gibbs update needs.

    A factor counts as an observed child: the nodes it touches are co-parents.
    The result holds no factor names, only stochastic nodes.
    """
    kids = children(graph, name)
    blanket = parents(graph, name) | kids
    for kid in kids:
        blanket |= parents(graph, kid)
    blanket.discard(name)
    return {n for n in blanket if graph.nodes[n]["kind"] == "stochastic"}


_NODE_SIZE = 2000  # points^2: room for a name and a distribution such as "HalfCauchy"
_FACTOR_SIZE = 150


def layout(graph):
    """Positions for `draw`: (pos, paths).

    Layered top-down (a node one layer below its lowest parent; a root just above
    its highest child), nodes ordered in each layer by their parents' mean position,
    and an edge that spans several layers routed through free points of the layers
    between, so that no edge is drawn through a node. `pos`: node -> (x, y);
    `paths`: edge -> the list of points it is drawn through, from parent to child.
    """
    layer = {}
    for depth, nodes in enumerate(nx.topological_generations(graph)):
        layer.update(dict.fromkeys(nodes, depth))
    for node in graph:  # a root (a prior's hyperparameter, a noise scale) next to its child
        if graph.in_degree(node) == 0 and graph.out_degree(node) > 0:
            layer[node] = min(layer[child] for child in graph.successors(node)) - 1
    routes = {}  # edge -> its waypoints, one in each layer it crosses
    above = {}   # node or waypoint -> what is drawn into it from the layer above
    for u, v in graph.edges:
        routes[u, v] = [(u, v, depth) for depth in range(layer[u] + 1, layer[v])]
        layer.update((point, point[2]) for point in routes[u, v])
        chain = [u] + routes[u, v] + [v]
        for a, b in zip(chain, chain[1:]):
            above.setdefault(b, []).append(a)
    rows = {}
    for item, depth in layer.items():
        rows.setdefault(depth, []).append(item)
    place = {}
    for depth in sorted(rows):  # order each row by the mean position of what feeds it
        row = sorted(rows[depth], key=lambda n: sum(place[p][0] for p in above.get(n, ()))
                     / max(1, len(above.get(n, ()))))
        for i, item in enumerate(row):
            place[item] = (i - (len(row) - 1) / 2, -float(depth))
    pos = {node: place[node] for node in graph}
    paths = {(u, v): [place[item] for item in [u] + points + [v]]
             for (u, v), points in routes.items()}
    return pos, paths


def draw(graph, ax=None, path=None):
    """Draw the graph top-down: shaded observed nodes, squares for deterministic ones.

    Returns the matplotlib figure; saves it to `path` when given.
    """
    pos, paths = layout(graph)
    xs, ys = [x for x, _ in pos.values()], [y for _, y in pos.values()]
    for points in paths.values():
        xs += [x for x, _ in points]
    if ax is None:
        width = max(xs, default=0.) - min(xs, default=0.) + 1
        depth = max(ys, default=0.) - min(ys, default=0.) + 1
        size = (1.6 + 1.4 * width, 1.2 + 1.2 * depth)
        if path is not None:  # a file only: no pyplot, so no display and no backend switch
            from matplotlib.figure import Figure
            fig = Figure(figsize=size)
            ax = fig.add_subplot()
        else:
            import matplotlib.pyplot as plt
            fig, ax = plt.subplots(figsize=size)
    else:
        fig = ax.figure
    styles = {
        ("stochastic", False): dict(node_shape="o", node_color="white"),
        ("stochastic", True): dict(node_shape="o", node_color="#bbbbbb"),
        ("deterministic", False): dict(node_shape="s", node_color="#e8f0ff"),
        ("factor", False): dict(node_shape="s", node_color="black", node_size=_FACTOR_SIZE),
    }
    for (kind, observed), style in styles.items():
        nodes = [n for n, d in graph.nodes(data=True)
                 if d["kind"] == kind and bool(d.get("observed")) == observed]
        if nodes:
            style = {"node_size": _NODE_SIZE, **style}
            nx.draw_networkx_nodes(graph, pos, nodelist=nodes, ax=ax, edgecolors="black",
                                   **style)
    _draw_edges(graph, pos, paths, ax)
    factors = {n for n, d in graph.nodes(data=True) if d["kind"] == "factor"}
    labels = {n: f"{n}\n{d.get('dist') or ''}".strip() for n, d in graph.nodes(data=True)
              if n not in factors}
    nx.draw_networkx_labels(graph, pos, labels=labels, ax=ax, font_size=8)
    for name in factors:  # a factor is a small black square: its name goes below it
        ax.annotate(name, pos[name], xytext=(0, -9), textcoords="offset points",
                    ha="center", va="top", fontsize=8)
    ax.set_axis_off()
    ax.margins(0.2)
    if path is not None:
        fig.savefig(path, bbox_inches="tight", dpi=120)
    return fig


def _draw_edges(graph, pos, paths, ax):
    """Each edge as segments through its waypoints, the arrow head on the last one."""
    segments = nx.DiGraph()
    points = {}
    for (u, v), route in paths.items():
        ends = [u] + [(u, v, i) for i in range(1, len(route) - 1)] + [v]
        points.update(zip(ends, route))
        segments.add_edges_from(zip(ends, ends[1:]))
    if not segments.number_of_edges():
        return
    nodelist = list(segments)
    sizes = [(_FACTOR_SIZE if graph.nodes[n]["kind"] == "factor" else _NODE_SIZE)
             if n in graph else 0 for n in nodelist]
    into_nodes = [e for e in segments.edges if e[1] in graph]
    into_points = [e for e in segments.edges if e[1] not in graph]
    nx.draw_networkx_edges(segments, points, edgelist=into_nodes, nodelist=nodelist,
                           node_size=sizes, ax=ax, arrows=True, arrowsize=15)
    if into_points:
        nx.draw_networkx_edges(segments, points, edgelist=into_points, nodelist=nodelist,
                               node_size=sizes, ax=ax, arrows=True, arrowstyle="-")
