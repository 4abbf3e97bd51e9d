"""The deep latent-variable models: VAEs, IWAEs, their relatives (one model per module).

Each runs as `python -m models.latent.<name>`; see `models/zoo.py` for the shared
command line and outputs.
"""
