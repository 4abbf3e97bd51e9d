"""Templates: model and guide functions that own their parameters.

    @ppl.meta_bayesian_net(scope="gen", reuse_variables=True)
    def build_gen(x_dim, z_dim, n, n_particles=1):
        bn = ppl.BayesianNet()
        z = bn.normal("z", torch.zeros(n, z_dim), std=1., group_ndims=1, n_samples=n_particles)
        h = ppl.module("h", lambda: nn.Linear(z_dim, 500))(z).relu()
        bn.bernoulli("x", ppl.module("out", lambda: nn.Linear(500, x_dim))(h), group_ndims=1)
        return bn

    model = build_gen(784, 40, n=128)          # a MetaBayesianNet
    bn = model.observe(x=x_batch)              # re-runs the function, x observed
    build_gen.parameters()                     # the template is an nn.Module

Layers made with `ppl.module(name, factory)` and tensors made with
`ppl.param(name, init)` are created on the template's first run and reused on
every later run, whatever the other arguments (train and test batch sizes
share weights). Two templates never share parameters unless the user passes
modules in.

Calling a model template only binds arguments; the function runs in
`observe()`. So that `torch.optim.Adam(build_gen.parameters())` right after
`model = build_gen(...)` sees every parameter, asking a template that has been
called but has not run yet for its parameters, buffers or state (or moving it
with `.to()`) runs its latest call once with nothing observed, without
gradients, which creates them. Asking a template never called is an error:
nothing says yet which layers its function makes.

A model's `log_joint` override belongs to its template (`log_joint=fn` in the
decorator, or `build_model.log_joint = fn`): every net the template makes uses
it. ZhuSuan's `model.log_joint = fn` on a `MetaBayesianNet` sets the same
override, so it is not lost when the template is called again. A copy of a
net (ZhuSuan's `proposal = copy(model); proposal.log_joint = log_prior` for
AIS) keeps an override of its own instead.
"""
import functools
import itertools

import torch
from torch import nn

from ppl import context
from ppl.bayesian_net import BayesianNet

__all__ = ["Template", "MetaBayesianNet", "meta_bayesian_net", "reuse_variables", "module",
           "param", "as_meta_bn", "creation_count"]


class Template(nn.Module):
    """An `nn.Module` owning the layers and parameters its function creates."""

    def __init__(self, fn, scope=None):
        super().__init__()
        self.fn = fn
        self.scope = scope or fn.__name__
        self.layers = nn.ModuleDict()
        self.params = nn.ParameterDict()
        self._latest = None  # a model template's latest call, until its function first runs
        self._ran = False     # its function has run at least once
        functools.update_wrapper(self, fn, updated=())

    def _placement(self):
        own = itertools.chain(self.layers.parameters(), self.params.values())
        existing = next(own, None)
        return None if existing is None else (existing.device, existing.dtype)

    # -- parameters exist once the template was called ----------------------
    def _materialize(self):
        """Create the layers and parameters of a template called but never run: run its
        latest call once, nothing observed, without gradients."""
        latest = self._latest
        if self._ran or latest is None:
            return
        try:
            with torch.no_grad():
                latest.observe()
        except Exception as err:
            self._ran, self._latest = False, latest
            raise RuntimeError(f"template '{self.scope}' has not run yet, and running its "
                               f"latest call with nothing observed, to create its layers and "
                               f"parameters, failed ({type(err).__name__}: {err}); call "
                               f"`.observe(...)` on it once with your data first") from err

    def named_parameters(self, *args, **kwargs):
        if not self._ran and self._latest is None:
            raise RuntimeError(f"template '{self.scope}' was never called, so it has no "
                               f"parameters yet (its function makes them): call it first, "
                               f"e.g. `model = {self.__name__}(...)`, then ask for them")
        return super().named_parameters(*args, **kwargs)

    def named_modules(self, *args, **kwargs):
        self._materialize()  # parameters(), buffers() and a parent's listing come here
        return super().named_modules(*args, **kwargs)

    def state_dict(self, *args, **kwargs):
        self._materialize()
        return super().state_dict(*args, **kwargs)

    def load_state_dict(self, *args, **kwargs):
        self._materialize()
        return super().load_state_dict(*args, **kwargs)

    def _apply(self, *args, **kwargs):
        self._materialize()  # .to(), .double(), .cuda(): move what the first run makes
        return super()._apply(*args, **kwargs)

    def get_module(self, name, factory):
        layer = self.layers._modules.get(name)  # the fast path: every call after the first
        if layer is not None:
            return layer
        _check_key(name)
        if name not in self.layers:
            layer = factory()
            if not isinstance(layer, nn.Module):
                raise TypeError(f"ppl.module('{name}'): the factory must return an nn.Module, "
                                f"got {type(layer).__name__}")
            placement = self._placement()
            if placement is not None:  # follow an earlier `.to(device/dtype)` of the template
                layer = layer.to(device=placement[0], dtype=placement[1])
            self.layers[name] = layer
            _count_creation()
        return self.layers[name]

    def get_param(self, name, init):
        param = self.params._parameters.get(name)  # the fast path: every call after the first
        if param is not None:
            return param
        _check_key(name)
        if name not in self.params:
            value = init() if callable(init) else init
            value = torch.as_tensor(value, dtype=None if isinstance(value, torch.Tensor)
                                    else torch.get_default_dtype())
            placement = self._placement()
            if placement is not None:
                value = value.to(device=placement[0],
                                 dtype=placement[1] if value.is_floating_point() else None)
            self.params[name] = nn.Parameter(value.detach().clone())
            _count_creation()
        return self.params[name]

    def run(self, *args, observed=None, meta_bn=None, **kwargs):
        """Call the function in this template's frame; once the template was moved to a
        device (`.to("cuda")`), tensors the function creates (`torch.zeros(n, z_dim)` for a
        prior) are created there, as its layers are."""
        return self._run(args, kwargs, observed, meta_bn)

    def _run(self, args, kwargs, observed, meta_bn, nets=None):
        """`run`; `nets`: a list the nets made directly in this call are appended to."""
        rerun = functools.partial(self._run, args, kwargs, observed, meta_bn)
        frame = context.Frame(template=self, observed=observed, meta_bn=meta_bn, rerun=rerun,
                              nets=nets)
        if not self._ran:
            self._ran, self._latest = True, None
        placement = self._placement()
        if placement is None or placement[0].type == "cpu":
            return context.call_in(frame, self.fn, *args, **kwargs)
        with placement[0]:
            return context.call_in(frame, self.fn, *args, **kwargs)

    def extra_repr(self):
        return f"scope={self.scope!r}"


