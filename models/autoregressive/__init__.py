"""Autoregressive models (the seeds' lecture): FVSBN, NADE, RNADE, MADE, PixelCNN, WaveNet.

Each is `python -m models.autoregressive.<name>` (the zoo convention, `models/zoo.py`)
and a `BayesianNet` with one `ppl.distributions.Autoregressive` node.
"""
