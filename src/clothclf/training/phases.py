"""Names of the phases of a training run, as progress events and job statuses report them (no
TensorFlow: the job worker and the pages read them).

The fit phases train epoch by epoch: the head on cached features, then fine-tuning the top of the
backbone, or the whole network for a backbone trained from scratch. The others are steps around them.
"""

STARTING = "starting"
FEATURES = "features"
TEACHER = "teacher"
HEAD = "head"
FINE_TUNE = "fine_tune"
TRAIN = "train"
EVALUATING = "evaluating"
SAVING = "saving"
#: A LiteRT conversion (the extractor's before head training, the model's while saving): nothing to
#: count, so its progress is its elapsed time against an estimate from the model's size.
CONVERTING = "converting"
TRUST = "trust"
DONE = "done"
#: Phases that fit a model epoch by epoch (so they have epochs, batches and a pace to estimate from).
FIT_PHASES = frozenset({HEAD, FINE_TUNE, TRAIN})
#: How progress names the photos of each split it counts.
SPLIT_PHOTOS = {"train": "training photos", "validation": "validation photos", "test": "test photos"}
