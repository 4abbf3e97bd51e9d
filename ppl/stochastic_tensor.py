"""`StochasticTensor`: a node of a `BayesianNet` that behaves like a tensor.

It is not a `torch.Tensor` subclass: it holds one (the observation, or a
cached sample of its distribution) and takes part in every torch function and
Python operator through `__torch_function__`, so model code can write
`h = linear(z)` or `z * 2 + 1` with `z` a node. In a net built by hand the
operations see a view of the value that carries the node's name, so that the
net learns its graph (`ppl.graph`); `node.tensor` is always the plain value.
"""
import operator
import weakref

import torch


def unwrap(x):
    """The plain tensor behind `x` (a `StochasticTensor`), or `x` unchanged."""
    return x.tensor if isinstance(x, StochasticTensor) else x


def _operand(x):
    """What an operation on `x` computes with: a node's `_value()`, anything else as is."""
    return x._value() if isinstance(x, StochasticTensor) else x


def _unwrap_tree(obj):
    if isinstance(obj, StochasticTensor):
        return obj._value()
    if isinstance(obj, (list, tuple)):
        return type(obj)(_unwrap_tree(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _unwrap_tree(v) for k, v in obj.items()}
    return obj


class StochasticTensor:
    """A stochastic node: name, distribution, and value.

    `tensor` is the observation when the node is observed, else one sample of
    `dist` (drawn once, with `n_samples` in front when given, and cached).
    `tracer`: the net's graph recorder (`ppl.graph`) or None; it names the
    value operations see and keeps `tensor` and `cond_log_p` plain.
    """

    def __init__(self, bn, name, dist, n_samples=None, observation=None, tracer=None):
        self._bn = weakref.ref(bn)
        self.name = name
        self.dist = dist
        self.n_samples = n_samples
        self._observation = observation
        self._sample = None
        self._cond_log_p = None
        self._tracer = tracer
        self._view = None

    @property
    def bn(self):
        """The `BayesianNet` holding this node (None once it is gone).

        A weak reference: the net holds its nodes, so a strong one would make
        a cycle, and every step's net and tensors would wait for Python's
        cyclic garbage collector instead of being freed when dropped.
        """
        return self._bn()

    def is_observed(self):
        return self._observation is not None

    @property
    def tensor(self):
        if self._observation is not None:
            return self._observation
        if self._sample is None:
            try:
                sample = self.dist.sample(self.n_samples)
            except (ValueError, RuntimeError) as err:
                raise type(err)(f"node '{self.name}': sampling failed: {err}") from err
            self._sample = sample if self._tracer is None else self._tracer.release(sample)
        return self._sample

    def _value(self):
        """The value operations on this node compute with: `tensor`, or where the net
        records its graph, the tracer's view of it that stands for this node."""
        if self._tracer is None:
            return self.tensor
        if self._view is None:
            self._view = self._tracer.named(self.tensor, self.name)
        return self._view

    @property
    def cond_log_p(self):
        """log p(value | parents), summed over the last `group_ndims` batch axes."""
        if self._cond_log_p is None:
            if not self.dist.has_density:
                raise ValueError(f"node '{self.name}': {type(self.dist).__name__} has no "
                                 f"density, so it cannot enter a log-joint (observe it in a "
                                 f"model that has one, or use an objective that needs only "
                                 f"samples)")
            try:
                # The observation was checked when the node was made; samples are valid.
                log_p = self.dist._log_prob(self.tensor)
            except ValueError as err:
                raise ValueError(f"node '{self.name}': {err}") from None
            self._cond_log_p = log_p if self._tracer is None else self._tracer.release(log_p)
        return self._cond_log_p

    # ZhuSuan's older names -------------------------------------------------
    @property
    def distribution(self):
        """The node's distribution (ZhuSuan's name for `dist`)."""
        return self.dist

    @property
    def net(self):
        """The `BayesianNet` holding this node (ZhuSuan's name for `bn`)."""
        return self.bn

    def log_prob(self, given):
        """log p(given) under the node's distribution (not the node's own value)."""
        return self.dist.log_prob(given)

    def prob(self, given):
        """p(given) under the node's distribution."""
        return self.dist.prob(given)

    def sample(self, n_samples=None):
        """A fresh draw of the node's distribution (the node's own value is unchanged)."""
        return self.dist.sample(n_samples)

    # Tensor-like surface -------------------------------------------------
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        return func(*_unwrap_tree(args), **(_unwrap_tree(kwargs) if kwargs else {}))

    def __getattr__(self, item):
        # Only reached for names not found on the class: tensor attributes are forwarded
        # to the value. A property of this class that raised AttributeError lands here
        # too; it is re-run so that its own error shows, not a forwarded one.
        descriptor = getattr(type(self), item, None)
        if isinstance(descriptor, property):
            try:
                return descriptor.fget(self)
            except AttributeError as err:
                raise RuntimeError(f"node '{self.name}': reading `{item}` failed: "
                                   f"{err}") from err
        if item.startswith("_") or not hasattr(torch.Tensor, item):
            raise AttributeError(f"StochasticTensor '{self.__dict__.get('name', '?')}' has no "
                                 f"attribute '{item}' (neither has its value, a tensor)")
        return getattr(self._value(), item)

    def __repr__(self):
        kind = "observed" if self.is_observed() else "latent"
        return (f"StochasticTensor(name={self.name!r}, {kind}, "
                f"dist={type(self.dist).__name__}, shape={tuple(self.tensor.shape)})")

    def __len__(self):
        return len(self.tensor)

    def __iter__(self):
        return iter(self._value())

    def __getitem__(self, index):
        return self._value()[_unwrap_tree(index)]

    def __bool__(self):
        return bool(self.tensor)

    def __float__(self):
        return float(self.tensor)

    def __int__(self):
        return int(self.tensor)

    def __array__(self, dtype=None):
        arr = self.tensor.detach().cpu().numpy()
        return arr if dtype is None else arr.astype(dtype)

    def __hash__(self):
        return id(self)


def _binary(op):
    def forward(self, other):
        return op(self._value(), _operand(other))

    def reverse(self, other):
        return op(_operand(other), self._value())

    return forward, reverse


for _name, _op in [("add", operator.add), ("sub", operator.sub), ("mul", operator.mul),
                   ("truediv", operator.truediv), ("floordiv", operator.floordiv),
                   ("mod", operator.mod), ("pow", operator.pow), ("matmul", operator.matmul),
                   ("and", operator.and_), ("or", operator.or_), ("xor", operator.xor)]:
    _fwd, _rev = _binary(_op)
    setattr(StochasticTensor, f"__{_name}__", _fwd)
    setattr(StochasticTensor, f"__r{_name}__", _rev)

for _name, _op in [("lt", operator.lt), ("le", operator.le), ("gt", operator.gt),
                   ("ge", operator.ge), ("eq", operator.eq), ("ne", operator.ne)]:
    setattr(StochasticTensor, f"__{_name}__", _binary(_op)[0])

for _name, _op in [("neg", operator.neg), ("pos", operator.pos), ("abs", operator.abs),
                   ("invert", operator.invert)]:
    setattr(StochasticTensor, f"__{_name}__", (lambda op: lambda self: op(self._value()))(_op))

del _name, _op, _fwd, _rev
