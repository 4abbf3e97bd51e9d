"""`BayesianNet`: a model as a set of named stochastic and deterministic nodes.

    bn = ppl.BayesianNet(observed={"x": x})
    z = bn.normal("z", torch.zeros(n, 2), std=1., group_ndims=1, n_samples=k)
    bn.bernoulli("x", decoder(z), group_ndims=1)
    bn.log_joint()        # log p(x, z): shape [k, n]

Observations come from `observed`, and, inside a `MetaBayesianNet.observe`
call, from the values given there (the explicit `observed` argument wins).

Every net knows its graph (`bn.graph`, `bn.markov_blanket(name)`), however
it was built: see `ppl.graph` for how it is recorded. ZhuSuan's
`with ppl.BayesianNet(...) as bn:` form works too.
"""
import functools
import inspect
import operator

import torch

from ppl import context, distributions
from ppl import graph as graph_lib
from ppl.stochastic_tensor import StochasticTensor, unwrap

__all__ = ["BayesianNet"]


class BayesianNet:
    """A directed graphical model built imperatively, node by node (ZhuSuan's `BayesianNet`).

    Each `bn.<distribution>(name, ...)` call (or `bn.stochastic(name, dist)`)
    adds a stochastic node and returns it as a `StochasticTensor`: its value is
    the observation when `name` is observed, else a sample. `deterministic` /
    `output` record a computed tensor by name; `factor` adds a log-density term.

    observed: name -> value, the nodes to observe. Inside a template's
        `MetaBayesianNet.observe(**values)` call those values apply too (these
        win). Every observed name must become a stochastic node of the net by
        the time it is used (`log_joint`, `query`): anything else is an error.

    Reading: `bn[name]`, `get`, `outputs`, `cond_log_prob` / `local_log_prob`,
    `query` (ZhuSuan 0.4), `log_joint()` (the sum of every node's log-prob and
    every factor, or the template's `log_joint` override). The graph: `graph`,
    `parents`, `children`, `markov_blanket`, `draw_graph`, for any net: a
    template's net re-runs its call once, traced, when asked; a net built by
    hand outside templates records it as it is built, its nodes handing model
    code values that carry their names (`ppl.graph.Traced`; what the net stores
    and `outputs` gives stay plain tensors).
    """

    def __init__(self, observed=None):
        frame = context.current()
        inherited = frame.observed if frame is not None and frame.observed is not None else {}
        self._observed = {**inherited, **(observed or {})}
        self._given = tuple(observed or ())  # the names this constructor was asked to observe
        self._meta_bn = frame.meta_bn if frame is not None else None
        self._rerun = self._index = None  # a guide's net: how to make it again, for its graph
        if frame is not None and self._meta_bn is None:
            self._rerun, self._index = frame.rerun, frame.made
            frame.made += 1
            if frame.nets is not None:
                frame.nets.append(self)
        self.nodes = {}
        self._stochastic = {}  # the StochasticTensor nodes of `nodes`
        self.factors = {}
        # What records the graph while nodes are added: `track_graph()`'s tracker, this
        # net's own values for a net built by hand, or nothing in a template's call.
        self._tracker = graph_lib.active_tracker()
        if self._tracker is None and frame is None:
            self._tracker = graph_lib.ValueTracker()
        self._parents = {}
        self._log_joint_cache = None

    def __enter__(self):
        """ZhuSuan's `with ppl.BayesianNet() as bn:` form; the block changes nothing."""
        return self

    def __exit__(self, *exc_info):
        return False

    # -- building ---------------------------------------------------------
    def _claim(self, name):
        if not isinstance(name, str) or not name:
            raise TypeError(f"node names must be non-empty strings, got {name!r}")
        if name in self.nodes or name in self.factors:
            raise ValueError(f"BayesianNet: a node named '{name}' already exists; "
                             f"names must be unique")
        self._log_joint_cache = None  # a new term: an earlier log_joint() is out of date

    def stochastic(self, name, dist, n_samples=None):
        """Add a stochastic node drawn from `dist` (or observed, when `name` is)."""
        self._claim(name)
        if not isinstance(dist, distributions.Distribution):
            raise TypeError(f"node '{name}': `dist` must be a ppl Distribution, "
                            f"got {type(dist).__name__}")
        if n_samples is not None and (not isinstance(n_samples, int)
                                      or isinstance(n_samples, bool) or n_samples < 1):
            raise ValueError(f"node '{name}': `n_samples` must be None or a positive int, "
                             f"got {n_samples!r}")
        observation = self._observed.get(name)
        if observation is not None:
            observation = self._check_observation(name, dist, observation, n_samples)
            if self._tracker is not None:
                observation = self._tracker.plain(observation)
        node = StochasticTensor(self, name, dist, n_samples=n_samples, observation=observation,
                                tracer=self._tracker)
        self.nodes[name] = self._stochastic[name] = node
        if self._tracker is not None:
            self._parents[name] = self._tracker.sources(list(dist.params.values()))
            self._tracker.mark(node.tensor, {name})
        return node

    def deterministic(self, name, tensor):
        """Record `tensor` under `name` (e.g. a mean worth reading back); returns it."""
        self._claim(name)
        if name in self._observed:
            raise ValueError(f"node '{name}' is deterministic: it is computed from its parents "
                             f"and cannot be observed; observe the stochastic nodes it comes "
                             f"from, or drop '{name}' from the observations")
        if self._tracker is not None:
            self._parents[name] = self._tracker.sources(tensor)
            tensor = self._tracker.named(unwrap(tensor), name)
        else:
            tensor = unwrap(tensor)
        self.nodes[name] = tensor
        return tensor

    output = deterministic  # ZhuSuan's newer name for the same thing

    def factor(self, name, log_value):
        """Add an unnormalized log-density term to `log_joint` (energy, Stan's target +=)."""
        self._claim(name)
        if self._tracker is not None:
            self._parents[name] = self._tracker.sources(log_value)
        log_value = unwrap(log_value)
        if not isinstance(log_value, torch.Tensor):
            log_value = torch.as_tensor(log_value, dtype=torch.get_default_dtype())
        if self._tracker is not None:
            log_value = self._tracker.plain(log_value)
        self.factors[name] = log_value
        return log_value

    def _check_observation(self, name, dist, value, n_samples):
        value = unwrap(value)
        if not isinstance(value, torch.Tensor):
            try:
                value = torch.as_tensor(value, dtype=dist._default_given_dtype()
                                        if dist.is_continuous else None)
            except (TypeError, ValueError, RuntimeError) as err:
                raise ValueError(f"node '{name}': the observation must be a tensor, "
                                 f"got {type(value).__name__} ({err})") from None
        leading = () if n_samples is None else (n_samples,)
        try:
            value = dist._check_given(value, leading=leading)
        except ValueError as err:
            raise ValueError(f"node '{name}': bad observation: {err}") from None
        if not dist.is_continuous and value.dtype != dist.sample_dtype:
            value = value.to(dist.sample_dtype)  # as ZhuSuan: the node's dtype is the dist's
        return value

    # -- reading ----------------------------------------------------------
    def _check_name(self, name, stochastic_only=False):
        if not isinstance(name, str):
            raise TypeError(f"node names are strings, got {name!r}")
        if name not in self.nodes:
            raise KeyError(f"BayesianNet has no node named '{name}' "
                           f"(nodes: {', '.join(self.nodes) or 'none'})")
        if stochastic_only and not isinstance(self.nodes[name], StochasticTensor):
            raise ValueError(f"node '{name}' is deterministic: it has no log-probability")
        return self.nodes[name]

    def __getitem__(self, name):
        return self._check_name(name)

    def __contains__(self, name):
        return name in self.nodes

    def get(self, names):
        """The node(s) named: one name gives one node, a list gives a list."""
        if isinstance(names, str):
            return self._check_name(names)
        return [self._check_name(n) for n in names]

    def outputs(self, names):
        """The value tensor(s) of the named node(s), as plain tensors."""
        nodes = self.get(names)
        if self._tracker is not None:
            plain = self._tracker.plain
            return plain(unwrap(nodes)) if isinstance(names, str) else [plain(unwrap(n))
                                                                        for n in nodes]
        return unwrap(nodes) if isinstance(names, str) else [unwrap(n) for n in nodes]

    def cond_log_prob(self, names):
        """log p(node | parents) of the named stochastic node(s)."""
        if isinstance(names, str):
            return self._check_name(names, stochastic_only=True).cond_log_p
        return [self._check_name(n, stochastic_only=True).cond_log_p for n in names]

    local_log_prob = cond_log_prob  # ZhuSuan 0.4's name

    def query(self, names, outputs=False, local_log_prob=False):
        """ZhuSuan 0.4's query: for one name a tuple `(value, log_prob)` of what was asked
        (`outputs`: the value; `local_log_prob`: its log p(node | parents)); for a list of
        names a list of such tuples."""
        if not (outputs or local_log_prob):
            raise ValueError("query: no query option is selected: set `outputs=True` and/or "
                             "`local_log_prob=True`")
        self._check_observed_defined("query")
        asked = []
        if outputs:
            asked.append(self.outputs(names))
        if local_log_prob:
            asked.append(self.local_log_prob(names))
        return tuple(asked) if isinstance(names, str) else list(zip(*asked))

    def _check_observed_defined(self, what):
        """Observations given to this net's constructor must all be stochastic nodes."""
        missing = [name for name in self._given if name not in self.nodes]
        if missing:
            raise ValueError(f"{what}: observed names {missing} were given to BayesianNet("
                             f"observed=...) but are not nodes of the net "
                             f"(nodes: {', '.join(self.nodes) or 'none'})")

    @property
    def stochastic_nodes(self):
        return dict(self._stochastic)

    @property
    def observed(self):
        """The observations in effect for this net (name -> value)."""
        return dict(self._observed)

    def log_joint(self):
        """log p of every stochastic node plus every factor (broadcast and summed).

        Override with a template's `log_joint=fn` (fn(bn) -> tensor), or by subclassing.
        """
        if self._log_joint_cache is None:
            self._check_observed_defined("log_joint")
            custom = getattr(self._meta_bn, "log_joint", None)
            if custom is not None:
                self._log_joint_cache = custom(self)
            else:
                terms = {name: node.cond_log_p for name, node in self._stochastic.items()}
                terms.update(self.factors)
                if not terms:
                    raise ValueError("log_joint of a BayesianNet with no stochastic node "
                                     "or factor")
                try:
                    self._log_joint_cache = functools.reduce(operator.add, terms.values())
                except RuntimeError:
                    raise _terms_broadcast_error(terms) from None
        return self._log_joint_cache

    # -- graph ------------------------------------------------------------
    @property
    def graph(self):
        """The model as a `networkx.DiGraph` (see `ppl.graph`): an edge a -> b when b's
        distribution arguments (or value) were computed from node a.

        A net built in a template's call recorded nothing: its call runs again once,
        under `ppl.track_graph()`, and the graph is that of the net it makes again."""
        if self._tracker is None:
            if self._meta_bn is not None:
                with graph_lib.track_graph():
                    return self._meta_bn.observe(**self._observed).graph
            again = []
            with graph_lib.track_graph():
                self._rerun(again)
            return again[self._index].graph
        import networkx as nx
        g = nx.DiGraph()
        for name, node in self.nodes.items():
            if isinstance(node, StochasticTensor):
                g.add_node(name, kind="stochastic", dist=type(node.dist).__name__,
                           observed=node.is_observed())
            else:
                g.add_node(name, kind="deterministic", dist=None, observed=False)
        for name in self.factors:
            g.add_node(name, kind="factor", dist=None, observed=False)
        for child, parents in self._parents.items():
            g.add_edges_from((p, child) for p in parents if p != child)
        return g

    def parents(self, name):
        """The stochastic nodes `name` depends on directly (looking through deterministic
        nodes in between): a set of names."""
        return graph_lib.parents(self.graph, name)

    def children(self, name):
        """The stochastic nodes and factors that depend on `name` directly (through
        deterministic nodes): a set of names."""
        return graph_lib.children(self.graph, name)

    def markov_blanket(self, name):
        """The stochastic nodes that, given their values, make `name` independent of the
        rest: its parents, children and the children's other parents (a factor counts
        as an observed child). A set of names; what a Gibbs update of `name` reads."""
        return graph_lib.markov_blanket(self.graph, name)

    def draw_graph(self, path=None, ax=None):
        """Draw the model graph with matplotlib; save to `path` when given."""
        return graph_lib.draw(self.graph, ax=ax, path=path)

    def __repr__(self):
        kinds = ", ".join(f"{k}{'*' if isinstance(v, StochasticTensor) and v.is_observed() else ''}"
                          for k, v in self.nodes.items())
        return f"BayesianNet({kinds})"


