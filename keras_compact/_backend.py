"""What differs between Keras backends, in one place.

Everything else in `keras_compact` that trains is written in `keras.ops`; the few
places that must know the backend ask here.
"""

import contextlib

import keras


def backend():
    """The Keras backend's name: "tensorflow", "jax", "torch" or "numpy"."""
    return keras.backend.backend()


def require_tensorflow(what, instead):
    """Raises a `RuntimeError` unless Keras runs on TensorFlow, saying what to do instead.

    Args:
        what: what needs TensorFlow, e.g. "ProjectionLayer with ragged feature ids".
        instead: one sentence on what works on the other backends.
    """
    if backend() != "tensorflow":
        raise RuntimeError(
            f"{what} needs the TensorFlow backend (KERAS_BACKEND=tensorflow); this process runs Keras on "
            f"{backend()!r}. {instead}"
        )


def scale_loss_for_replicas(loss):
    """`loss / replicas` inside a `tf.distribute` strategy's replica, else `loss`.

    A custom `compute_loss` returns this: Keras sums the replicas' gradients and
    un-scales the loss it reports (as `keras.losses.Loss` scales inside
    `CompileLoss`). JAX's `keras.distribution` averages the global batch itself.
    """
    if backend() == "tensorflow":
        import tensorflow as tf

        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if replicas > 1:
            loss = loss * keras.ops.cast(1.0 / replicas, loss.dtype)
    return loss


def float64_scope():
    """A context in which `keras.ops` computes in float64 on every backend.

    JAX keeps 64-bit types off unless asked (`jax_enable_x64`); this turns them on
    only for the ops traced inside it, and leaves the user's setting alone.
    The other backends compute float64 anyway.
    """
    if backend() == "jax":
        import jax

        return jax.enable_x64(True)
    return contextlib.nullcontext()


def fused(function):
    """`function`, compiled as one XLA program.

    For a function of `keras.ops` arrays, without state or random draws, that
    makes many small passes over a tensor (a search loop). TensorFlow runs each
    op on its own unless the model is compiled with `jit_compile=True`, which it
    is not by default on a CPU; XLA fuses the passes into one. JAX compiles a training
    step whole already; `jax.jit` also compiles the function once when a layer
    is called eagerly, instead of tracing its loop at every call.
    """
    if backend() == "jax":
        import jax

        return jax.jit(function)
    if backend() != "tensorflow":
        return function
    import tensorflow as tf

    return tf.function(function, jit_compile=True)


def inference(model):
    """`feed -> model(feed, training=False)`; on JAX compiled as one XLA program of the model's weights as
    they are now (`stateless_call`), instead of one compilation per operation of an eager call.

    For a model called many times on batches of one shape (export's verification). A model whose call
    JAX cannot trace is called eagerly, as on the other backends.
    """
    eager = lambda feed: model(feed, training=False)  # noqa: E731
    if backend() != "jax":
        return eager
    import jax

    trainable = [variable.value for variable in model.trainable_variables]
    non_trainable = [variable.value for variable in model.non_trainable_variables]
    compiled = jax.jit(lambda trainable, non_trainable, feed: model.stateless_call(
        trainable, non_trainable, feed, training=False)[0])

    def call(feed):
        try:
            return compiled(trainable, non_trainable, feed)
        except (jax.errors.JAXTypeError, TypeError, ValueError):  # not traceable: as the other backends do
            return eager(feed)

    return call


def cond(pred, true_fn, false_fn):
    """`keras.ops.cond`, but a predicate known now (eager code) runs only its branch here.

    JAX's `lax.cond` traces and compiles both branches at every eager call;
    TensorFlow's eager `tf.cond` already runs one, and traced code keeps the op.
    """
    if backend() == "jax":
        import jax

        if not isinstance(pred, jax.core.Tracer):
            return true_fn() if bool(pred) else false_fn()
    return keras.ops.cond(pred, true_fn, false_fn)


def in_tf_data(inputs):
    """True when Keras runs on another backend and `inputs` are TensorFlow graph tensors.

    That is a `tf.data` pipeline (`dataset.map(layer)`): the TensorFlow-only
    layers run there on every backend, as Keras's preprocessing layers do.
    """
    if backend() == "tensorflow":
        return False
    import tensorflow as tf

    values = inputs if isinstance(inputs, (list, tuple)) else [inputs]
    return not tf.executing_eagerly() and all(isinstance(v, (tf.Tensor, tf.RaggedTensor)) for v in values)


def call_in_tf_data(layer, inputs, **kwargs):
    """`layer.call(inputs)` with TensorFlow ops, building the layer first; for `in_tf_data` inputs."""
    if not layer.built:
        shapes = [tuple(v.shape) for v in inputs] if isinstance(inputs, (list, tuple)) else tuple(inputs.shape)
        layer.build(shapes)
        layer.built = True
    return layer.call(inputs, **kwargs)


class TensorFlowOpsLayer:
    """Mixin for a Keras layer made of TensorFlow ops (strings, ragged tensors).

    On the TensorFlow backend it is an ordinary layer. On another backend it runs
    inside a `tf.data` pipeline, and anywhere else raises a `RuntimeError` naming
    `needs_tensorflow = (what, instead)`, a class attribute of the layer.
    """

    needs_tensorflow = ("This layer", "")

    def __call__(self, inputs, *args, **kwargs):
        if in_tf_data(inputs):
            return call_in_tf_data(self, inputs)
        if backend() != "tensorflow":
            require_tensorflow(*self.needs_tensorflow)
        return super().__call__(inputs, *args, **kwargs)
