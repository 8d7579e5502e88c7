"""Which memory layout each converted tensor has, and moving between layouts.

Keras convolutions work NHWC, Caffe NCHW. A 4-D Caffe blob (N, C, H, W) is held as
(N, H, W, C) — the *canonical* layout, what users see at every 4-D output and layer of a Caffe
name. Other ranks are held exactly in Caffe's shape. A translator may compute a 4-D top in
Caffe's own order (layout ``CAFFE``: a Permute, a Reshape); the model then carries its NHWC view
under the layer's name, and a consumer asking for Caffe's order again gets a transpose that
TensorFlow's graph optimiser folds into the view.
"""

from dataclasses import dataclass

NHWC = "nhwc"
CAFFE = "caffe"

# Position in the NHWC tensor of each Caffe axis of a 4-D blob.
NHWC_AXIS = (0, 3, 1, 2)
# Caffe axis held at each position of the NHWC tensor.
NHWC_ORDER = (0, 2, 3, 1)


@dataclass
class Tensor:
    """A Caffe blob as a Keras tensor: its value, Caffe shape and layout."""

    value: object
    shape: tuple
    layout: str

    @property
    def rank(self):
        return len(self.shape)

    def axis(self, caffe_axis):
        """The Keras axis holding ``caffe_axis`` (which may be negative) of this blob."""
        return keras_axis(caffe_axis, self.rank, self.layout)

    @property
    def keras_shape(self):
        return keras_shape(self.shape, self.layout)


def canonical(shape):
    return NHWC if len(shape) == 4 else CAFFE


def keras_shape(shape, layout):
    if layout == NHWC:
        return tuple(shape[a] for a in NHWC_ORDER)
    return tuple(shape)


def keras_axis(caffe_axis, rank, layout):
    """The axis of a tensor of ``rank`` axes held in ``layout`` that holds ``caffe_axis`` (which
    may be negative)."""
    caffe_axis %= rank
    return NHWC_AXIS[caffe_axis] if layout == NHWC and rank == 4 else caffe_axis


def permute_dims(layout):
    """The ``keras.layers.Permute`` dims (batch left out) turning a 4-D tensor held in the other
    layout into ``layout``."""
    return tuple(NHWC_AXIS[1:]) if layout == CAFFE else tuple(NHWC_ORDER[1:])


def to_caffe_order(array):
    """A numpy array of a 4-D NHWC tensor in Caffe's (N, C, H, W) order; other ranks as they are."""
    return array.transpose(NHWC_AXIS) if array.ndim == 4 else array


def to_nhwc(array):
    """A numpy array of a 4-D Caffe (N, C, H, W) blob as the NHWC tensor; other ranks as they are."""
    return array.transpose(NHWC_ORDER) if array.ndim == 4 else array
