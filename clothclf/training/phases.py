"""Names of the phases of a training run that fit a model epoch by epoch (no TensorFlow: the job worker
and the pages read them): the head on cached features, then fine-tuning the top of the backbone, or
the whole network for a backbone trained from scratch."""

HEAD = "head"
FINE_TUNE = "fine_tune"
TRAIN = "train"
#: Phases that fit a model epoch by epoch (so they have epochs, batches and a pace to estimate from).
FIT_PHASES = frozenset({HEAD, FINE_TUNE, TRAIN})
