"""Distributions with ZhuSuan's names and semantics, computed by `torch.distributions`."""
from ppl.distributions.base import Distribution
from ppl.distributions.univariate import *  # noqa: F401,F403
from ppl.distributions.univariate import __all__ as _univariate
from ppl.distributions.multivariate import *  # noqa: F401,F403
from ppl.distributions.multivariate import __all__ as _multivariate
from ppl.distributions.flow import Flow, FlowDistribution
from ppl.distributions.special import Empirical, Implicit, ImproperUniform

__all__ = ["Distribution", "Empirical", "Implicit", "ImproperUniform", *_univariate, *_multivariate]
__all__ += ["FlowDistribution", "Flow"]
from ppl.distributions.autoregressive import Autoregressive  # noqa: E402
__all__ += ["Autoregressive"]
