"""Implicit models: GANs whose generator is a BayesianNet with a latent node z and a
deterministic output node x, trained adversarially (`inference.AdversarialTrainer`).

Each runs as `python -m models.gan.<name>` (`gan`, `dcgan`, `wgan`, `cgan`, `triple_gan`);
see `models/zoo.py` for the shared command line and outputs, `models.gan.common` for
what the GANs add to it, and `models.gan.metrics` for the sample-quality metrics.
"""