def _terms_broadcast_error(terms):
    """The error, naming every term's shape, for log-prob terms that do not broadcast."""
    shapes = ", ".join(f"'{name}': {tuple(term.shape)}" for name, term in terms.items())
    return ValueError(f"log_joint: the log-probabilities of the nodes do not broadcast "
                      f"({shapes}); set `group_ndims` so they align, or set "
                      f"`meta_bn.log_joint` to a function of the BayesianNet")


def _node_helper(cls, method_name):
    def helper(self, name, *args, n_samples=None, **kwargs):
        if self._tracker is not None:  # the distribution computes with plain tensors
            args = [self._tracker.argument(a) for a in args]
            kwargs = {k: self._tracker.argument(v) for k, v in kwargs.items()}
        return self.stochastic(name, cls(*args, **kwargs), n_samples=n_samples)

    helper.__name__ = method_name
    helper.__qualname__ = f"BayesianNet.{method_name}"
    helper.__signature__ = _helper_signature(cls)
    helper.__doc__ = (f"Add a stochastic node `name` ~ {cls.__name__}(...); `n_samples` "
                      f"draws that many in front.\n\n{cls.__doc__}")
    return helper


def _helper_signature(cls):
    """`(self, name, <cls's arguments>, *, n_samples=None)`, for `help()` and editors.

    Where `cls.__init__` passes `**kwargs` on to its base classes, their keyword
    arguments with defaults (`group_ndims`, `is_reparameterized`, ...) are spelled out.
    """
    P = inspect.Parameter
    params = [P("self", P.POSITIONAL_OR_KEYWORD), P("name", P.POSITIONAL_OR_KEYWORD)]
    keyword_only, taken = [], {"self", "name", "n_samples"}
    inits = [k.__dict__["__init__"] for k in cls.__mro__[:-1] if "__init__" in k.__dict__]
    for depth, init in enumerate(inits):
        found = list(inspect.signature(init).parameters.values())[1:]
        for p in found:
            if p.name in taken or p.kind in (P.VAR_POSITIONAL, P.VAR_KEYWORD):
                continue
            if depth == 0 and p.kind is P.POSITIONAL_OR_KEYWORD:
                params.append(p)
            elif depth == 0 or p.default is not P.empty:  # a base's: passed by keyword
                keyword_only.append(p.replace(kind=P.KEYWORD_ONLY))
            taken.add(p.name)
        if not any(p.kind is P.VAR_KEYWORD for p in found):
            break
    keyword_only.append(P("n_samples", P.KEYWORD_ONLY, default=None))
    return inspect.Signature(params + keyword_only)


def _snake(name):
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and (not name[i - 1].isupper() or
                                   (i + 1 < len(name) and name[i + 1].islower())):
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


for _cls_name in distributions.__all__:
    _cls = getattr(distributions, _cls_name)
    if _cls_name in ("Distribution",):
        continue
    setattr(BayesianNet, _snake(_cls_name), _node_helper(_cls, _snake(_cls_name)))
del _cls_name, _cls
