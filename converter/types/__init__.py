"""The Caffe layer types, one module per family, and the registry they make: each module
declares its types with :func:`caffe2keras.spec.register` (every type's top-shape function,
learned blobs and translator side by side); importing this package imports them all, so the
questions below are answered for every type.
"""

import math

from ..errors import ConversionError
from ..shapes import fixed_size, free
from ..spec import SPECS, VIEW
from . import activations, core, detection, forks, normalization, rcnn, shape_ops, vision  # noqa: F401 (they register)


def of(type_name):
    """The :class:`~caffe2keras.spec.Spec` of ``type_name``; None for a type the converter does not know."""
    return SPECS.get(type_name)


def supported_types():
    """The Caffe layer types that can be converted, sorted (the graph's own view type left out)."""
    return sorted(t for t in SPECS if t != VIEW)


def infer(node, bottom_shapes):
    """The top shapes of ``node`` (Caffe order) for its bottoms' shapes."""
    spec = of(node.type)
    if spec is None:
        raise ConversionError(f"unsupported layer type '{node.type}'")
    bottoms = [tuple(s) for s in bottom_shapes]
    if not spec.any_size and any(free(*b) for b in bottoms):
        raise fixed_size(node.type, spec.fixed_because)
    return spec.shape(node, bottoms)


def learned(node, bottom_shapes, held=None):
    """The :class:`~caffe2keras.spec.Learned` blobs of ``node``, refused when a free size is among
    their shapes."""
    spec = of(node.type)
    blobs = spec.learned(node, [tuple(s) for s in bottom_shapes], held) if spec is not None else []
    if any(b.shape is not None and free(*b.shape) for b in blobs):
        raise fixed_size(f"{node.type} over the spatial axes", "it learns one value per position of them")
    return blobs


def learned_shapes(node, bottom_shapes, held=None):
    """The shapes of :func:`learned`, as :func:`caffe2keras.weights.fit_blobs` takes them."""
    return [b.shape for b in learned(node, bottom_shapes, held)]


def learned_elements(node, bottom_shapes):
    """How many values the layer learns, over all its blobs (kernel, bias, statistics, scales),
    as the prototxt and the bottom shapes imply: what Keras allocates for it."""
    return sum(math.prod(b.shape) if b.shape is not None else 1 for b in learned(node, bottom_shapes))
