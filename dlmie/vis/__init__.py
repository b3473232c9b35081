"""Seeing inside a trained network: saliency, visualization by optimization, inversion, activations, sanity checks."""
