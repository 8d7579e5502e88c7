"""Keras layers for Caffe semantics that no built-in Keras layer has, one module per family (as
:mod:`caffe2keras.types` is split); every public name is here, ``layers.X``.

Each layer is plain Keras 3: ``keras.ops`` only, config values in ``__init__``, weights in
``build``, the math in ``call`` and ``get_config`` returning what ``__init__`` takes, registered
for serialisation so converted models load with ``safe_mode=True`` after ``import caffe2keras``.
Tensors are in the converter's layout (4-D NHWC unless a layer says otherwise).
"""

from .. import _lazy
from .base import ShapePreserving, register
from .activations import (
    Power, Exp, Log, AbsVal, NegativeSlopeReLU, Threshold, Clip, Swish, GELU, HardSigmoid, HardSwish,
    UnscaledDropout,
)
from .convolution import Deconvolution, Subsample, Embed
from .pooling import CaffePooling2D, MaxPoolingWithMask, MaxUnpool
from .normalization import LRN, MVN, BatchNorm, BatchStatsNorm, Normalize, ChannelAffine, BroadcastOp
from .shape_ops import (
    SliceAxis, Crop, Reshape, Tile, Eltwise, Axpy, Reduction, ArgMax, ConstantPad, PixelShuffle, ShuffleChannel,
    Reorg,
)
from .interpolation import BilinearResize
from .boxes import greedy_nms
from .detection import PriorBox, DetectionOutput, YoloDetectionOutput, Yolov3DetectionOutput
from .rcnn import Proposal, ROIPooling, PSROIPooling

__all__ = [
    "ShapePreserving", "register", "Power", "Exp", "Log", "AbsVal", "NegativeSlopeReLU", "Threshold", "Clip",
    "Swish", "GELU", "HardSigmoid", "HardSwish", "UnscaledDropout", "Deconvolution", "Subsample", "Embed",
    "CaffePooling2D", "MaxPoolingWithMask", "MaxUnpool", "LRN", "MVN", "BatchNorm", "BatchStatsNorm",
    "Normalize", "ChannelAffine", "BroadcastOp", "SliceAxis", "Crop", "Reshape", "Tile", "Eltwise", "Axpy",
    "Reduction", "ArgMax", "ConstantPad", "PixelShuffle", "ShuffleChannel", "Reorg", "BilinearResize",
    "greedy_nms", "PriorBox", "DetectionOutput", "YoloDetectionOutput", "Yolov3DetectionOutput", "Proposal",
    "ROIPooling", "PSROIPooling",
]

# Keras may have been loaded by this package's own import: the registration it started waited for us.
_lazy.register_keras_objects(layers_complete=True)
