"""Normalizing flows of the model zoo: `python -m models.flows.<name>`.

- `nice`, `realnvp`, `glow`, `maf`: dequantized MNIST / Fashion-MNIST, in
  bits/dim and in nats in logit space (as Papamakarios et al. 2017);
  `maf` also on a UCI table (`--data power-plant`).
- `vflow`: a flow on x augmented with z (Chen et al. 2020), trained by the
  variational bound with a guide q(z | x), scored by importance sampling.
- `toy2d`: 2-D densities (two moons, rings, checkerboard) and their pictures.
"""
