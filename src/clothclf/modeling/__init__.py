"""Models: the backbone registry (``backbones``, TF-free) and the Keras model builders (``models``)."""
