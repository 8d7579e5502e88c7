"""Caffe's shape arithmetic shared by several layer types: window geometry of convolution and
pooling, axis and parameter conventions, and the top-shape functions several types share. Each
type's own shape function lives with its spec (:mod:`caffe2keras.types`).

Shapes are tuples in Caffe order. A shape function takes the node (its ``param`` is the
LayerParameter) and the bottom shapes and returns the list of top shapes.

A dimension may be None: a size free until the model runs (``--input-shape data=1,3,?,?``).
Types registered ``any_size`` take such bottoms and carry None through their formula (a size
computed from a free one is free); they refuse with :func:`fixed_size` where they cannot (a
Slice along a free axis). Every other type needs fixed sizes, and says why when it can.
"""

import math

from .errors import ConversionError


def free(*dims):
    """Whether any of ``dims`` is free (None)."""
    return any(d is None for d in dims)


def shape_text(shape):
    """``2x4x?x?``: a shape with its free sizes, for messages."""
    return "x".join("?" if d is None else str(d) for d in shape)


def fixed_size(what, why=None):
    """The error of a layer that needs the input's height and width fixed."""
    return ConversionError(
        f"{what} needs a fixed input size{f' ({why})' if why else ''}: give --input-shape with a fixed height and "
        "width, or cut the network before this layer with --outputs"
    )


def canonical_axis(axis, rank, what="axis"):
    if not -rank <= axis < rank:
        raise ConversionError(f"{what} {axis} is out of range for a blob of {rank} axes")
    return axis % rank


def spatial_params(p, prefix, default, n=2):
    """Caffe's repeated-or-_h/_w convolution and pooling parameters (kernel, stride, pad, dilation)."""
    fields = p.DESCRIPTOR.fields_by_name
    if prefix + "_h" in fields and (p.HasField(prefix + "_h") or p.HasField(prefix + "_w")):
        return (getattr(p, prefix + "_h"), getattr(p, prefix + "_w"))
    plural = {"kernel": "kernel_size", "stride": "stride", "pad": "pad", "dilation": "dilation"}[prefix]
    value = getattr(p, plural)
    if isinstance(value, int):  # PoolingParameter's fields are scalars, ConvolutionParameter's repeated
        return (value,) * n if p.HasField(plural) else (default,) * n
    values = list(value)
    if not values:
        return (default,) * n
    if len(values) == 1:
        return (values[0],) * n
    if len(values) != n:
        raise ConversionError(f"{plural} has {len(values)} values for {n} spatial axes")
    return tuple(values)


def legacy_shape(shape, what):
    """Caffe's ``(num(), channels(), height(), width())`` of a blob: its axes padded with 1s to
    four. Caffe aborts on these accessors for a blob of more than four axes."""
    if len(shape) > 4:
        raise ConversionError(
            f"{what} reads its bottom as (num, channels, height, width); it cannot have {len(shape)} axes {list(shape)}"
        )
    return tuple(shape) + (1,) * (4 - len(shape))


def needs_4d(shape, what):
    if len(shape) != 4:
        raise ConversionError(f"{what} needs a 4-D (num, channels, height, width) bottom, got {list(shape)}")
    return shape


def same_shape(node, bottoms):
    """Element-wise types: the top has the first bottom's shape."""
    return [bottoms[0]]


def channelwise_legacy(node, bottoms):
    """Same shape; Caffe reads the channels with its legacy accessors and needs 2 to 4 axes."""
    if len(bottoms[0]) < 2:
        raise ConversionError(f"{node.type} needs a bottom with a channel axis, got {list(bottoms[0])}")
    legacy_shape(bottoms[0], node.type)
    return [bottoms[0]]


def same_4d(node, bottoms):
    """Types that keep a 4-D bottom's shape and need 4 axes."""
    return [needs_4d(bottoms[0], node.type)]


def conv_geometry(p, bottom):
    if len(bottom) != 4:
        raise ConversionError(f"only 2-D convolution is supported (bottom shape {list(bottom)})")
    kernel = spatial_params(p, "kernel", 0)
    if min(kernel) <= 0:
        raise ConversionError("kernel size must be set and positive")
    stride = spatial_params(p, "stride", 1)
    pad = spatial_params(p, "pad", 0)
    dilation = spatial_params(p, "dilation", 1)
    if min(stride) <= 0 or min(dilation) <= 0:
        raise ConversionError("stride and dilation must be positive")
    return kernel, stride, pad, dilation


def pool_ceil(p):
    """Whether pooling rounds its output size up: BVLC ``round_mode`` or the forks' ``ceil_mode``."""
    if p.HasField("ceil_mode"):
        return p.ceil_mode
    return p.round_mode == p.CEIL


def pool_geometry(p, bottom):
    """Kernel, stride, pad and output size of a Pooling layer, with Caffe's clip rule."""
    if len(bottom) != 4:
        raise ConversionError(f"Pooling needs a 4-D bottom, got {list(bottom)}")
    n, c, h, w = bottom
    if p.global_pooling:
        return (h, w), (1, 1), (0, 0), (1, 1)
    kernel = spatial_params(p, "kernel", 0)
    stride = spatial_params(p, "stride", 1)
    pad = spatial_params(p, "pad", 0)
    if min(kernel) <= 0 or min(stride) <= 0:
        raise ConversionError("pooling kernel and stride must be positive")
    for k, q in zip(kernel, pad):
        if q >= k:
            raise ConversionError(f"pad {q} must be smaller than the kernel {k}")
    rounding = math.ceil if pool_ceil(p) else math.floor
    out = []
    for size, k, s, q in zip((h, w), kernel, stride, pad):
        if size is None:
            out.append(None)
            continue
        pooled = int(rounding((size + 2 * q - k) / s)) + 1
        # Caffe drops a last window that would start inside the padding.
        if any(pad) and (pooled - 1) * s >= size + q:
            pooled -= 1
        out.append(pooled)
    return kernel, stride, pad, tuple(out)


def same_is_caffe(in_hw, kernel, stride, pad, out_hw, dilation=(1, 1)):
    """Whether TensorFlow's SAME padding places the windows exactly where Caffe's ``pad`` does,
    so the op pads internally instead of after a separate ZeroPadding2D copy.

    SAME gives ``ceil(size / stride)`` outputs and pads ``total // 2`` before, the rest after;
    when the output sizes agree and the leading pads are equal, the trailing pad is exactly the
    part of Caffe's that its windows read (e.g. 3x3 stride 1 pad 1; not 7x7 stride 2 pad 3,
    where SAME pads 2 before).
    """
    for size, k, s, p, o, d in zip(in_hw, kernel, stride, pad, out_hw, dilation):
        if size is None:  # free: at stride 1 SAME pads d * (k - 1) in all, half before, at every size
            if s != 1 or 2 * p != d * (k - 1):
                return False
            continue
        same_out = -(-size // s)
        total = max((same_out - 1) * s + d * (k - 1) + 1 - size, 0)
        if o != same_out or total // 2 != p:
            return False
    return True
