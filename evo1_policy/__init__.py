"""Evo-1 vision-language-action policy: model, sampler, normalisation, checkpoints, inference API."""

__version__ = "0.1.0"
