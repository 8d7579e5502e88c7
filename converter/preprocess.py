"""Caffe's input preprocessing folded into the converted model, on request.

Caffe networks expect what Caffe's Transformer made of an image: pixels in BGR order, a mean
(per channel, or a whole mean image cropped like the image) subtracted, then a scale applied:
``y = (x[BGR] - mean) * scale``. :class:`CaffePreprocess` does exactly that as the model's first
layer (built with the model: ``api.build(..., preprocessing={...})`` takes :func:`make_layer`'s
options), so the model takes plain pixels; its config records what it does, which is how
``caffe2keras predict`` knows not to do it again.
"""

import math
from pathlib import Path

import numpy as np
from keras import ops

from . import filetype
from .errors import ConversionError
from .layout import to_nhwc
from .layers import ShapePreserving, register


@register
class CaffePreprocess(ShapePreserving):
    """``y = ((x[..., ::-1] if rgb_input else x) - mean) * scale`` on NHWC pixels.

    ``mean`` is a per-channel list in Caffe's (BGR) channel order; a mean image instead lives in
    the non-trainable weight ``mean_image`` of shape ``mean_shape`` (H, W, C), already cropped to
    the input like Caffe crops it. ``mean_source`` names where it came from, for people reading
    the config.
    """

    def __init__(self, mean=None, mean_shape=None, scale=1.0, rgb_input=False, mean_source=None, **kwargs):
        super().__init__(**kwargs)
        self.mean = None if mean is None else [float(m) for m in mean]
        self.mean_shape = None if mean_shape is None else tuple(int(d) for d in mean_shape)
        self.scale = float(scale)
        self.rgb_input = bool(rgb_input)
        self.mean_source = mean_source

    def build(self, input_shape):
        if self.mean_shape is not None:
            self.mean_image = self.add_weight(
                name="mean_image", shape=self.mean_shape, initializer="zeros", trainable=False
            )

    def call(self, x):
        if self.rgb_input:
            x = ops.flip(x, axis=-1)
        if self.mean is not None:
            x = x - ops.convert_to_tensor(np.asarray(self.mean, dtype="float32"), dtype=x.dtype)
        elif self.mean_shape is not None:
            x = x - ops.cast(self.mean_image, x.dtype)
        if self.scale != 1.0:
            x = x * ops.cast(self.scale, x.dtype)
        return x

    def get_config(self):
        return {
            **super().get_config(),
            "mean": self.mean,
            "mean_shape": self.mean_shape,
            "scale": self.scale,
            "rgb_input": self.rgb_input,
            "mean_source": self.mean_source,
        }


def parse_mean(text):
    """``--mean``: ``B,G,R`` numbers (or one number) → list, else a path to a ``.binaryproto``
    or ``.npy`` mean image → (C, H, W) array."""
    parts = [p.strip() for p in text.split(",")]
    try:
        return [float(p) for p in parts]
    except ValueError:
        pass
    return load_mean_image(text)


