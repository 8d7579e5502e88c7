"""The library entry points: prototxt (+ caffemodel) → Keras model."""

from . import caffemodel, graph, prototxt
from .errors import ConversionError
from .translate import build_model


def build(prototxt_path, caffemodel_path=None, input_shapes=None, outputs=None):
    """Convert and return a :class:`~caffe2keras.translate.Conversion` (model, graph, tensors)."""
    netdef = prototxt.load(prototxt_path)
    g = graph.build(netdef, input_shapes=input_shapes, outputs=outputs)
    weights = caffemodel.load(caffemodel_path) if caffemodel_path is not None else None
    return build_model(g, weights)


def convert(prototxt_path, caffemodel=None, input_shapes=None, outputs=None):
    """Convert a Caffe model into a Keras 3 model.

    ``input_shapes`` maps input blob names to Caffe (N, C, H, W) shapes overriding those the
    prototxt declares; without ``caffemodel`` the weights are Keras' initialisers. Inputs and
    4-D outputs are NHWC. Raises :class:`ConversionError` for anything wrong with the input files.
    """
    return build(prototxt_path, caffemodel, input_shapes=input_shapes, outputs=outputs).model


__all__ = ["build", "convert", "ConversionError"]
