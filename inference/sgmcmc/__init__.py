"""Stochastic-gradient MCMC: SGLD, pSGLD, SGHMC and SGNHT, with ZhuSuan's interface.

Each sampler takes one step per `.sample(meta_bn, observed, latent, data_scale)`
call on a minibatch; see `inference.sgmcmc.base` for the data-size scaling.
Each module also exposes its pure `*_init` / `*_kernel` functions (state in,
state out) for use without the classes.
"""
from inference.sgmcmc.base import SGMCMC, minibatch_gradient
from inference.sgmcmc.psgld import PSGLD, psgld_init, psgld_kernel
from inference.sgmcmc.sghmc import SGHMC, sghmc_init, sghmc_kernel
from inference.sgmcmc.sgld import SGLD, sgld_init, sgld_kernel
from inference.sgmcmc.sgnht import SGNHT, sgnht_init, sgnht_kernel

__all__ = ["SGMCMC", "minibatch_gradient", "SGLD", "PSGLD", "SGHMC", "SGNHT",
           "sgld_init", "sgld_kernel", "psgld_init", "psgld_kernel", "sghmc_init",
           "sghmc_kernel", "sgnht_init", "sgnht_kernel"]
