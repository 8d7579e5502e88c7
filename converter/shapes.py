"""Output shapes, one function per Caffe layer type, each with Caffe's own formula.

Shapes are tuples in Caffe order. A shape function takes the node (its ``param`` is the
LayerParameter) and the bottom shapes and returns the list of top shapes.

A dimension may be None: a size free until the model runs (``--input-shape data=1,3,?,?``).
Types registered with ``any_size`` take such bottoms and carry None through their formula (a
size computed from a free one is free); they refuse with :func:`fixed_size` where they cannot
(a Slice along a free axis). Every other type needs fixed sizes, and says why when it can.
"""

import math
from dataclasses import dataclass

import numpy as np

from .errors import ConversionError
from .prototxt import python_layer_params

SHAPES = {}
# Types whose shape function, and translator, take free (None) dimensions.
ANY_SIZE = set()
# Why a type needs fixed sizes, where there is more to say than that it does.
FIXED_BECAUSE = {}

# Types whose single top has the shape of their first bottom.
ELEMENTWISE = [
    "ReLU", "PReLU", "ELU", "Sigmoid", "TanH", "AbsVal", "BNLL", "Power", "Exp", "Log", "Threshold",
    "Clip", "Swish", "Dropout", "Softmax", "Scale", "Bias",
    "ReLU6", "HardSigmoid", "HardSwish", "GELU", "Mish",
]


def shape(*types, any_size=False, fixed_because=None):
    def register(fn):
        for t in types:
            SHAPES[t] = fn
            if any_size:
                ANY_SIZE.add(t)
            if fixed_because:
                FIXED_BECAUSE[t] = fixed_because
        return fn

    return register


def infer(node, bottom_shapes):
    fn = SHAPES.get(node.type)
    if fn is None:
        raise ConversionError(f"unsupported layer type '{node.type}'")
    bottoms = [tuple(s) for s in bottom_shapes]
    if node.type not in ANY_SIZE and any(free(*b) for b in bottoms):
        raise fixed_size(node.type, FIXED_BECAUSE.get(node.type))
    return fn(node, bottoms)


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


@shape(*ELEMENTWISE, any_size=True)
def shape_elementwise(node, bottoms):
    return [bottoms[0]]


@shape("BatchNorm", any_size=True)
def shape_batch_norm(node, bottoms):
    if len(bottoms[0]) < 2:
        raise ConversionError(f"BatchNorm needs a bottom with a channel axis, got {list(bottoms[0])}")
    return [bottoms[0]]


@shape("PReLU", "Normalize", any_size=True)
def shape_channelwise_legacy(node, bottoms):
    """Same shape; Caffe reads the channels with its legacy accessors and needs 2 to 4 axes."""
    if len(bottoms[0]) < 2:
        raise ConversionError(f"{node.type} needs a bottom with a channel axis, got {list(bottoms[0])}")
    legacy_shape(bottoms[0], node.type)
    return [bottoms[0]]


@shape("MVN", any_size=True)
def shape_mvn(node, bottoms):
    """MVN reshapes its top to (num, channels, height, width): 4-D whatever the bottom's rank."""
    return [legacy_shape(bottoms[0], "MVN")]


@shape("LRN", "BN", "ShuffleChannel", any_size=True)
def shape_same_4d(node, bottoms):
    if node.type == "ShuffleChannel" and node.param.shuffle_channel_param.group < 1:
        raise ConversionError("ShuffleChannel group must be positive")
    return [needs_4d(bottoms[0], node.type)]


# Not a Caffe type: a blob sharing memory with one a layer wrote in place, seen anew (graph._wire).
# Bottoms: the written blob, and the blob's previous version (for its shape).
VIEW = "(view)"


@shape(VIEW, any_size=True)
def shape_view(node, bottoms):
    return [bottoms[1]]


@shape("Eltwise", any_size=True)
def shape_eltwise(node, bottoms):
    for b in bottoms[1:]:
        if b != bottoms[0]:
            raise ConversionError(f"Eltwise bottoms differ in shape: {list(bottoms[0])} and {list(b)}")
    return [bottoms[0]]


@shape("Split", any_size=True)
def shape_split(node, bottoms):
    return [bottoms[0]] * len(node.param.top)


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


