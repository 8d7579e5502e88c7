"""The registry of Caffe layer types: one :class:`Spec` per type, everything the converter knows
about it.

A spec holds the type's top-shape function (Caffe's ``Reshape()``), the blobs it learns (names
and shapes as functions of its parameters and bottom shapes: what a caffemodel holds for it and
what Keras allocates) and its translator into Keras. Each family module of :mod:`caffe2keras.types`
registers its types with :func:`register`, once; the graph, ``inspect``, the weight checks, the
translation and the tests' oracle all read them from here, so they cannot disagree.
"""

import importlib
import math
import pkgutil
from dataclasses import dataclass

from .errors import ConversionError
from .shapes import fixed_size, free

SPECS = {}

# Not a Caffe type: a blob sharing memory with one a layer wrote in place, seen anew (graph._wire).
# Bottoms: the written blob, and the blob's previous version (for its shape).
VIEW = "(view)"


@dataclass(frozen=True)
class Learned:
    """One blob a layer learns: Caffe's name for it and its shape. A shape of None is a blob of
    any shape that may be absent (BatchNorm's scale factor, which old caffemodels lack)."""

    name: str
    shape: tuple


def learns_nothing(node, bottoms, held=None):
    return []


@dataclass(frozen=True)
class Spec:
    """What the converter knows about one Caffe type.

    ``shape(node, bottom_shapes)`` gives the top shapes (Caffe order); ``learned(node,
    bottom_shapes, held)`` the :class:`Learned` blobs in Caffe's order (``held``: how many blobs
    the caffemodel holds, for types whose forks disagree); ``translate(ctx, node, inputs)`` the
    Keras tensors of the tops (see :mod:`caffe2keras.translate`). ``any_size`` types take free
    (None) sizes; ``fixed_because`` says why another type needs fixed ones.
    """

    type: str
    shape: object
    translate: object
    learned: object = learns_nothing
    any_size: bool = False
    fixed_because: str = None


def register(*types, shape, learned=learns_nothing, any_size=False, fixed_because=None):
    """Register the decorated translator, with ``shape`` and ``learned``, as the spec of each of
    ``types``. A type is registered once."""

    def register_translator(fn):
        for t in types:
            if t in SPECS:
                raise RuntimeError(f"internal: Caffe type {t} is registered twice")
            SPECS[t] = Spec(t, shape, fn, learned, any_size, fixed_because)
        return fn

    return register_translator


def load():
    """Every spec: importing each module of :mod:`caffe2keras.types` registers its types, so the
    registry cannot fall behind the package."""
    from . import types

    for module in pkgutil.iter_modules(types.__path__):
        importlib.import_module(f"{types.__name__}.{module.name}")
    return SPECS


def of(type_name):
    """The spec of ``type_name``; None for a type the converter does not know."""
    return load().get(type_name)


def supported_types():
    """The Caffe layer types that can be converted, sorted (the graph's own view type left out)."""
    return sorted(t for t in load() if t != VIEW)


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
    """The :class:`Learned` blobs of ``node``, refused when a free size is among their shapes."""
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
