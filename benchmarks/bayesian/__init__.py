"""The parts of `benchmarks/bayesian_zoo.py`, one module per model of `models/bayesian`.

Each part module has `run(quick, root) -> list of row dicts` (see the driver's docstring
for the row keys): ours beside the published number and the peer library's, same run.
"""
