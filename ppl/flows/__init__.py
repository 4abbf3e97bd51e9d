"""Invertible transforms for normalizing flows (`ppl.distributions.FlowDistribution`).

Each transform is an `nn.Module` mapping values of its `event_shape` (the
trailing axes: `[dim]` for vectors, `[C, H, W]` for images) to values of its
`out_shape`: `forward(x) -> (y, log_abs_det_jacobian)`, `inverse(y) -> x` and
`inverse_and_log_det(y) -> (x, log_abs_det)` where a closed form exists. In a
flow the forward direction runs base -> value. Being modules, their
parameters belong to whoever holds them: a template
(`ppl.module("f1", lambda: Planar(2))`) or your own model.

Vectors:
- `Planar`: Rezende & Mohamed (2015); no closed-form inverse.
- `AdditiveCoupling`, `Scaling`: NICE, Dinh et al. (2015).
- `AffineCoupling`: RealNVP, Dinh et al. (2017).
- `MaskedAutoregressive`: an affine autoregressive transform driven by `MADE`
  (Germain et al. 2015), in the IAF (Kingma et al. 2016) or MAF
  (Papamakarios et al. 2017) direction; `maf`, `iaf`: stacks of them with
  `Permutation`s between.
Images [.., C, H, W] (and, for the per-channel ones, vectors):
- `ConvAffineCoupling` (checkerboard or channel masks), `Squeeze`,
  `FactorOut` (multi-scale): RealNVP.
- `ActNorm` (data-dependent init), `InvertibleConv1x1` (LU): Glow,
  Kingma & Dhariwal (2018).
- `BatchNorm`: batch normalization as a bijection.
- `Logit`, `dequantize`, `bits_per_dim`: pixel preprocessing and its measure.
- `Inverse(t)` runs any transform backwards; `Reshape` changes the shape.
ZhuSuan 0.4's functions, (samples, log_probs) -> (samples, log_probs), with
their layers owned by the running template: `planar_normalizing_flow`,
`inv_autoregressive_flow`, `linear_ar`.
"""
from ppl.flows.actnorm import ActNorm
from ppl.flows.autoregressive import MaskedAutoregressive
from ppl.flows.batchnorm import BatchNorm
from ppl.flows.conv1x1 import InvertibleConv1x1
from ppl.flows.coupling import AffineCoupling
from ppl.flows.functions import inv_autoregressive_flow, linear_ar, planar_normalizing_flow
from ppl.flows.image_coupling import ConvAffineCoupling
from ppl.flows.made import MADE
from ppl.flows.multiscale import FactorOut
from ppl.flows.nice import AdditiveCoupling, Scaling
from ppl.flows.permutation import Permutation
from ppl.flows.planar import Planar
from ppl.flows.preprocessing import Logit, bits_per_dim, dequantize
from ppl.flows.reshape import Reshape, Squeeze
from ppl.flows.stacks import autoregressive_stack, iaf, maf
from ppl.flows.transform import Inverse, Transform

__all__ = ["Transform", "Inverse", "Planar", "AffineCoupling", "AdditiveCoupling", "Scaling",
           "MADE", "MaskedAutoregressive", "Permutation", "maf", "iaf", "autoregressive_stack",
           "ConvAffineCoupling", "Squeeze", "Reshape", "FactorOut", "ActNorm",
           "InvertibleConv1x1", "BatchNorm", "Logit", "dequantize", "bits_per_dim",
           "planar_normalizing_flow", "inv_autoregressive_flow", "linear_ar"]
