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
TRUST = "trust"
DONE = "done"
#: Phases that fit a model epoch by epoch (so they have epochs, batches and a pace to estimate from).
FIT_PHASES = frozenset({HEAD, FINE_TUNE, TRAIN})
