"""Distribution strategies for training, and the training loop several machines need.

``make_strategy`` gives the default strategy, ``MirroredStrategy`` over this machine's devices, or
``MultiWorkerMirroredStrategy`` over the machines ``TF_CONFIG`` lists. Keras 3's ``Model.fit`` fails
under the multi-worker strategy (TF 2.21 / Keras 3.15: "Attempt to convert a value (PerReplica...)"),
so :func:`fit_distributed` is that loop written out: ``strategy.run`` in a ``tf.function`` over
distributed datasets, each replica's loss divided by the global batch so the optimizer's cross-worker
sum of gradients is the gradient of the batch mean, and the same Keras callbacks driven as ``fit``
drives them. Every worker sees the same all-reduced numbers, so all of them take the same
early-stopping and learning-rate decisions and end with identical weights; a stop requested on any
worker stops all of them after the same batch.
"""

from __future__ import annotations

import hashlib

import keras
import numpy as np
import tensorflow as tf

SUM, MEAN = tf.distribute.ReduceOp.SUM, tf.distribute.ReduceOp.MEAN


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The default strategy, MirroredStrategy over every GPU (else every logical CPU device), or
    MultiWorkerMirroredStrategy over the cluster in ``TF_CONFIG`` (one local worker without it)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "multi-worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    devices = [d.name for d in tf.config.list_logical_devices("GPU")] or [
        d.name for d in tf.config.list_logical_devices("CPU")
    ]
    return tf.distribute.MirroredStrategy(devices=devices)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run: the chief, else worker 0 of a cluster without a chief."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or resolver.task_type in (None, "chief"):
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def weights_digest(model: keras.Model) -> str:
    """A short digest of every weight of ``model``: equal on workers that trained in step."""
    digest = hashlib.blake2b(digest_size=8)
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()


def _per_example(loss: keras.losses.Loss) -> keras.losses.Loss:
    """The compiled loss without its reduction: one value per example."""
    return type(loss).from_config({**loss.get_config(), "reduction": None})


def _counts(y_true, y_pred, per_example_loss) -> tf.Tensor:
    """(sum of losses, correct answers, examples) of one replica's batch."""
    correct = tf.equal(tf.argmax(y_pred, -1), tf.argmax(y_true, -1))
    n = tf.cast(tf.shape(y_true)[0], tf.float32)
    return tf.stack([tf.reduce_sum(per_example_loss), tf.reduce_sum(tf.cast(correct, tf.float32)), n])


def _train_step(model: keras.Model, strategy: tf.distribute.Strategy, loss: keras.losses.Loss):
    """A compiled step: one batch on every replica; returns (loss sum, correct, examples, stop votes)."""

    def replica_step(batch, stop):
        x, y, *weights = batch
        examples = tf.distribute.get_replica_context().all_reduce(SUM, tf.cast(tf.shape(y)[0], tf.float32))
        with tf.GradientTape() as tape:
            probs = model(x, training=True)
            per_example = loss(y, probs) * (weights[0] if weights else 1.0)
            batch_loss = tf.reduce_sum(per_example) / examples
            if model.losses:
                batch_loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
        gradients = tape.gradient(batch_loss, model.trainable_variables)
        model.optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return tf.concat([_counts(y, probs, per_example), [stop]], 0)

    @tf.function(reduce_retracing=True)  # the last batch may be smaller
    def step(batch, stop):
        return strategy.reduce(SUM, strategy.run(replica_step, args=(batch, stop)), axis=None)

    return step


def _eval_step(model: keras.Model, strategy: tf.distribute.Strategy, loss: keras.losses.Loss):
    """A compiled step: one validation batch on every replica; returns (loss sum, correct, examples)."""

    def replica_step(batch):
        x, y, *_ = batch
        probs = model(x, training=False)
        return _counts(y, probs, loss(y, probs))

    @tf.function(reduce_retracing=True)  # the last batch may be smaller
    def step(batch):
        return strategy.reduce(SUM, strategy.run(replica_step, args=(batch,)), axis=None)

    return step


def _vote(strategy: tf.distribute.Strategy):
    """A compiled collective: the sum over replicas of a flag (every worker must call it)."""

    @tf.function
    def vote(flag):
        return strategy.reduce(SUM, strategy.run(tf.identity, args=(flag,)), axis=None)

    return vote


