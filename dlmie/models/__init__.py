"""Models: classifiers built from dlmie.layers (convnet) and the loaders that give them by name."""
