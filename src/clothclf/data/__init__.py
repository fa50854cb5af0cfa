"""Data: image decoding, folder datasets and splits, safe zip extraction, the dataset download (TF-free);
the tf.data pipeline and the feature cache (``pipeline``, ``features``: TensorFlow)."""
