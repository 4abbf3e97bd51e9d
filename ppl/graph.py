"""The model graph: which nodes each node was computed from.

Provenance is traced, not declared, in one of three ways:

- A template's net (`@ppl.meta_bayesian_net`, `@ppl.reuse_variables`, any
  `MetaBayesianNet`) records nothing while it runs, so training loops pay
  nothing: `bn.graph` re-runs the call once under `track_graph()`.
- Inside `track_graph()` a `TorchFunctionMode` records, for every tensor a
  torch operation produces, the set of nodes its inputs came from.
- A net built by hand, outside any template (`bn = ppl.BayesianNet()` in a
  script), has no call to re-run: its values carry their provenance. The node
  values that model code computes with (a node in an operation, `bn[name]`,
  what `deterministic` returns) are `Traced` tensors, a `torch.Tensor`
  subclass whose `__torch_function__` hands the set of source nodes on to every
  result. What the net stores (`node.tensor`, `cond_log_prob`, `log_joint`,
  `outputs`) stays a plain tensor, so inference reads plain tensors, and the
  distributions compute on plain aliases of their arguments; model code pays
  one Python call per operation on a `Traced` value. Only values computed by
  torch operations are followed: `.item()`, `.tolist()` and numpy arrays carry
  nothing. A plain tensor that stands for a node (`node.tensor`, or one
  written in place from a node: `buf.add_(z)`, `buf[0] = z`) counts as the
  node where it is passed to the net as it is, but what is computed from it
  afterwards is not followed.

Each node records the nodes its distribution parameters (or deterministic
value, or factor) came from. The graph is a `networkx.DiGraph` whose nodes
carry `kind` ('stochastic', 'deterministic' or 'factor'), `dist` (class
name) and `observed`.
"""
import contextlib
import copy

import networkx as nx
import torch
from torch.overrides import TorchFunctionMode
from torch.utils.weak import WeakIdKeyDictionary

from ppl.stochastic_tensor import StochasticTensor

__all__ = ["track_graph", "Traced", "parents", "children", "markov_blanket", "layout", "draw"]


