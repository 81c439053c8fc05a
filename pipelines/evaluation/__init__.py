"""Evaluation: rate-distortion (`rd`, plots in `rdplot`), classical codec baselines
(`codecs`), quality metrics (`quality`), VAE likelihoods (`nll`) and their pictures
(`vae_pictures`).

May import the data, jobs, training and compression wings.
"""