def _batch_norm_statistics(layer: keras.layers.Layer) -> list[keras.Variable]:
    """The moving means and variances of every batch-norm layer in ``layer``, nested models included."""
    if isinstance(layer, keras.layers.BatchNormalization):
        return [layer.moving_mean, layer.moving_variance]
    return [v for inner in getattr(layer, "layers", []) for v in _batch_norm_statistics(inner)]


def _averager(strategy: tf.distribute.Strategy, variables: list[keras.Variable]):
    """A compiled collective that sets ``variables`` to their mean over all replicas.

    Each worker's batch-norm layers average the statistics of its own share of the batches; the
    moving averages are linear in them, so averaging the workers' values once per epoch gives every
    worker the moving statistics of all the batches (as if they had been averaged at every step)."""

    sizes = [int(np.prod(v.shape)) for v in variables]

    @tf.function
    def average():
        flat = strategy.run(lambda: tf.concat([tf.reshape(v.value, [-1]) for v in variables], 0))
        means = tf.split(strategy.reduce(MEAN, flat, axis=None), sizes)
        for variable, mean in zip(variables, means):
            variable.assign(tf.reshape(mean, variable.shape))

    return average


def _logs(totals: np.ndarray, prefix: str = "") -> dict[str, float]:
    loss_sum, correct, examples = totals[:3]
    examples = max(float(examples), 1.0)
    return {f"{prefix}loss": float(loss_sum) / examples, f"{prefix}accuracy": float(correct) / examples}


def _train_epoch(model: keras.Model, step, batches, hooks: keras.callbacks.CallbackList) -> np.ndarray:
    """One pass over the distributed training batches; returns (loss sum, correct, examples).

    A stop asked on one worker (``model.stop_training``) travels with the next batch, after which
    every worker leaves the loop together."""
    totals = np.zeros(3)
    for index, batch in enumerate(batches):
        hooks.on_train_batch_begin(index)
        out = step(batch, tf.constant(float(model.stop_training))).numpy()
        totals += out[:3]
        hooks.on_train_batch_end(index, _logs(totals))
        if out[3] > 0:
            break
    return totals


def fit_distributed(
    model: keras.Model,
    strategy: tf.distribute.Strategy,
    train_data: tf.data.Dataset,
    val_data: tf.data.Dataset,
    epochs: int,
    callbacks: list[keras.callbacks.Callback],
    verbose: int = 0,
) -> bool:
    """``model.fit(train_data, validation_data=val_data, epochs=..., callbacks=...)`` under ``strategy``;
    returns whether a stop asked on some worker ended it (early stopping does not count).

    ``model`` is compiled in ``strategy.scope()``; the datasets yield global batches of
    ``(x, one-hot y[, sample weight])``. Logs hold ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``;
    ``verbose`` shows Keras' progress bar as ``fit`` does.
    """
    loss = _per_example(model.loss)
    train_step, eval_step = _train_step(model, strategy, loss), _eval_step(model, strategy, loss)
    vote, statistics = _vote(strategy), _batch_norm_statistics(model)
    average_statistics = _averager(strategy, statistics)
    train_batches = strategy.experimental_distribute_dataset(train_data)
    val_batches = strategy.experimental_distribute_dataset(val_data)
    steps = int(train_data.cardinality())
    hooks = keras.callbacks.CallbackList(
        callbacks, add_progbar=verbose != 0, model=model, epochs=epochs, steps=steps, verbose=verbose
    )
    model.stop_training, requested, logs = False, False, {}
    hooks.on_train_begin()
    for epoch in range(epochs):
        hooks.on_epoch_begin(epoch)
        totals = _train_epoch(model, train_step, train_batches, hooks)
        # A stop asked after the last batch reaches the other workers here.
        requested = model.stop_training = bool(vote(tf.constant(float(model.stop_training))) > 0)
        if statistics:
            average_statistics()
        val_totals = sum((eval_step(batch).numpy() for batch in val_batches), np.zeros(3))
        logs = {**_logs(totals), **_logs(val_totals, "val_")}
        hooks.on_epoch_end(epoch, logs)  # early stopping decides alike everywhere: same numbers
        if model.stop_training:
            break
    hooks.on_train_end(logs)
    return requested


def local_copy(model: keras.Model) -> keras.Model:
    """The same model and weights outside any strategy: what the chief evaluates, saves and converts alone."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy
