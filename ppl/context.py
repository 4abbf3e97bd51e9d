"""The call context of a template: which observations and parameter owner apply.

A `MetaBayesianNet` pushes a frame while it runs its model function, so a
`BayesianNet()` created inside picks up the observations, and `ppl.module` /
`ppl.param` find the template that owns the parameters. Guide templates push a
frame with no observations.
"""
import contextlib
import contextvars
from dataclasses import dataclass


@dataclass(frozen=True)
class Frame:
    template: object = None     # the `Template` owning parameters, or None
    observed: dict = None       # name -> value, for a model run; None for guides
    meta_bn: object = None      # the `MetaBayesianNet` being observed, or None


_current = contextvars.ContextVar("ppl_frame", default=None)


def current():
    """The innermost frame, or None outside any template call."""
    return _current.get()


@contextlib.contextmanager
def push(frame):
    token = _current.set(frame)
    try:
        yield frame
    finally:
        _current.reset(token)
