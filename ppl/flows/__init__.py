"""Invertible transforms for normalizing flows (`ppl.distributions.FlowDistribution`).

Each transform is an `nn.Module` acting on the last axis (of size `dim`):
`forward(x) -> (y, log_abs_det_jacobian)` and, where a closed form exists,
`inverse(y) -> x`. Being modules, their parameters belong to whoever holds
them: a template (`ppl.module("f1", lambda: Planar(2))`) or your own model.

- `Planar`: Rezende & Mohamed (2015); no closed-form inverse.
- `AffineCoupling`: RealNVP, Dinh et al. (2017).
- `MaskedAutoregressive`: an affine autoregressive transform driven by `MADE`
  (Germain et al. 2015), in the IAF (Kingma et al. 2016) or MAF
  (Papamakarios et al. 2017) direction.
- `planar_normalizing_flow`, `inv_autoregressive_flow`, `linear_ar`: ZhuSuan
  0.4's functions, (samples, log_probs) -> (samples, log_probs), with their
  layers owned by the running template.
"""
from ppl.flows.autoregressive import MaskedAutoregressive
from ppl.flows.coupling import AffineCoupling
from ppl.flows.functions import inv_autoregressive_flow, linear_ar, planar_normalizing_flow
from ppl.flows.made import MADE
from ppl.flows.planar import Planar
from ppl.flows.transform import Transform

__all__ = ["Transform", "Planar", "AffineCoupling", "MADE", "MaskedAutoregressive",
           "planar_normalizing_flow", "inv_autoregressive_flow", "linear_ar"]
