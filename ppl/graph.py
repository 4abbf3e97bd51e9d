"""The model graph: which nodes each node was computed from.

Provenance is traced, not declared: inside `track_graph()` a
`TorchFunctionMode` records, for every tensor a torch operation produces, the
set of nodes its inputs came from. A `BayesianNet` built there records for each
node the nodes its distribution parameters (or deterministic value) came from.
Tracing is off by default, so training loops pay nothing for it;
`bn.graph` re-runs a template's function under tracing when needed.

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

__all__ = ["track_graph", "parents", "children", "markov_blanket", "draw"]


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


def draw(graph, ax=None, path=None):
    """Draw the graph top-down: shaded observed nodes, squares for deterministic ones.

    Returns the matplotlib figure; saves it to `path` when given.
    """
    if ax is None:
        size = (1.6 + 1.4 * max(1, _width(graph)), 1.2 + 1.2 * _depth(graph))
        if path is not None:  # a file only: no pyplot, so no display and no backend switch
            from matplotlib.figure import Figure
            fig = Figure(figsize=size)
            ax = fig.add_subplot()
        else:
            import matplotlib.pyplot as plt
            fig, ax = plt.subplots(figsize=size)
    else:
        fig = ax.figure
    layered = graph.copy()
    for depth, layer in enumerate(nx.topological_generations(graph)):
        for node in layer:
            layered.nodes[node]["layer"] = depth
    pos = nx.multipartite_layout(layered, subset_key="layer", align="horizontal")
    pos = {n: (x, -y) for n, (x, y) in pos.items()}
    styles = {
        ("stochastic", False): dict(node_shape="o", node_color="white"),
        ("stochastic", True): dict(node_shape="o", node_color="#bbbbbb"),
        ("deterministic", False): dict(node_shape="s", node_color="#e8f0ff"),
        ("factor", False): dict(node_shape="s", node_color="black", node_size=150),
    }
    for (kind, observed), style in styles.items():
        nodes = [n for n, d in graph.nodes(data=True)
                 if d["kind"] == kind and bool(d.get("observed")) == observed]
        if nodes:
            style = {"node_size": _NODE_SIZE, **style}
            nx.draw_networkx_nodes(graph, pos, nodelist=nodes, ax=ax, edgecolors="black",
                                   **style)
    sizes = [150 if d["kind"] == "factor" else _NODE_SIZE for _, d in graph.nodes(data=True)]
    nx.draw_networkx_edges(graph, pos, ax=ax, arrows=True, arrowsize=15, node_size=sizes)
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


def _width(graph):
    return max((len(layer) for layer in nx.topological_generations(graph)), default=1)


def _depth(graph):
    return sum(1 for _ in nx.topological_generations(graph))
