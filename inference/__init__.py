"""Inference for `ppl` models: variational objectives, importance sampling, MCMC."""
from inference.model import LogJoint

__all__ = ["LogJoint"]
