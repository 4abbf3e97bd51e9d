"""ZhuSuan 0.4's flow functions: transform samples and their log-densities in one call.

    @ppl.reuse_variables(scope="q_net")
    def build_q_net(x, z_dim, n_particles):
        bn = ppl.BayesianNet()
        ...
        bn.normal("z", z_mean, logstd=z_logstd, group_ndims=1, n_samples=n_particles)
        qz_samples, log_qz = bn.query("z", outputs=True, local_log_prob=True)
        qz_samples, log_qz = ppl.planar_normalizing_flow(qz_samples, log_qz, n_iters=10)
        return qz_samples, log_qz          # latent={"z": [qz_samples, log_qz]}

ZhuSuan creates the flows' variables in the TensorFlow graph; here they are
layers of the template that is running (as `ppl.module` makes them): created
on its first call, reused on every later one, and in `template.parameters()`.
Call them inside a `@ppl.reuse_variables` / `@ppl.meta_bayesian_net`
function. Each call in one run of a template gets its own layers, numbered by
call order (`planar_normalizing_flow_0`, `_1`, ...), as each ZhuSuan call makes
new variables; `name=` names them instead.
"""
import torch
from torch import nn

from ppl import context
from ppl.flows.made import MADE
from ppl.flows.planar import Planar
from ppl.stochastic_tensor import unwrap

__all__ = ["planar_normalizing_flow", "inv_autoregressive_flow", "linear_ar"]


def _running_frame(function):
    frame = context.current()
    if frame is None or frame.template is None:
        raise RuntimeError(f"ppl.{function} was called outside a template call: its layers "
                           f"must belong to one. Call it inside the function decorated with "
                           f"@ppl.reuse_variables (the guide) or @ppl.meta_bayesian_net")
    return frame


def _template_and_name(function, name):
    """The running template and the name of this call's layers."""
    frame = _running_frame(function)
    index = frame.calls[function]
    frame.calls[function] += 1
    if name is None:
        name = f"{function}_{index}"
    return frame.template, name


def _check_samples(function, samples, log_probs):
    samples, log_probs = unwrap(samples), unwrap(log_probs)
    if not isinstance(samples, torch.Tensor) or not samples.is_floating_point() \
            or samples.dim() < 2:
        raise ValueError(f"{function}: `samples` must be a floating-point tensor of shape "
                         f"[..., d] with at least 2 axes, got "
                         f"{getattr(samples, 'shape', type(samples).__name__)}")
    log_probs = torch.as_tensor(log_probs, dtype=samples.dtype, device=samples.device)
    if log_probs.shape != samples.shape[:-1]:
        raise ValueError(f"{function}: `log_probs` must have the shape of `samples` without "
                         f"its last axis, {tuple(samples.shape[:-1])}, got "
                         f"{tuple(log_probs.shape)}")
    return samples, log_probs


def _check_n_iters(function, n_iters):
    if not isinstance(n_iters, int) or isinstance(n_iters, bool) or n_iters < 1:
        raise ValueError(f"{function}: `n_iters` must be a positive int, got {n_iters!r}")


def planar_normalizing_flow(samples, log_probs, n_iters, *, name=None):
    """`n_iters` planar flows (`ppl.flows.Planar`) along the last axis of `samples`.

    samples: [..., d] (at least 2 axes); log_probs: [...], their log-density.
    Returns the transformed samples [..., d] and their log-density [...]
    (`log_probs` minus each flow's log |det Jacobian|).
    """
    function = "planar_normalizing_flow"
    samples, log_probs = _check_samples(function, samples, log_probs)
    _check_n_iters(function, n_iters)
    template, name = _template_and_name(function, name)
    d = samples.shape[-1]
    flows = template.get_module(name, lambda: nn.ModuleList(
        Planar(d) for _ in range(n_iters)).to(device=samples.device, dtype=samples.dtype))
    if len(flows) != n_iters or flows[0].dim != d:
        raise ValueError(f"{function}: the template's flow '{name}' has {len(flows)} layers on "
                         f"d={flows[0].dim}, but this call asks for n_iters={n_iters} on d={d}")
    z = samples
    for flow in flows:
        z, log_det = flow(z)
        log_probs = log_probs - log_det
    return z, log_probs


def inv_autoregressive_flow(samples, hidden, log_probs, autoregressive_nn, n_iters,
                            update="normal", *, name=None):
    """Inverse autoregressive flow (Kingma et al. 2016), as ZhuSuan's, along the last axis.

    samples: [..., d] (at least 2 axes); log_probs: [...]; hidden: passed on to
    the network. `autoregressive_nn(name, id, z, hidden)` returns `(m, s)`,
    each shaped like `z`, with output i depending only on the inputs before
    it (see `linear_ar`); it is called in the running template, so it can
    make its layers with `ppl.module(f"{name}_{id}", ...)`. Flow `id` updates
    `z = s * z + m` (`update="normal"`; s > 0) or, with `update="gru"`,
    `z = sigmoid(s) * z + (1 - sigmoid(s)) * m`, subtracts the log |det| from
    the log-density, and reverses the last axis (so the next flow sees the
    other order). Returns the transformed samples and their log-density.
    """
    function = "inv_autoregressive_flow"
    samples, log_probs = _check_samples(function, samples, log_probs)
    _check_n_iters(function, n_iters)
    if update not in ("normal", "gru"):
        raise ValueError(f"{function}: `update` must be 'normal' or 'gru', got {update!r}")
    if not callable(autoregressive_nn):
        raise TypeError(f"{function}: `autoregressive_nn` must be a function "
                        f"(name, id, z, hidden) -> (m, s), got {type(autoregressive_nn).__name__}")
    _, name = _template_and_name(function, name)
    z = samples
    for i in range(n_iters):
        m, s = autoregressive_nn(name, i, z, hidden)
        if m.shape != z.shape or s.shape != z.shape:
            raise ValueError(f"{function}: autoregressive_nn must return (m, s) shaped like z "
                             f"{tuple(z.shape)}, got {tuple(m.shape)} and {tuple(s.shape)}")
        if update == "gru":
            gate = torch.sigmoid(s)
            z = gate * z + (1 - gate) * m
            log_probs = log_probs - nn.functional.logsigmoid(s).sum(-1)
        else:
            z = s * z + m
            log_probs = log_probs - s.log().sum(-1)
        z = z.flip(-1)
    return z, log_probs


def linear_ar(name, id, z, hidden=None):
    """ZhuSuan's linear autoregressive network for `inv_autoregressive_flow`.

    `m = z W_m`, `s = exp(z W_s)` with output j seeing the inputs i < j: a
    `MADE` without hidden layers, the running template's layer `f"{name}_{id}"`,
    its weights drawn from N(0, 0.005^2) as ZhuSuan's. `hidden` is unused.
    """
    def make():
        made = MADE(z.shape[-1], ())
        nn.init.normal_(made.output.weight, std=0.005)
        nn.init.zeros_(made.output.bias)
        return made.to(device=z.device, dtype=z.dtype)

    template = _running_frame("linear_ar").template
    m, log_s = template.get_module(f"{name}_{id}", make)(z).unbind(-2)
    return m, log_s.exp()
