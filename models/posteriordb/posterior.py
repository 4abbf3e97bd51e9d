"""`Posterior`: a posteriordb posterior as a ppl model, its data and reference draws."""
import importlib
from functools import cached_property

import torch

from models.posteriordb import loader

__all__ = ["POSTERIOR_NAMES", "Posterior", "load"]

# posterior name -> module of models.posteriordb holding its ppl model
_MODULES = {
    "eight_schools-eight_schools_noncentered": "eight_schools_noncentered",
    "gp_pois_regr-gp_pois_regr": "gp_pois_regr",
    "arK-arK": "ark",
    "garch-garch11": "garch11",
    "kidiq-kidscore_momiq": "kidscore_momiq",
    "low_dim_gauss_mix-low_dim_gauss_mix": "low_dim_gauss_mix",
    "sblri-blr": "blr",
    "diamonds-diamonds": "diamonds",
}
POSTERIOR_NAMES = tuple(_MODULES)


class Posterior:
    """One posterior: `model` (a MetaBayesianNet), `observed`, and the Stan reference.

    The model's latent values may carry leading axes (MCMC chains, draws); the
    posteriordb parameters (`reference` names: e.g. eight schools' `theta`) are
    nodes of the model, stochastic or deterministic.
    """

    def __init__(self, name, path=None):
        if name not in _MODULES:
            raise KeyError(f"unknown posterior {name!r}; available: {', '.join(_MODULES)}")
        self.name = name
        self.path = path
        self.module = importlib.import_module(f"models.posteriordb.{_MODULES[name]}")
        self.info = loader.read_posterior_info(name, path)
        self.data = loader.read_data(self.info["data_name"], path)
        self.model, self.observed = self.module.from_data(self.data)

    @property
    def stan_code(self):
        return loader.read_stan_code(self.info["model_name"], self.path)

    @property
    def param_names(self):
        """posteriordb's parameter names, e.g. ["theta", "mu", "tau"]."""
        return list(self.info["dimensions"])

    @cached_property
    def reference(self):
        """Reference draws: dict param -> float64 array `(chain, draw) + param shape`."""
        return loader.read_reference_draws(self.name, self.path)

    @property
    def nuts_settings(self):
        """`inference.NUTS` keyword arguments matching Stan's control for the reference
        (`adapt_delta` -> target_acceptance_rate, `max_treedepth` -> max_tree_depth)."""
        control = loader.read_reference_info(self.name, self.path)["inference"][
            "method_arguments"].get("control", {})
        return {"target_acceptance_rate": control.get("adapt_delta", 0.8),
                "max_tree_depth": control.get("max_treedepth", 10)}

    def latent_from_params(self, params):
        """The model's latent values (dict of tensors) from posteriordb parameter values."""
        params = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in params.items()}
        return self.module.latent_from_params(params, self.data)

    def params_from_latent(self, latent, chunk_size=256):
        """posteriordb's parameters (dict of tensors) from the model's latent values.

        `latent`: dict name -> tensor with one leading (draw) axis. Runs the
        model with the latents observed, `chunk_size` draws at a time (the
        likelihood is computed too), and reads the nodes named like the parameters.
        """
        n_draws = len(next(iter(latent.values())))
        chunks = []
        for start in range(0, n_draws, chunk_size):
            bn = self.model.observe(**self.observed, **{
                name: value[start:start + chunk_size] for name, value in latent.items()})
            chunks.append({name: bn.outputs(name).detach() for name in self.param_names})
        return {name: torch.cat([chunk[name] for chunk in chunks]) for name in self.param_names}

    def __repr__(self):
        return f"Posterior({self.name!r})"


def load(name, path=None):
    """The posterior `name` (see `POSTERIOR_NAMES`), reading its files from `path`
    (default `$PPL_DATA/posteriordb`)."""
    return Posterior(name, path)
