"""Energy-based models on binarized MNIST (one model per module): `bm`, `rbm`, `dbn`, `dbm`.

Each runs as `python -m models.energy.<name>`; see `models/zoo.py` for the shared
command line and outputs. They are `ppl.EnergyModel`s learnt with
`inference.energy.ContrastiveDivergence` and scored with its AIS.
"""
