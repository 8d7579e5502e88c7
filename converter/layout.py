"""Which memory layout each converted tensor has, and moving between layouts.

Keras convolutions work NHWC, Caffe NCHW. A 4-D Caffe blob (N, C, H, W) is normally held as
(N, H, W, C) — the *canonical* layout, and what users see at every 4-D output. Other ranks are
held exactly in Caffe's shape. A translator may hand on a 4-D blob in Caffe's own order instead
(layout ``CAFFE``) when that saves a transpose (``Permute`` followed by ``Flatten`` in SSD heads);
consumers ask for the layout they need and the transposes happen only then.
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
        caffe_axis %= self.rank
        return NHWC_AXIS[caffe_axis] if self.layout == NHWC else caffe_axis

    @property
    def keras_shape(self):
        return keras_shape(self.shape, self.layout)


def canonical(shape):
    return NHWC if len(shape) == 4 else CAFFE


def keras_shape(shape, layout):
    if layout == NHWC:
        return tuple(shape[a] for a in NHWC_ORDER)
    return tuple(shape)