def load_mean_image(path):
    """A mean image as Caffe stores it: a BlobProto (``.binaryproto``, legacy num/channels/
    height/width or ``shape``) or a NumPy ``.npy`` array, returned as (C, H, W): float32 from a
    BlobProto, a read-only map of a ``.npy`` file (only the crop the input needs is ever read)."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError("no such mean file (expected B,G,R values or a .binaryproto/.npy mean image)", file=path)
    if path.suffix.lower() == ".npy":
        array = _map_npy(path)
    else:
        from .schema import caffe_pb2

        problem = filetype.wrong_file(path, "mean file")
        if problem:
            raise ConversionError(problem, file=path)

        blob = caffe_pb2.BlobProto()
        try:
            blob.ParseFromString(path.read_bytes())
        except Exception as err:  # protobuf's DecodeError: the file is not a BlobProto
            raise ConversionError(f"is not a Caffe mean .binaryproto ({err})", file=path) from None
        dims = list(blob.shape.dim) or [blob.num, blob.channels, blob.height, blob.width]
        data = np.asarray(blob.data if len(blob.data) else blob.double_data, dtype=np.float32)
        if any(d <= 0 for d in dims) or math.prod(dims) != data.size:  # exact: absurd dims overflow int64
            raise ConversionError(f"mean blob of shape {dims} holds {data.size} values", file=path)
        array = data.reshape(dims)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise ConversionError(f"a mean image must be (C, H, W), this one is {list(array.shape)}", file=path)
    return array


def _map_npy(path):
    """A ``.npy`` array as a read-only map of the file, once its header has been checked against
    the file: a header declaring more bytes than the file holds is refused before anything is
    allocated."""
    formats = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            if version not in formats:
                raise ValueError(f"format version {version[0]}.{version[1]}")
            shape, _, dtype = formats[version](f)
        except ValueError as err:
            raise ConversionError(f"is not a NumPy array file ({err})", file=path) from None
        start = f.tell()
    if dtype.kind not in "fiu":
        raise ConversionError(f"holds an array of {dtype}, not numbers", file=path)
    declared, held = math.prod(shape) * dtype.itemsize, path.stat().st_size - start
    if declared > held:
        raise ConversionError(f"declares a {dtype} array of shape {list(shape)} ({declared:,} bytes) but holds "
                              f"{held:,} bytes", file=path)
    if not declared:
        raise ConversionError(f"holds an empty array of shape {list(shape)}", file=path)
    return np.load(path, mmap_mode="r", allow_pickle=False)


def centre_crop_mean(mean, height, width, source=None):
    """Crop a (C, H, W) mean image to the input size like Caffe's test-phase Transformer crops
    image and mean together (offsets ``(H - h) // 2``, ``(W - w) // 2``); → (h, w, C)."""
    _, mh, mw = mean.shape
    if mh < height or mw < width:
        raise ConversionError(
            f"the mean image is {mh}x{mw}, smaller than the {height}x{width} input; "
            f"give per-channel values instead (--mean {_channel_means(mean)})",
            file=source,
        )
    top, left = (mh - height) // 2, (mw - width) // 2
    crop = mean[None, :, top : top + height, left : left + width]
    return np.ascontiguousarray(to_nhwc(crop)[0], dtype=np.float32)


def _channel_means(mean):
    return ",".join(f"{v:.3f}" for v in mean.mean(axis=(1, 2)))


def make_layer(input_shape, mean=None, scale=1.0, rgb_input=False, mean_source=None, name=None):
    """The :class:`CaffePreprocess` for a model input of Keras shape (N, H, W, C)."""
    if len(input_shape) != 4:
        raise ConversionError(f"preprocessing needs an image input (N, H, W, C), the model's is {list(input_shape)}")
    _, height, width, channels = input_shape
    if rgb_input and channels != 3:
        raise ConversionError(f"--rgb-input needs a 3-channel input, the model's has {channels}")
    kwargs = {"scale": scale, "rgb_input": rgb_input, "mean_source": mean_source}
    image = None
    if isinstance(mean, np.ndarray):
        if height is None or width is None:
            raise ConversionError("a mean image is cropped to the input's size, which is free here: give per-channel "
                                  f"values (--mean {_channel_means(mean)}) or a fixed "
                                  "--input-shape", file=mean_source)
        if mean.shape[0] != channels:
            raise ConversionError(f"the mean image has {mean.shape[0]} channels, the input {channels}", file=mean_source)
        image = centre_crop_mean(mean, height, width, source=mean_source)
        kwargs["mean_shape"] = image.shape
    elif mean is not None:
        if len(mean) not in (1, channels):
            raise ConversionError(f"--mean has {len(mean)} values for an input of {channels} channels")
        kwargs["mean"] = list(mean) * (channels // len(mean))
    layer = CaffePreprocess(name=name, **kwargs)
    layer.build(tuple(input_shape))
    if image is not None:
        layer.mean_image.assign(image)
    return layer


def find_layer(model):
    """The model's :class:`CaffePreprocess`, or None when it takes Caffe's input as is."""
    for layer in model.layers:
        if isinstance(layer, CaffePreprocess):
            return layer
    return None


def find(model):
    """The model's :class:`CaffePreprocess` config, or None."""
    layer = find_layer(model)
    return layer.get_config() if layer is not None else None
