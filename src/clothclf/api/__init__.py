"""The HTTP API (``clothclf serve``): a FastAPI app over the LiteRT classifier, micro-batched, and its Ray
Serve deployment. Needs ``pip install "clothclf[api]"`` (``[ray]`` for Ray Serve); never imports TensorFlow."""
