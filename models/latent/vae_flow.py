"""A VAE whose guide is a normalizing flow (Rezende & Mohamed 2015; Kingma et al. 2016).

The model is `models.latent.vae`'s; the guide draws z0 from the VAE's
diagonal Normal q0(z0 | x) and pushes it through K invertible maps,

    z = f_K o ... o f_1 (z0),   log q(z | x) = log q0(z0 | x) - sum_k log |det df_k/dz_{k-1}|,

as ZhuSuan's `vae_nf` does with its flow functions: `--flow planar` applies
`ppl.planar_normalizing_flow` (f(z) = z + u tanh(w^T z + b)), `--flow iaf`
`ppl.inv_autoregressive_flow` with MADE networks (one hidden layer) and the
gated update z = sigmoid(s) z + (1 - sigmoid(s)) m; `--flow-length K` maps.
The guide returns (samples, log q), handed to the objectives as ZhuSuan's
`latent={"z": (z, log_q)}`. Trained by the ELBO (SGVB); evaluated by the test
ELBO and the test log-likelihood by importance sampling with the flow guide.

    python -m models.latent.vae_flow --flow planar --flow-length 10 --epochs 10
    python -m models.latent.vae_flow --data binarized_mnist --flow iaf --flow-length 4
"""
import torch

import inference
import ppl
from models import experiment, zoo
from models.latent.vae import DIGITS_DEFAULTS, MNIST_DEFAULTS, image_net, normal_node
from models.latent.vae import build_gen as vae_gen

__all__ = ["FLOWS", "build_gen", "build_q_net", "new_templates", "elbo_step", "main"]

FLOWS = ("planar", "iaf")

# The model is the VAE's; this module owns its own copy of the template.
build_gen = ppl.meta_bayesian_net(scope="gen", reuse_variables=True)(vae_gen.fn)


def _made_ar(name, id, z, hidden):
    """The IAF's autoregressive net: (m, s) from a MADE with one hidden layer of `hidden` units.

    The gate's bias starts at 1 (sigmoid(s) near 0.73), so each map starts
    close to the identity, as Kingma et al. advise. The template holds the
    MADE's layer stack `net` (outputs [..., 2 * d]) rather than the MADE, which
    also registers its last layer a second time: a step recorded by
    `inference.TracedStep` must not hold a module twice.
    """
    d = z.shape[-1]

    def make():
        made = ppl.flows.MADE(d, (hidden,))
        with torch.no_grad():
            made.output.bias[d:] = 1.
        return made.net

    m, s = ppl.module(f"{name}_{id}", make)(z).unflatten(-1, (2, d)).unbind(-2)
    return m, s


@ppl.reuse_variables(scope="q_net")
def build_q_net(x, z_dim, n_z_per_x, hidden=(500, 500), flow="planar", flow_length=10,
                iaf_hidden=None):
    """q(z | x) by a flow: returns (z [n_z_per_x, n, z_dim], log q(z | x) [n_z_per_x, n]).

    `iaf_hidden`: the MADE's hidden units for `flow="iaf"` (default 2 * z_dim).
    """
    if flow not in FLOWS:
        raise ValueError(f"build_q_net: unknown flow {flow!r}; expected one of {FLOWS}")
    h = image_net("encoder", x, hidden)
    bn = ppl.BayesianNet()
    normal_node(bn, "z", h, z_dim, n_z_per_x)
    z0, log_q0 = bn.query("z", outputs=True, local_log_prob=True)
    if flow == "planar":
        return ppl.planar_normalizing_flow(z0, log_q0, n_iters=flow_length)
    return ppl.inv_autoregressive_flow(z0, iaf_hidden or 2 * z_dim, log_q0, _made_ar,
                                       n_iters=flow_length, update="gru")


def new_templates():
    """Fresh, untrained copies of (`build_gen`, `build_q_net`)."""
    return (ppl.meta_bayesian_net(scope="gen", reuse_variables=True)(build_gen.fn),
            ppl.reuse_variables(scope="q_net")(build_q_net.fn))


def elbo_step(gen, q_net, z_dim, hidden=(500, 500), **flow):
    """A training step x -> (cost, ELBO) using the SGVB gradient through the flow."""
    def step(x):
        model = gen(x.shape[1], z_dim, x.shape[0], 1, hidden=hidden)
        z, log_q = q_net(x, z_dim, 1, hidden=hidden, **flow)
        lower_bound = inference.elbo(model, {"x": x}, {"z": (z, log_q)}, axis=0)
        return lower_bound.sgvb().mean(), lower_bound
    return step


def main(argv=None):
    """`python -m models.latent.vae_flow ARGV`; returns the metrics written to DIR/metrics.json."""
    parser = experiment.common_parser(
        "vae_flow", "Train the VAE (784-500-500, z=40 on MNIST) with a normalizing-flow guide "
                    "by the ELBO (SGVB).",
        DIGITS_DEFAULTS, MNIST_DEFAULTS, quick_epochs=2, data="mnist")
    parser.add_argument("--flow", choices=FLOWS, default="planar",
                        help="the guide's flow: planar maps or an inverse autoregressive flow")
    parser.add_argument("--flow-length", type=zoo.positive_int, default=10,
                        help="K, the number of maps (default 10)")
    args = parser.parse_args(argv)
    flow = {"flow": args.flow, "flow_length": args.flow_length}

    def setup(args, data):
        return experiment.zhusuan_model(
            build_gen, build_q_net, data.x_dim, args.z_dim,
            elbo_step(build_gen, build_q_net, args.z_dim, hidden=args.hidden, **flow),
            settings=flow, q_kwargs=flow, latent="z", hidden=args.hidden)
    return experiment.run(args, "vae_flow", setup)


if __name__ == "__main__":
    main()
