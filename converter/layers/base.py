"""What every custom layer shares: the serialisation registration and the shape-preserving base.

Every class is registered under ``caffe2keras>ClassName``, the name saved models carry: a class
may move between modules of this package, but its name is what ``load_model`` looks up.
"""

import keras

register = keras.saving.register_keras_serializable(package="caffe2keras")


class ShapePreserving(keras.layers.Layer):
    """Base for layers whose output has the input's shape."""

    def compute_output_shape(self, input_shape):
        return input_shape
