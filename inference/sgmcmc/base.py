"""What every stochastic-gradient MCMC sampler shares: the minibatch gradient and `.sample`.

ZhuSuan's call, `sample_op, info = sgmcmc.sample(meta_bn, observed, latent)`,
becomes `samples, info = ...`: one step is taken at once, the new samples are
returned and written into the caller's `latent` tensors (as ZhuSuan assigns
its Variables; see `inference.write_back`), and `info` is ZhuSuan's
`SGMCMCInfo` namedtuple: `info.q` the new samples, `info.mean_k` (SGHMC,
SGNHT) and `info.alpha` (SGNHT), each a dict per latent; plus our
`info.log_joint` (the minibatch estimate, summed over chains).

Data-size scaling is explicit. A minibatch of B out of N data points gives an
unbiased estimate of the full-data log joint only when the minibatch
log-likelihood is multiplied by N / B. Say which nodes hold the minibatch:

    sampler.sample(model, observed={"y": y_batch}, latent={"w": w},
                   data_scale={"y": n_train / batch_size})

estimates log p(w) + N/B * log p(y_batch | w). Every other node (priors,
observed hyperparameters) is left unscaled. A plain `log_joint(values)`
callable, or a model with a custom `meta_bn.log_joint`, does its own scaling
(ZhuSuan's way: `log_pw + N * log_py_xw.mean(-1)`); pass no `data_scale` then.
"""
import collections
import dataclasses
import functools

import torch

from inference import distributed
from inference.model import LogJoint, value_and_grad
from inference.write_back import hand_out, write_back

__all__ = ["SGMCMC", "minibatch_gradient"]


def _scaled_log_joint(log_joint, latent, data_scale):
    """log p(latent) + sum_k data_scale[k] * log p(node k | parents), summed to a scalar."""
    if not data_scale:
        return log_joint(latent).sum()
    if log_joint.is_plain:
        raise ValueError("`data_scale` needs a BayesianNet model; a plain log_joint(values) "
                         "callable must scale its minibatch likelihood itself")
    if log_joint.meta_bn.log_joint is not None:
        raise ValueError("`data_scale` and a custom `meta_bn.log_joint` both scale the "
                         "likelihood: scale it in one place only")
    bn = log_joint.bn(latent)
    if bn.factors:
        raise ValueError(f"`data_scale` cannot tell whether factors {sorted(bn.factors)} are "
                         f"likelihood or prior terms; set `meta_bn.log_joint` instead")
    unknown = [k for k in data_scale if k not in bn.stochastic_nodes]
    if unknown:
        raise ValueError(f"`data_scale` names {unknown}, which are not stochastic nodes of the "
                         f"model (nodes: {', '.join(bn.stochastic_nodes)})")
    latent_named = [k for k in data_scale if k not in log_joint.observed]
    if latent_named:
        raise ValueError(f"`data_scale` names latent nodes {latent_named}: it scales the "
                         f"log-likelihood of observed minibatch nodes, not priors")
    total = 0.
    for name, node in bn.stochastic_nodes.items():
        total = total + data_scale.get(name, 1.) * node.cond_log_p.sum()
    return total


def minibatch_gradient(meta_bn, observed, data_scale=None):
    """`gradient(position) -> (log_joint, grads)`: the minibatch estimate and its gradient.

    `position`: dict name -> tensor (leading chain axes allowed); the log joint
    is summed to a scalar before differentiation, so each chain gets the
    gradient of its own terms. Raises `FloatingPointError` naming the node
    whose gradient is not finite.
    """
    if data_scale is not None and not isinstance(data_scale, dict):
        raise TypeError(f"`data_scale` must be a dict node name -> N / batch size, got "
                        f"{type(data_scale).__name__}")
    log_joint = LogJoint(meta_bn, observed)

    def gradient(position):
        value, grads = value_and_grad(
            lambda leaves: _scaled_log_joint(log_joint, leaves, data_scale), position)
        if all(grad is None for grad in grads.values()):
            raise ValueError(f"the log joint does not depend on the latent nodes "
                             f"{sorted(position)}")
        out = {}
        for name, grad in grads.items():
            if grad is None:
                raise ValueError(f"latent node '{name}' does not affect the log joint: "
                                 f"its gradient is undefined")
            if not torch.isfinite(grad).all():
                raise FloatingPointError(f"the gradient of the log joint with respect to "
                                         f"'{name}' is not finite (NaN or inf); lower the "
                                         f"learning rate or check the model")
            out[name] = grad
        return value, out

    return gradient


