"""Training: the training loop, its callbacks, temperature calibration and distribution strategies.

Importing this package is light; ``loop``, ``callbacks`` and ``distributed`` import TensorFlow."""