_created = 0  # layers and parameters created by all templates so far


def _count_creation():
    global _created
    _created += 1


def creation_count():
    """How many layers and parameters templates have created in this process.

    It changes exactly when a template gains one, so a trainer can tell cheaply
    whether its list of parameters is still complete.
    """
    return _created


def _check_key(name):
    if not isinstance(name, str) or not name or "." in name:
        raise ValueError(f"parameter and module names must be non-empty strings without '.', "
                         f"got {name!r}")


class MetaBayesianNet:
    """A model function with its arguments bound, ready to be observed.

    `observe(**values)` runs the function with those nodes observed and returns
    its `BayesianNet`. `log_joint`, when set to a callable `fn(bn)`, replaces the
    default sum of log-probabilities (as in ZhuSuan); for a template's net it is
    the template's override (see the module docs).
    """

    def __init__(self, fn, args=(), kwargs=None, template=None):
        self._fn = fn
        self._args = tuple(args)
        self._kwargs = dict(kwargs or {})
        self._template = template
        self._log_joint = None
        self._own_log_joint = template is None  # False: the template's override applies

    @property
    def template(self):
        return self._template

    @property
    def log_joint(self):
        """The override `fn(bn) -> tensor` of `BayesianNet.log_joint`, or None (the sum of
        every node's log-probability). For a net made by a template it is the template's:
        setting it here sets it there, for every net the template makes. A copy
        (`copy.copy(model)`, ZhuSuan's way to make an AIS proposal) has its own."""
        return self._log_joint if self._own_log_joint else self._template.log_joint

    @log_joint.setter
    def log_joint(self, fn):
        if self._own_log_joint:
            self._log_joint = _checked_log_joint(fn)
        else:
            self._template.log_joint = fn

    def __copy__(self):
        twin = MetaBayesianNet(self._fn, self._args, self._kwargs, template=self._template)
        twin._log_joint, twin._own_log_joint = self.log_joint, True
        return twin

    def __repr__(self):
        return f"MetaBayesianNet({getattr(self._fn, '__name__', type(self._fn).__name__)})"

    def observe(self, **observed):
        if self._template is not None:
            bn = self._template.run(*self._args, observed=observed, meta_bn=self,
                                    **self._kwargs)
        else:
            frame = context.Frame(template=None, observed=observed, meta_bn=self)
            bn = context.call_in(frame, self._fn, *self._args, **self._kwargs)
        if not isinstance(bn, BayesianNet):
            raise TypeError(f"the model function {getattr(self._fn, '__name__', self._fn)!r} "
                            f"must return a ppl.BayesianNet, got {type(bn).__name__}")
        unknown = [name for name in observed if name not in bn.nodes]
        if unknown:
            raise ValueError(f"observed names {unknown} are not nodes of the model "
                             f"(nodes: {', '.join(bn.nodes)})")
        return bn


