"""Serving: the :class:`~clothclf.serving.classifier.Classifier` over LiteRT runtimes (TF-free), and the
LiteRT export (``export``: TensorFlow)."""