@functools.lru_cache(maxsize=None)
def _info_type(fields):
    return collections.namedtuple("SGMCMCInfo", fields)


def sgmcmc_info(info):
    """A kernel's info dict as ZhuSuan's `SGMCMCInfo` namedtuple (fields in the dict's order)."""
    return _info_type(tuple(info))(**info)


class SGMCMC:
    """Base class: holds the sampler state between `.sample` calls (ZhuSuan's variables).

    Subclasses define `init(position) -> state` and
    `kernel(state, gradient) -> (state, info)`, thin wrappers of their module's
    pure functions; the state is a dataclass with a `position` dict and a
    `step` count, the info a dict with `q` (the new position) first.
    """

    def __init__(self):
        self.state = None

    def init(self, position):
        raise NotImplementedError

    def kernel(self, state, gradient):
        raise NotImplementedError

    @staticmethod
    def _check_latent(latent):
        if not isinstance(latent, dict) or not latent:
            raise TypeError("`latent` must be a non-empty dict node name -> tensor")
        for name, value in latent.items():
            if not isinstance(value, torch.Tensor) or not value.is_floating_point():
                raise TypeError(f"latent['{name}'] must be a floating-point tensor (SGMCMC "
                                f"moves continuous nodes), got "
                                f"{getattr(value, 'dtype', type(value).__name__)}")

    def sample(self, meta_bn, observed, latent, *, data_scale=None):
        """One step on one minibatch from `latent`; returns (samples, info).

        - `meta_bn`: a MetaBayesianNet, an nn.Module building a BayesianNet,
          or a callable `log_joint(values) -> tensor`.
        - `observed`: dict name -> tensor, the minibatch (and anything fixed).
        - `latent`: dict name -> float tensor, the chains' current position
          (leading chain axes allowed). As in ZhuSuan, the caller's tensors
          are overwritten with the new samples (`inference.write_back`), or
          pass the returned samples back in:

              for x_batch, y_batch in batches:
                  latent, info = sgmcmc.sample(model, {"x": x_batch, "y": y_batch}, latent,
                                               data_scale={"y": n_train / batch_size})

          The momentum, thermostat or preconditioner carry over between calls
          (as ZhuSuan's variables do) while the latent names and shapes stay.
        - `data_scale` (keyword only): dict node name -> N / B (see the module
          docstring).

        `samples` are new tensors, never overwritten by a later call; `info`
        is ZhuSuan's `SGMCMCInfo` (`q`, the samples, and the algorithm's
        statistics, each a dict per latent) plus `log_joint`.
        """
        self._check_latent(latent)
        position = {k: v.detach() for k, v in latent.items()}
        if self.state is None or set(self.state.position) != set(position):
            self.state = self.init(position)
        else:
            for name, value in position.items():
                if value.shape != self.state.position[name].shape:
                    raise ValueError(f"latent['{name}'] has shape {tuple(value.shape)}, but "
                                     f"the sampler's chain has shape "
                                     f"{tuple(self.state.position[name].shape)}; use a new "
                                     f"sampler for a new chain layout")
            self.state = dataclasses.replace(self.state, position=position)
        gradient = distributed.averaged(minibatch_gradient(meta_bn, observed, data_scale))
        self.state, info = self.kernel(self.state, gradient)
        samples = hand_out(self.state.position)
        write_back(latent, samples)
        return samples, sgmcmc_info({**info, "q": samples})
