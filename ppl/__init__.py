"""ppl: a ZhuSuan-style probabilistic modeling language on PyTorch.

- `ppl.distributions`: distributions with ZhuSuan's names and semantics.
- `ppl.BayesianNet`, `ppl.StochasticTensor`: models as named nodes.
- `ppl.meta_bayesian_net`, `ppl.reuse_variables`, `ppl.module`, `ppl.param`:
  model and guide templates that own their parameters.
- `ppl.graph`, `ppl.track_graph`: the model graph (networkx) and its drawing.
- `ppl.flows`: flow transforms; `ppl.planar_normalizing_flow`,
  `ppl.inv_autoregressive_flow`: ZhuSuan's flow functions.
"""
from ppl import distributions, flows, graph
from ppl.bayesian_net import BayesianNet
from ppl.flows import inv_autoregressive_flow, planar_normalizing_flow
from ppl.graph import track_graph
from ppl.stochastic_tensor import StochasticTensor
from ppl.template import (MetaBayesianNet, Template, as_meta_bn, meta_bayesian_net, module,
                          param, reuse_variables)

__version__ = "0.1.0"

__all__ = ["distributions", "graph", "BayesianNet", "StochasticTensor", "MetaBayesianNet",
           "Template", "meta_bayesian_net", "reuse_variables", "module", "param",
           "as_meta_bn", "track_graph"]
__all__ += ["flows", "planar_normalizing_flow", "inv_autoregressive_flow"]
from ppl import energy  # noqa: E402
from ppl.energy import EnergyModel  # noqa: E402
__all__ += ["energy", "EnergyModel"]
