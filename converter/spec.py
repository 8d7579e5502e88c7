"""What the converter knows about one Caffe layer type: the :class:`Spec` record, and
:func:`register`, with which each family module of :mod:`caffe2keras.types` declares its types.

A spec holds the type's top-shape function (Caffe's ``Reshape()``), the blobs it learns (names
and shapes as functions of its parameters and bottom shapes: what a caffemodel holds for it and
what Keras allocates) and its translator into Keras. :mod:`caffe2keras.types` imports every family
module and answers for the whole registry; the graph, ``inspect``, the weight checks, the
translation and the tests' oracle ask it, so they cannot disagree.
"""

from dataclasses import dataclass

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