class _MetaTemplate(Template):
    """What `@meta_bayesian_net` returns: calling it binds arguments."""

    def __init__(self, fn, scope=None, reuse_variables=False, log_joint=None):
        super().__init__(fn, scope)
        self.reuse_variables = reuse_variables
        self.log_joint = log_joint

    @property
    def log_joint(self):
        """The override `fn(bn) -> tensor` of `log_joint` for every net this template
        makes, or None."""
        return self._log_joint

    @log_joint.setter
    def log_joint(self, fn):
        self._log_joint = _checked_log_joint(fn)

    def forward(self, *args, **kwargs):
        meta_bn = MetaBayesianNet(self.fn, args, kwargs, template=self)
        if not self._ran:
            self._latest = meta_bn
        return meta_bn


def _checked_log_joint(fn):
    if fn is not None and not callable(fn):
        raise TypeError(f"`log_joint` must be a function of the BayesianNet (or None), got "
                        f"{type(fn).__name__}")
    return fn


class _GuideTemplate(Template):
    """What `@reuse_variables` returns: calling it runs the function."""

    def forward(self, *args, **kwargs):
        # Called as the function of `as_meta_bn(guide, ...).observe(**values)`: observe them
        # too (e.g. to score a proposal at given values); inside another template: never.
        outer = context.current()
        if outer is not None and outer.template is None and outer.meta_bn is not None:
            return self.run(*args, observed=outer.observed, meta_bn=outer.meta_bn, **kwargs)
        return self.run(*args, **kwargs)


def meta_bayesian_net(scope=None, reuse_variables=False, *, log_joint=None):
    """Turn a model function returning a `BayesianNet` into a template.

    Calling the template returns a `MetaBayesianNet`. `log_joint`: an override
    `fn(bn) -> tensor` of the nets' log joint (also settable later as
    `template.log_joint = fn`).

    `reuse_variables` (a bool) is ZhuSuan's and is kept as `template.reuse_variables`
    but changes nothing: layers and parameters always live in the template and are
    reused on every call, as ZhuSuan's `reuse_variables=True` does. (ZhuSuan's default
    False makes fresh variables on each call, which its examples use only for models
    without variables.)
    """
    if not isinstance(reuse_variables, bool):
        raise TypeError(f"`reuse_variables` must be True or False, got {reuse_variables!r}")
    _checked_log_joint(log_joint)

    def wrap(fn):
        return _MetaTemplate(fn, scope, reuse_variables=reuse_variables, log_joint=log_joint)

    return wrap


def reuse_variables(scope=None):
    """Turn a guide function (returning a plain `BayesianNet`) into a template."""

    def wrap(fn):
        return _GuideTemplate(fn, scope)

    return wrap


def _owner(what, name):
    frame = context.current()
    if frame is None or frame.template is None:
        raise RuntimeError(f"ppl.{what}('{name}') was called outside a template call: "
                           f"decorate the function with @ppl.meta_bayesian_net or "
                           f"@ppl.reuse_variables (or hold the layer in your own nn.Module)")
    return frame.template


def module(name, factory):
    """The layer `name` of the running template, made by `factory()` on first use."""
    return _owner("module", name).get_module(name, factory)


def param(name, init):
    """The parameter `name` of the running template, initialized from `init` on first use."""
    return _owner("param", name).get_param(name, init)


def as_meta_bn(model, *args, **kwargs):
    """A `MetaBayesianNet` for a template call, an `nn.Module` or any function.

    Inference accepts models in any of these forms: a `MetaBayesianNet`
    (returned as is), or a callable (e.g. an `nn.Module` whose `forward` builds
    and returns a `BayesianNet`) called with `args` and `kwargs`.
    """
    if isinstance(model, MetaBayesianNet):
        return model
    if not callable(model):
        raise TypeError(f"a model must be a MetaBayesianNet or a callable returning a "
                        f"BayesianNet, got {type(model).__name__}")
    return MetaBayesianNet(model, args, kwargs)
