"""The call context of a template: which observations and parameter owner apply.

A `MetaBayesianNet` runs its model function in a frame (`call_in`), so a
`BayesianNet()` created inside picks up the observations, and `ppl.module` /
`ppl.param` find the template that owns the parameters. Guide templates run in a
frame with no observations.
"""
import collections
import contextvars
from dataclasses import dataclass, field


@dataclass
class Frame:
    template: object = None     # the `Template` owning parameters, or None
    observed: dict = None       # name -> value, for a model run; None for guides
    meta_bn: object = None      # the `MetaBayesianNet` being observed, or None
    # calls made so far in this run, per function that numbers its layers by call order
    # (ZhuSuan's flow functions: `planar_normalizing_flow_0`, `_1`, ...)
    calls: collections.Counter = field(default_factory=collections.Counter)
    # For the graph of a guide's net (which has no `meta_bn` to observe again): `rerun(nets)`
    # makes the same call again, each net made directly in its frame appended to `nets`;
    # `made` counts the nets made directly in this frame so far; `nets`: such a list or None.
    rerun: object = None
    made: int = 0
    nets: list = None


_current = contextvars.ContextVar("ppl_frame", default=None)


def current():
    """The innermost frame, or None outside any template call."""
    return _current.get()


def call_in(frame, fn, *args, **kwargs):
    """`fn(*args, **kwargs)` with `frame` the innermost frame while it runs."""
    token = _current.set(frame)
    try:
        return fn(*args, **kwargs)
    finally:
        _current.reset(token)
