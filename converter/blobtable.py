"""The blob table a converted model carries, and reading any Caffe blob out of a model with it.

Keras keeps a model's layer names but not which Caffe blob each layer's output is (in-place
layers, tops named unlike their layer, names changed by :func:`~caffe2keras.naming.keras_name`).
:class:`CaffeBlobs` keeps that table in its config: an identity on the network inputs, so it sits
on every path of the model and survives ``.keras``/``.h5`` saving and sub-models cut from the
inputs. :func:`blobs` reads it and gives the Caffe blobs asked for, in Caffe's layout.
"""

import keras

from . import depth, naming
from .errors import ConversionError
from .layout import CAFFE, permute_dims
from .layers import register


@register
class CaffeBlobs(keras.layers.Layer):
    """The network inputs, unchanged. ``table`` is :meth:`caffe2keras.naming.Names.table`."""

    def __init__(self, table, **kwargs):
        super().__init__(**kwargs)
        self.table = table

    def call(self, inputs):
        return list(inputs)

    def compute_output_shape(self, input_shape):
        return list(input_shape)

    def get_config(self):
        return {**super().get_config(), "table": self.table}


def find(model):
    """The model's :class:`CaffeBlobs` layer, or None."""
    for layer in model.layers:
        if isinstance(layer, CaffeBlobs):
            return layer
    return None


def blobs(model, names):
    """A Keras model over ``model``'s inputs whose output is ``{blob: value}`` for each Caffe blob
    in ``names``, in Caffe's layout (NCHW for 4-D) and as Caffe's ``net.blobs[blob]`` holds it
    after a forward pass (the last value of a blob rewritten in place).

    Works on a model just converted and on one loaded from ``.keras`` or ``.h5``: the blob table
    travels in the model. Raises :class:`ConversionError` naming the blobs the model lacks.
    """
    table = find(model)
    if table is None:
        raise ConversionError("the model carries no Caffe blob table (was it converted by caffe2keras?)")
    where = naming.blob_locations(table.table, table.name)
    names = [names] if isinstance(names, str) else list(names)
    missing = [n for n in names if n not in where]
    if missing:
        raise ConversionError(f"the model has no Caffe blob {', '.join(map(repr, missing))}")
    by_name = {layer.name: layer for layer in model.layers}
    namer = naming.Namer()
    namer.taken.update(by_name)
    outputs = {}
    for name in names:
        layer, index = where[name]
        out = by_name[layer].output
        outs = out if isinstance(out, (list, tuple)) else [out]
        # A layer with one output gives every top (Split).
        value = outs[index] if len(outs) > 1 else outs[0]
        if len(value.shape) == 4:
            value = keras.layers.Permute(permute_dims(CAFFE), name=namer.claim(f"{layer}_nchw"))(value)
        outputs[name] = value
    return depth.call(keras.Model, model.inputs, outputs, name=namer.claim(f"{model.name}_blobs"))