def _leaves(obj):
    """The tensors and nodes in a (nested) list, tuple or dict of torch arguments."""
    if isinstance(obj, (torch.Tensor, StochasticTensor)):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _leaves(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _leaves(item)


_IN_PLACE_DUNDERS = frozenset(f"__i{op}__" for op in (
    "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor",
    "lshift", "rshift")) | {"__setitem__"}


def _written(func, args, kwargs):
    """The tensors an operation writes in place: its `out=`, or its first argument for an
    in-place method (`add_`, `copy_`, `x[i] = v`, `x += v`)."""
    written = list(_leaves(kwargs.get("out")))
    name = getattr(func, "__name__", "")
    if args and (name in _IN_PLACE_DUNDERS or (name.endswith("_") and not name.endswith("__"))):
        written += _leaves(args[0])
    return [leaf for leaf in written if isinstance(leaf, torch.Tensor)]


class _Provenance(TorchFunctionMode):
    """`track_graph()`'s tracker: propagates `origin[tensor] = {node names}` through every
    torch operation while the block runs."""

    def __init__(self):
        super().__init__()
        self.origin = WeakIdKeyDictionary()

    def sources(self, obj):
        """Union of the node names behind every tensor in the (nested) object."""
        found = set()
        for leaf in _leaves(obj):
            if isinstance(leaf, StochasticTensor):
                found.add(leaf.name)
            else:
                found |= self.origin.get(leaf, frozenset())
        return found

    def mark(self, obj, names):
        names = frozenset(names)
        for leaf in _leaves(obj):
            if isinstance(leaf, torch.Tensor):
                self.origin[leaf] = names

    def named(self, tensor, name):
        """`tensor`, now standing for node `name`."""
        self.mark(tensor, {name})
        return tensor

    @staticmethod
    def plain(value):
        return value

    argument = release = plain

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        names = self.sources((args, kwargs))
        if names:
            self.mark(out, names)
            self.mark(_written(func, args, kwargs), names)
        return out


class Traced(torch.Tensor):
    """A value computed from nodes of a hand-built net; it knows which (see the module docs).

    `_sources`: a frozenset of `(tracker, name)` pairs, so that a value carried over from
    one net into another adds no edge to the second. Every torch operation with a
    `Traced` argument returns `Traced` results carrying the union of its arguments'
    sources (a plain argument's too, where its net marked it), and an in-place one
    passes them on to the tensor it writes. Printed, formatted, pickled or saved
    (`torch.save`) it is a plain tensor.
    """

    _sources = frozenset()

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if not all(issubclass(t, torch.Tensor) for t in types):
            return NotImplemented  # a StochasticTensor argument: it unwraps itself first
        kwargs = kwargs or {}
        sources, plain = frozenset(), []
        for leaf in _leaves((args, kwargs)):
            if isinstance(leaf, Traced):
                sources |= leaf._sources
            else:
                plain.append(leaf)
        trackers = {tracker for tracker, _ in sources}
        for tracker in trackers:
            sources |= {(tracker, name) for leaf in plain for name in tracker.origin.get(leaf, ())}
        out = super().__torch_function__(func, types, args, kwargs)
        for leaf in _leaves(out):
            if isinstance(leaf, Traced):
                leaf._sources = sources
        for leaf in _written(func, args, kwargs):
            if isinstance(leaf, Traced):
                leaf._sources = sources
            else:
                for tracker in trackers:
                    tracker.mark(leaf, {name for owner, name in sources if owner is tracker})
        return out

    def __repr__(self, **kwargs):
        return self.as_subclass(torch.Tensor).__repr__(**kwargs)

    def __format__(self, spec):
        return self.as_subclass(torch.Tensor).__format__(spec)

    def __reduce_ex__(self, protocol):
        return self.as_subclass(torch.Tensor).__reduce_ex__(protocol)

    def __deepcopy__(self, memo):
        twin = copy.deepcopy(self.as_subclass(torch.Tensor), memo).as_subclass(Traced)
        twin._sources = self._sources
        memo[id(self)] = twin
        return twin


class ValueTracker:
    """The graph recorder of one hand-built net: its values carry their sources.

    The same surface as `track_graph()`'s tracker, for `BayesianNet`: `sources`,
    `mark`, `named` (the value model code gets for a node), `plain` and `release`
    (what the net stores) and `argument` (what a distribution is built from). `origin`:
    plain tensor -> the names it stands for (a stored node value, a tensor
    written in place from a node), as long as both live.
    """

    def __init__(self):
        self.origin = WeakIdKeyDictionary()

    def sources(self, obj):
        """The names of this net's nodes behind the tensors and nodes in `obj`."""
        found = set()
        for leaf in _leaves(obj):
            if isinstance(leaf, StochasticTensor):
                if leaf._tracer is self:
                    found.add(leaf.name)
            elif isinstance(leaf, Traced):
                found.update(name for tracker, name in leaf._sources if tracker is self)
            else:
                found |= self.origin.get(leaf, frozenset())
        return found

    def mark(self, tensor, names):
        """A plain tensor: used as it is, it stands for `names`."""
        self.origin[tensor] = frozenset(names)

    def named(self, tensor, name):
        """The value model code computes with for node `name`: a `Traced` view of it.

        A `Traced` tensor is renamed in place, as `track_graph()` re-marks one; a
        plain one is marked, and a view of it returned.
        """
        own = frozenset({(self, name)})
        if isinstance(tensor, Traced):
            tensor._sources = frozenset(p for p in tensor._sources if p[0] is not self) | own
            return tensor
        self.mark(tensor, {name})
        view = tensor.as_subclass(Traced)
        view._sources = own
        return view

    @staticmethod
    def plain(value):
        """`value` as a plain tensor (what a net stores and inference reads): a `Traced`
        one as a plain alias, the caller's own left as it is."""
        return value.as_subclass(torch.Tensor) if isinstance(value, Traced) else value

    @staticmethod
    def release(value):
        """A tensor the net itself made (a sample, a log-probability) made plain in place,
        keeping its identity: a flow recognises the sample it drew by it."""
        if isinstance(value, Traced):
            value.__class__ = torch.Tensor
            value.__dict__.pop("_sources", None)
        return value

    def argument(self, value):
        """A distribution argument as a plain tensor that still stands for its sources
        when found among the distribution's parameters; the distribution then
        computes at plain tensors' speed."""
        if not isinstance(value, Traced):
            return value
        alias = value.as_subclass(torch.Tensor)
        self.mark(alias, {name for tracker, name in value._sources if tracker is self})
        return alias


_active = []


def active_tracker():
    """The innermost `track_graph()` tracker in effect, or None."""
    return _active[-1] if _active else None


@contextlib.contextmanager
def track_graph():
    """Record the model graph of every `BayesianNet` built inside the block.

    Not needed to read a graph (see the module docs); it makes the nets built
    inside record theirs as a template's re-run does.
    """
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