@shape("Convolution", "ConvolutionDepthwise", "DepthwiseConvolution", any_size=True)
def shape_convolution(node, bottoms):
    p = node.param.convolution_param
    kernel, stride, pad, dilation = conv_geometry(p, bottoms[0])
    n, c, h, w = bottoms[0]
    out = [n, p.num_output]
    for size, k, s, q, d in zip((h, w), kernel, stride, pad, dilation):
        extent = d * (k - 1) + 1
        out.append(None if size is None else (size + 2 * q - extent) // s + 1)
    return [tuple(out)]


@shape("Deconvolution", any_size=True)
def shape_deconvolution(node, bottoms):
    p = node.param.convolution_param
    kernel, stride, pad, dilation = conv_geometry(p, bottoms[0])
    n, c, h, w = bottoms[0]
    out = [n, p.num_output]
    for size, k, s, q, d in zip((h, w), kernel, stride, pad, dilation):
        out.append(None if size is None else s * (size - 1) + d * (k - 1) + 1 - 2 * q)
    return [tuple(out)]


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


@shape("Pooling", any_size=True)
def shape_pooling(node, bottoms):
    _, _, _, out = pool_geometry(node.param.pooling_param, bottoms[0])
    n, c = bottoms[0][:2]
    tops = [(n, c) + out]
    if len(node.param.top) > 1 and free(*out):
        raise fixed_size("Pooling with a mask top", "its unpooling layer writes into a map of one size")
    return tops * len(node.param.top)  # a second top is the MAX argmax mask


@shape("InnerProduct", any_size=True)
def shape_inner_product(node, bottoms):
    p = node.param.inner_product_param
    axis = canonical_axis(p.axis, len(bottoms[0]))
    if free(*bottoms[0][axis:]):
        raise fixed_size("InnerProduct over the spatial axes", "its weights span the flattened C×H×W")
    return [bottoms[0][:axis] + (p.num_output,)]


@shape("Concat", any_size=True)
def shape_concat(node, bottoms):
    p = node.param.concat_param
    axis = p.concat_dim if p.HasField("concat_dim") else p.axis
    axis = canonical_axis(axis, len(bottoms[0]))
    out = list(bottoms[0])
    for b in bottoms[1:]:
        if len(b) != len(out) or any(b[i] != out[i] for i in range(len(out)) if i != axis):
            raise ConversionError(f"Concat inputs {list(bottoms[0])} and {list(b)} differ off axis {axis}")
        out[axis] = None if free(out[axis], b[axis]) else out[axis] + b[axis]
    return [tuple(out)]


def slice_points(node, bottom):
    p = node.param.slice_param
    axis = p.slice_dim if p.HasField("slice_dim") else p.axis
    axis = canonical_axis(axis, len(bottom))
    n_tops = len(node.param.top)
    size = bottom[axis]
    if size is None:
        raise fixed_size("Slice along a spatial axis", "its slice points cut one size")
    if p.slice_point:
        points = list(p.slice_point)
        if len(points) != n_tops - 1:
            raise ConversionError(f"{len(points)} slice points for {n_tops} tops")
    else:
        if size % n_tops:
            raise ConversionError(f"axis {axis} of size {size} does not divide into {n_tops} tops")
        points = [size // n_tops * i for i in range(1, n_tops)]
    bounds = [0] + points + [size]
    if any(b1 <= b0 for b0, b1 in zip(bounds, bounds[1:])):
        raise ConversionError(f"slice points {points} do not cut axis {axis} of size {size} into non-empty parts")
    return axis, bounds


@shape("Slice", any_size=True)
def shape_slice(node, bottoms):
    axis, bounds = slice_points(node, bottoms[0])
    out = []
    for b0, b1 in zip(bounds, bounds[1:]):
        s = list(bottoms[0])
        s[axis] = b1 - b0
        out.append(tuple(s))
    return out


@shape("Flatten", any_size=True)
def shape_flatten(node, bottoms):
    p = node.param.flatten_param
    b = bottoms[0]
    start = canonical_axis(p.axis, len(b))
    end = canonical_axis(p.end_axis, len(b))
    if end < start:
        raise ConversionError(f"Flatten end_axis {p.end_axis} comes before axis {p.axis} in a blob of {len(b)} axes")
    merged = None if free(*b[start : end + 1]) else math.prod(b[start : end + 1])
    return [one_free_axis(b[:start] + (merged,) + b[end + 1 :], "Flatten")]


def one_free_axis(shape, what):
    """``shape``, refused when it has several free axes: a view can leave one size to be
    computed when the model runs, not more."""
    if sum(d is None for d in shape) > 1:
        raise fixed_size(f"{what} into {shape_text(shape)}", "a view can leave one size free, not more")
    return shape


def reshape_target(p, bottom):
    """Caffe's Reshape: dims of ``shape`` replace axes [axis, axis+num_axes); 0 copies, -1 infers."""
    rank = len(bottom)
    axis = p.axis if p.axis >= 0 else rank + p.axis + 1
    if not 0 <= axis <= rank:
        raise ConversionError(f"Reshape axis {p.axis} out of range for {list(bottom)}")
    end = rank if p.num_axes == -1 else axis + p.num_axes
    if end > rank:
        raise ConversionError(f"Reshape num_axes {p.num_axes} too large for {list(bottom)}")
    dims = list(p.shape.dim)
    new = []
    infer_at = None
    for i, d in enumerate(dims):
        if d == 0:
            if axis + i >= rank:
                raise ConversionError("Reshape dim 0 copies an axis the bottom does not have")
            new.append(bottom[axis + i])
        elif d == -1:
            if infer_at is not None:
                raise ConversionError("Reshape has more than one -1")
            infer_at = i
            new.append(1)
        elif d < 0:
            raise ConversionError(f"Reshape dim {d} is invalid")
        else:
            new.append(d)
    out = list(bottom[:axis]) + new + list(bottom[end:])
    if free(*bottom):
        if infer_at is not None:
            out[axis + infer_at] = None
        if not free(*out):
            raise fixed_size(f"Reshape into {shape_text(out)}", "its explicit dimensions fix the element count")
        return one_free_axis(tuple(out), "Reshape")
    total = math.prod(bottom)
    if infer_at is not None:
        rest = math.prod(out)
        if rest == 0 or total % rest:
            raise ConversionError(f"Reshape cannot infer -1: {total} elements into {out}")
        out[axis + infer_at] = total // rest
    if math.prod(out) != total:
        raise ConversionError(f"Reshape of {list(bottom)} into {out} changes the element count")
    return tuple(out)


@shape("Reshape", any_size=True)
def shape_reshape(node, bottoms):
    return [reshape_target(node.param.reshape_param, bottoms[0])]


@shape("Crop", any_size=True)
def shape_crop(node, bottoms):
    if len(bottoms) != 2:
        raise ConversionError("Crop needs two bottoms (the blob and the reference)")
    a, ref = bottoms
    axis = canonical_axis(node.param.crop_param.axis, len(a))
    return [a[:axis] + ref[axis:]]


def permute_order(p, rank):
    order = list(p.order)
    for a in order:
        if not 0 <= a < rank:
            raise ConversionError(f"Permute order {order} out of range for {rank} axes")
    if len(set(order)) != len(order):
        raise ConversionError(f"Permute order {order} repeats an axis")
    return order + [a for a in range(rank) if a not in order]


@shape("Permute", any_size=True)
def shape_permute(node, bottoms):
    order = permute_order(node.param.permute_param, len(bottoms[0]))
    return [tuple(bottoms[0][a] for a in order)]


@shape("Reduction", any_size=True)
def shape_reduction(node, bottoms):
    axis = canonical_axis(node.param.reduction_param.axis, len(bottoms[0]))
    return [bottoms[0][:axis]]


@shape("ArgMax", any_size=True)
def shape_argmax(node, bottoms):
    p = node.param.argmax_param
    b = bottoms[0]
    if p.top_k < 1:
        raise ConversionError("ArgMax top_k must be at least 1")
    if p.HasField("axis"):
        axis = canonical_axis(p.axis, len(b))
        if b[axis] is None:
            raise fixed_size("ArgMax along a spatial axis", "its top_k must fit the axis")
        if p.top_k > b[axis]:
            raise ConversionError(f"top_k {p.top_k} exceeds axis size {b[axis]}")
        return [b[:axis] + (p.top_k,) + b[axis + 1 :]]
    if free(*b):
        raise fixed_size("ArgMax over whole items", "its top_k must fit the item")
    if p.top_k > math.prod(b[1:]):
        raise ConversionError(f"top_k {p.top_k} exceeds the {math.prod(b[1:])} values of each item")
    # Caffe keeps the bottom's rank (at least 3): (N, 1 or 2, top_k, 1, ...).
    return [(b[0], 2 if p.out_max_val else 1, p.top_k) + (1,) * (len(b) - 3)]


@shape("Tile", any_size=True)
def shape_tile(node, bottoms):
    p = node.param.tile_param
    b = list(bottoms[0])
    axis = canonical_axis(p.axis, len(b))
    b[axis] = None if b[axis] is None else b[axis] * p.tiles
    return [tuple(b)]


@shape("Embed")
def shape_embed(node, bottoms):
    if node.param.embed_param.input_dim < 1:
        raise ConversionError("Embed input_dim must be positive (the number of rows of its table)")
    return [bottoms[0] + (node.param.embed_param.num_output,)]


# --- fork layers (SSD, YOLO, SegNet/ENet, PSPNet, ShuffleNet, SENet) ---


@shape("Axpy", any_size=True)
def shape_axpy(node, bottoms):
    """SENet's ``a * x + y``: bottoms (N, C, 1, 1) scale, x and y; the top has x's shape."""
    if len(bottoms) != 3:
        raise ConversionError("Axpy needs three bottoms (scale, x, y)")
    a, x, y = (needs_4d(b, "Axpy") for b in bottoms)
    if x != y or a[:2] != x[:2] or any(d != 1 for d in a[2:]):
        raise ConversionError(f"Axpy bottoms {list(a)}, {list(x)}, {list(y)} do not fit a * x + y")
    return [x]


def prior_aspect_ratios(p):
    """PriorBox's aspect ratios: 1 first, then each new ratio (and its inverse with ``flip``)."""
    ratios = [1.0]
    for ar in p.aspect_ratio:
        if any(abs(ar - r) < 1e-6 for r in ratios):
            continue
        ratios.append(ar)
        if p.flip:
            ratios.append(1.0 / ar)
    return ratios


def priors_per_cell(p):
    """Priors per feature-map cell, after PriorBox's own checks (prior_box_layer.cpp LayerSetUp)."""
    if not p.min_size:
        raise ConversionError("PriorBox needs min_size")
    if p.max_size and len(p.max_size) != len(p.min_size):
        raise ConversionError(f"PriorBox has {len(p.max_size)} max_size for {len(p.min_size)} min_size")
    if min(p.min_size) <= 0:
        raise ConversionError("PriorBox min_size must be positive")
    if any(big <= small for small, big in zip(p.min_size, p.max_size)):
        raise ConversionError("PriorBox max_size must be greater than its min_size")
    if any(not ar > 0 for ar in p.aspect_ratio):
        # Caffe fills such boxes with inf or NaN coordinates: nothing a detector can use.
        raise ConversionError(f"PriorBox aspect_ratio must be positive, got {list(p.aspect_ratio)}")
    if any(not v > 0 for v in p.variance):
        raise ConversionError("PriorBox variance must be positive")
    for field in ("img_size", "img_h", "img_w", "step", "step_h", "step_w"):
        if p.HasField(field) and not getattr(p, field) > 0:
            raise ConversionError(f"PriorBox {field} must be positive")
    return len(prior_aspect_ratios(p)) * len(p.min_size) + len(p.max_size)


@shape("PriorBox", fixed_because="its boxes are laid out for one feature-map and image size")
def shape_prior_box(node, bottoms):
    _, _, h, w = legacy_shape(bottoms[0], "PriorBox")
    return [(1, 2, h * w * priors_per_cell(node.param.prior_box_param) * 4)]


def detection_rows(node, bottoms):
    """Rows per image of the converter's fixed-size DetectionOutput: ``keep_top_k``, else every
    candidate NMS may keep (``top_k`` per class)."""
    p = node.param.detection_output_param
    num_priors = bottoms[2][2] // 4
    classes = p.num_classes - (1 if 0 <= p.background_label_id < p.num_classes else 0)
    top_k = p.nms_param.top_k if p.nms_param.HasField("top_k") and p.nms_param.top_k > -1 else num_priors
    per_class = min(top_k, num_priors)
    rows = per_class * classes
    return min(p.keep_top_k, rows) if p.keep_top_k > -1 else rows


@shape("DetectionOutput")
def shape_detection_output(node, bottoms):
    if len(bottoms) != 3:
        raise ConversionError("DetectionOutput needs three bottoms (loc, conf, priors)")
    return [(1, 1, bottoms[0][0] * detection_rows(node, bottoms), 7)]


def upsample_size(p, bottom):
    """SegNet's max-unpooling output: ``upsample_h/_w``, else ``H * scale`` less one with ``pad_out_h``."""
    _, _, h, w = bottom
    scale_h = p.scale_h if p.HasField("scale_h") else p.scale
    scale_w = p.scale_w if p.HasField("scale_w") else p.scale
    out_h = p.upsample_h if p.HasField("upsample_h") else h * scale_h - int(p.pad_out_h)
    out_w = p.upsample_w if p.HasField("upsample_w") else w * scale_w - int(p.pad_out_w)
    return out_h, out_w


def nearest_scale(p):
    """The YOLO forks' one-bottom Upsample: their ``scale`` defaults to 1, not SegNet's 2."""
    return p.scale if p.HasField("scale") else 1


@shape("Upsample", any_size=True)
def shape_upsample(node, bottoms):
    p = node.param.upsample_param
    n, c, h, w = needs_4d(bottoms[0], "Upsample")
    if len(bottoms) == 2:
        if free(h, w):
            raise fixed_size("Upsample by a mask", "it unpools into a map of one size")
        if bottoms[1] != bottoms[0]:
            raise ConversionError(f"Upsample mask {list(bottoms[1])} differs from its input {list(bottoms[0])}")
        return [(n, c) + upsample_size(p, bottoms[0])]
    s = nearest_scale(p)
    return [(n, c, None if h is None else h * s, None if w is None else w * s)]


@shape("BilinearInterpolate", fixed_because="its interpolation weights are computed for one input size")
def shape_bilinear_interpolate(node, bottoms):
    p = node.param.bilinear_interpolate_param
    # Caffe's top is (num, channels, dst_h, dst_w) of the bottom read as 4-D, whatever its rank.
    n, c, h, w = legacy_shape(bottoms[0], "BilinearInterpolate")
    sized = p.HasField("dst_h") or p.HasField("dst_w")
    if sized == p.HasField("scale_factor"):
        raise ConversionError("BilinearInterpolate needs dst_h/dst_w or scale_factor (one of the two)")
    if sized:
        out = (p.dst_h if p.HasField("dst_h") else h, p.dst_w if p.HasField("dst_w") else w)
    else:
        scale = np.float32(p.scale_factor)  # Caffe: int(height * scale_factor) in float32
        out = (int(np.float32(h) * scale), int(np.float32(w) * scale))
    if p.align_corners and min(out) < 2:
        raise ConversionError(f"BilinearInterpolate with align_corners divides by the output size - 1: {list(out)}")
    return [(n, c) + out]


def interp_size(p, bottoms):
    """PSPNet's Interp output size (interp_layer.cpp Reshape), from the padded input size."""
    _, _, h, w = needs_4d(bottoms[0], "Interp")
    if p.use_blob_size or len(bottoms) == 2:
        if len(bottoms) != 2:
            raise ConversionError("Interp with use_blob_size needs a second bottom")
        return legacy_shape(bottoms[1], "Interp's size bottom")[2:]
    h_eff, w_eff = h + p.pad_beg + p.pad_end, w + p.pad_beg + p.pad_end
    shrink, zoom = p.HasField("shrink_factor"), p.HasField("zoom_factor")
    if (shrink and p.shrink_factor < 1) or (zoom and p.zoom_factor < 1):
        raise ConversionError("Interp shrink_factor and zoom_factor must be positive")
    if shrink and not zoom:
        return ((h_eff - 1) // p.shrink_factor + 1, (w_eff - 1) // p.shrink_factor + 1)
    if zoom and not shrink:
        return (h_eff + (h_eff - 1) * (p.zoom_factor - 1), w_eff + (w_eff - 1) * (p.zoom_factor - 1))
    if p.HasField("height") and p.HasField("width"):
        return (p.height, p.width)
    if shrink and zoom:
        oh, ow = (h_eff - 1) // p.shrink_factor + 1, (w_eff - 1) // p.shrink_factor + 1
        return (oh + (oh - 1) * (p.zoom_factor - 1), ow + (ow - 1) * (p.zoom_factor - 1))
    raise ConversionError("Interp needs height and width, zoom_factor or shrink_factor")


@shape("Interp", fixed_because="its interpolation weights are computed for one input and output size")
def shape_interp(node, bottoms):
    return [bottoms[0][:2] + interp_size(node.param.interp_param, bottoms)]


@shape("PixelShuffle", any_size=True)
def shape_pixel_shuffle(node, bottoms):
    r = node.param.pixelshuffle_param.upscale_factor
    n, c, h, w = needs_4d(bottoms[0], "PixelShuffle")
    if r < 1 or c % (r * r):
        raise ConversionError(f"PixelShuffle upscale_factor {r} does not divide {c} channels into r*r groups")
    return [(n, c // (r * r), None if h is None else h * r, None if w is None else w * r)]


@shape("Pad", any_size=True)
def shape_pad(node, bottoms):
    p = node.param.pad_param
    n, c, h, w = needs_4d(bottoms[0], "Pad")
    return [(n, c, None if h is None else h + p.pad_u + p.pad_d, None if w is None else w + p.pad_l + p.pad_r)]


@shape("Reorg")
def shape_reorg(node, bottoms):
    p = node.param.reorg_param
    s = p.stride
    n, c, h, w = needs_4d(bottoms[0], "Reorg")
    if s < 1:
        raise ConversionError("Reorg needs a positive stride")
    # darknet's index formula needs both, whichever the direction (reorg_layer.cpp checks them).
    if c % (s * s):
        raise ConversionError(f"Reorg: {c} channels are not divisible by stride^2 = {s * s}")
    if p.reverse:
        return [(n, c // (s * s), h * s, w * s)]
    if h % s or w % s:
        raise ConversionError(f"Reorg stride {s} does not divide the input {h}x{w}")
    return [(n, c * s * s, h // s, w // s)]


# Layers refused with a remedy (the Python layers other than the proposal layer too).
NOT_CONVERTIBLE = ("ROIAlign",)


@shape("YoloDetectionOutput", fixed_because="its rows are the cells of one grid size")
def shape_yolo_detection_output(node, bottoms):
    """One row per anchor box of the grid: the kept detections, then padding rows."""
    p = node.param.yolo_detection_output_param
    n, c, h, w = needs_4d(bottoms[0], "YoloDetectionOutput")
    if p.num_box < 1:
        raise ConversionError("YoloDetectionOutput num_box must be positive")
    if n != 1:
        raise ConversionError(f"YoloDetectionOutput takes one image (Caffe checks num == 1), got {n}")
    if p.coords != 4 or c % p.num_box or c // p.num_box < 5 + p.num_classes:
        raise ConversionError(
            f"{c} channels do not hold {p.num_box} boxes of 4 coords, objectness and {p.num_classes} classes"
        )
    if len(p.biases) < 2 * p.num_box:
        raise ConversionError(f"{len(p.biases)} biases for {p.num_box} anchor boxes")
    return [(1, 1, h * w * p.num_box, 7)]


@shape("Yolov3DetectionOutput", fixed_because="its rows are the cells of one grid size per scale")
def shape_yolov3_detection_output(node, bottoms):
    """One row per (cell, anchor, class) of every scale: the kept detections, then padding rows."""
    p = node.param.yolov3_detection_output_param
    if len(bottoms) != p.mask_group_num or len(p.anchors_scale) < len(bottoms):
        raise ConversionError(
            f"{len(bottoms)} bottoms for mask_group_num {p.mask_group_num} and {len(p.anchors_scale)} anchors_scale"
        )
    groups = len(p.mask) // len(bottoms)
    if groups < p.num_box or any(2 * m + 1 >= len(p.biases) for m in p.mask):
        raise ConversionError(f"mask {list(p.mask)} does not pick {p.num_box} bias pairs per scale")
    total = 0
    for n, c, h, w in (needs_4d(b, "Yolov3DetectionOutput") for b in bottoms):
        if n != 1 or h != w or c != p.num_box * (5 + p.num_classes):
            raise ConversionError(
                f"bottom {[n, c, h, w]} is not one square map of {p.num_box} boxes of {5 + p.num_classes} values"
            )
        total += h * w * p.num_box * p.num_classes
    return [(1, 1, total, 7)]


# --- two-stage detectors: py-faster-rcnn (Faster R-CNN) and R-FCN ---

# py-faster-rcnn's TEST configuration (lib/fast_rcnn/config.py, __C.TEST.RPN_*): its Python
# proposal layer reads these from the config, not from the prototxt.
RPN_TEST = {"pre_nms_top_n": 6000, "post_nms_top_n": 300, "nms_thresh": 0.7, "min_size": 16}
# What py-faster-rcnn's ProposalLayer reads from param_str (feat_stride, scales), and what forks
# of it add (ratios, base_size: the other arguments of generate_anchors).
PROPOSAL_PARAM_STR_KEYS = ("feat_stride", "scales", "ratios", "base_size")


def is_proposal_layer(param):
    """Whether a Python layer is py-faster-rcnn's ``rpn.proposal_layer.ProposalLayer``."""
    p = param.python_param
    return param.type == "Python" and p.layer == "ProposalLayer" and p.module.split(".")[-1] == "proposal_layer"


@dataclass(frozen=True)
class ProposalSettings:
    """A region proposal layer's parameters, from ``proposal_param`` or the Python layer's
    ``param_str`` with py-faster-rcnn's TEST values."""

    feat_stride: int
    base_size: int
    ratios: tuple
    scales: tuple
    pre_nms_top_n: int
    post_nms_top_n: int
    nms_thresh: float
    min_size: float


def proposal_settings(param):
    if param.type == "Proposal":
        p = param.proposal_param
        return ProposalSettings(
            p.feat_stride, p.base_size, tuple(p.ratio) or (0.5, 1.0, 2.0), tuple(p.scale) or (8.0, 16.0, 32.0),
            p.pre_nms_topn, p.post_nms_topn, p.nms_thresh, p.min_size,
        )
    given = python_layer_params(param)
    unknown = sorted(str(k) for k in given if k not in PROPOSAL_PARAM_STR_KEYS)
    if unknown:
        raise ConversionError(
            f"param_str key(s) {', '.join(unknown)} not understood (the proposal layer reads "
            f"{', '.join(PROPOSAL_PARAM_STR_KEYS)})"
        )
    if "feat_stride" not in given:
        raise ConversionError("the proposal layer's param_str lacks 'feat_stride'")
    try:
        stride, base = int(given["feat_stride"]), int(given.get("base_size", 16))
        ratios = tuple(float(r) for r in given.get("ratios", (0.5, 1, 2)))
        scales = tuple(float(s) for s in given.get("scales", (8, 16, 32)))
    except (TypeError, ValueError):
        raise ConversionError(f"param_str {param.python_param.param_str!r} holds a value that is not a number") from None
    return ProposalSettings(stride, base, ratios, scales, **RPN_TEST)


def proposal_rows(settings, bottoms):
    """Rows of the converter's fixed-size rois: at most post_nms_top_n of the pre_nms_top_n best
    anchors (a limit of 0 keeps all)."""
    if len(bottoms) != 3:
        raise ConversionError("the proposal layer needs three bottoms (RPN scores, box deltas, im_info)")
    scores, deltas, info = bottoms
    if len(scores) != 4 or len(deltas) != 4:
        raise ConversionError(f"RPN scores {list(scores)} and box deltas {list(deltas)} must be 4-D")
    if settings.feat_stride <= 0 or not settings.ratios or not settings.scales:
        raise ConversionError("the proposal layer needs a positive feat_stride, ratios and scales")
    anchors = len(settings.ratios) * len(settings.scales)
    n, c, h, w = scores
    if n != 1:
        raise ConversionError(f"the proposal layer takes one image (py-faster-rcnn asserts it), got a batch of {n}")
    if c != 2 * anchors or deltas != (1, 4 * anchors, h, w):
        raise ConversionError(
            f"RPN scores {list(scores)} and deltas {list(deltas)} do not hold 2 scores and 4 deltas for each of "
            f"{anchors} anchors on one {h}x{w} map"
        )
    if info[0] != 1 or math.prod(info[1:]) < 3:
        raise ConversionError(f"im_info {list(info)} is not one row (height, width, scale)")
    total = h * w * anchors
    candidates = min(settings.pre_nms_top_n, total) if settings.pre_nms_top_n > 0 else total
    return min(settings.post_nms_top_n, candidates) if settings.post_nms_top_n > 0 else candidates


@shape("Proposal", fixed_because="its anchors are laid out for one score-map size")
def shape_proposal(node, bottoms):
    """rois (R, 5) and, with a second top, their scores (R, 1); R is fixed (see proposal_rows)."""
    rows = proposal_rows(proposal_settings(node.param), bottoms)
    tops = len(node.param.top)
    if tops > 2:
        raise ConversionError(f"the proposal layer makes rois and their scores, not {tops} tops")
    return [(rows, 5), (rows, 1)][:tops]


@shape("Python", any_size=True)
def shape_python(node, bottoms):
    if is_proposal_layer(node.param):
        if any(free(*b) for b in bottoms):
            raise fixed_size("the proposal layer", FIXED_BECAUSE["Proposal"])
        return shape_proposal(node, bottoms)
    raise ConversionError(refusal(node))


def roi_count(rois):
    if len(rois) < 2 or math.prod(rois[1:]) != 5:
        raise ConversionError(f"rois {list(rois)} are not rows of 5 (batch index, x1, y1, x2, y2)")
    return rois[0]


def _roi_bottoms(node, bottoms):
    if len(bottoms) != 2 or len(bottoms[0]) != 4:
        raise ConversionError(f"{node.type} needs a 4-D feature map and the rois as bottoms")
    return bottoms[0], roi_count(bottoms[1])


@shape("ROIPooling")
def shape_roi_pooling(node, bottoms):
    p = node.param.roi_pooling_param
    features, rois = _roi_bottoms(node, bottoms)
    if p.pooled_h <= 0 or p.pooled_w <= 0:
        raise ConversionError("ROIPooling needs positive pooled_h and pooled_w")
    return [(rois, features[1], p.pooled_h, p.pooled_w)]


@shape("PSROIPooling")
def shape_psroi_pooling(node, bottoms):
    p = node.param.psroi_pooling_param
    features, rois = _roi_bottoms(node, bottoms)
    missing = [f for f in ("spatial_scale", "output_dim", "group_size") if not p.HasField(f)]
    if missing:
        raise ConversionError(f"PSROIPooling lacks the required {', '.join(missing)}")
    g = p.group_size
    if p.output_dim <= 0 or g <= 0 or features[1] != p.output_dim * g * g:
        raise ConversionError(
            f"{features[1]} input channels, PSROIPooling needs output_dim x group_size^2 = {p.output_dim} x {g}^2"
        )
    return [(rois, p.output_dim, g, g)]


def refusal(node):
    """Why a layer of ``node``'s type cannot be converted, and what to do instead: one line."""
    if node.type == "Python" and not node.param.bottom:
        return "Python data layer cannot be converted: declare the network input instead (Input layer or input_shape)"
    if node.type == "Python":
        p = node.param.python_param
        what = (
            f"Python layer {p.module}.{p.layer} cannot be converted (it runs Python code; of the Python layers "
            "only py-faster-rcnn's rpn.proposal_layer.ProposalLayer is known)"
        )
    else:
        what = f"{node.type} layer cannot be converted (not supported)"
    return f"{what}; cut the network before it with --outputs BLOB (e.g. --outputs {','.join(node.param.bottom)})"


@shape(*NOT_CONVERTIBLE, any_size=True)
def shape_refused(node, bottoms):
    raise ConversionError(refusal(node))
