"""What every custom layer shares: the serialisation registration, the shape-preserving base, and
running a long op-by-op computation as one graph when called eagerly.

Every class is registered under ``caffe2keras>ClassName``, the name saved models carry: a class
may move between modules of this package, but its name is what ``load_model`` looks up.
"""

import weakref

import keras

register = keras.saving.register_keras_serializable(package="caffe2keras")


class ShapePreserving(keras.layers.Layer):
    """Base for layers whose output has the input's shape."""

    def compute_output_shape(self, input_shape):
        return input_shape


_traced = weakref.WeakKeyDictionary()  # layer -> its tf.function, kept outside it: no saved format holds it


def traced_when_eager(layer, method, *args):
    """``method(layer, *args)``; on TensorFlow called eagerly (``model(x)``), through a
    ``tf.function`` of it kept per layer. Eagerly every op is dispatched from Python, tens of
    microseconds each: a loop of a few hundred small ops (NMS) costs tens of milliseconds that its
    graph does not. The graph is the one compiled calls (predict, tf.function, exports) trace
    anyway; other backends and symbolic calls run ``method`` as it is."""
    if keras.backend.backend() != "tensorflow":
        return method(layer, *args)
    import tensorflow as tf

    if not tf.executing_eagerly():
        return method(layer, *args)
    if layer not in _traced:
        ref = weakref.ref(layer)  # a strong one in the value would keep the key alive
        _traced[layer] = tf.function(lambda *a: method(ref(), *a), reduce_retracing=True, autograph=False)
    return _traced[layer](*args)
