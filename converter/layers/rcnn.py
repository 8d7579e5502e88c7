"""Keras layers of the two-stage detectors: the region proposal layer of Faster R-CNN and the
region pooling of Fast/Faster R-CNN (ROIPooling) and R-FCN (PSROIPooling).

Caffe gives these layers a number of rows known only at run time; here the rois blob has a fixed
number of rows R, the proposals first, then padding rows of -1 (batch index -1: no image), and
the proposal layer also yields how many rows are proposals. The pooling layers give zeros for
rows whose batch index is not an image of the batch, so padding rows cost nothing downstream.
"""

import keras
import numpy as np
from keras import ops

from .base import register
from .boxes import box_area, greedy_nms, iou


def generate_anchors(base_size, ratios, scales):
    """py-faster-rcnn's reference anchors (A, 4) as [x1, y1, x2, y2], ratio-major.

    Around the centre of the window (0, 0, base_size - 1, base_size - 1): for each ratio a box of
    the window's area with width round(sqrt(area / ratio)) and height round(width * ratio)
    (numpy's rounding, half to even), then each scale multiplies both sides. A box of width w
    around centre c spans c - (w - 1) / 2 .. c + (w - 1) / 2.
    """
    centre = 0.5 * (base_size - 1)
    area = float(base_size * base_size)
    boxes = []
    for ratio in ratios:
        width = np.round(np.sqrt(area / ratio))
        height = np.round(width * ratio)
        for scale in scales:
            w, h = width * scale, height * scale
            boxes.append([centre - 0.5 * (w - 1), centre - 0.5 * (h - 1), centre + 0.5 * (w - 1), centre + 0.5 * (h - 1)])
    return np.asarray(boxes, dtype=np.float64)


def shifted_anchors(anchors, height, width, stride):
    """Every anchor at every cell of a height x width map, (H * W * A, 4) float32 in (h, w, a)
    order: anchor a moved by (w * stride, h * stride)."""
    ys, xs = np.meshgrid(np.arange(height) * stride, np.arange(width) * stride, indexing="ij")
    shifts = np.stack([xs, ys, xs, ys], axis=-1).reshape(-1, 1, 4)
    return (anchors[None] + shifts).reshape(-1, 4).astype(np.float32)


def apply_deltas(boxes, deltas):
    """py-faster-rcnn's bbox_transform_inv in float32: boxes (K, 4) [x1, y1, x2, y2] moved by
    deltas (K, 4) [dx, dy, dw, dh]: centre += d * size, size *= exp(d), where a side counts both
    end pixels (x2 - x1 + 1). Returns x1, y1, x2, y2 (K,) each."""
    boxes = ops.cast(boxes, "float32")
    width = boxes[:, 2] - boxes[:, 0] + 1.0
    height = boxes[:, 3] - boxes[:, 1] + 1.0
    cx = deltas[:, 0] * width + (boxes[:, 0] + 0.5 * width)
    cy = deltas[:, 1] * height + (boxes[:, 1] + 0.5 * height)
    w = ops.exp(deltas[:, 2]) * width
    h = ops.exp(deltas[:, 3]) * height
    return cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h


def clip_boxes(x1, y1, x2, y2, height, width):
    """Corners clipped to [0, width - 1] and [0, height - 1] (py-faster-rcnn's clip_boxes)."""
    return (
        ops.maximum(ops.minimum(x1, width - 1.0), 0.0),
        ops.maximum(ops.minimum(y1, height - 1.0), 0.0),
        ops.maximum(ops.minimum(x2, width - 1.0), 0.0),
        ops.maximum(ops.minimum(y2, height - 1.0), 0.0),
    )


def pixel_nms(x1, y1, x2, y2, candidates, threshold, max_keep=None):
    """py-faster-rcnn's NMS over boxes sorted best first: a box is dropped when its IoU with a
    kept one, sides counting both end pixels, is not <= ``threshold`` (so NaN drops it too).
    Returns the (K,) bool of kept boxes."""
    boxes = (x1, y1, x2, y2)
    area = box_area(*boxes, pixel=1.0)

    def suppresses(k):
        return ops.logical_not(iou([v[k] for v in boxes], boxes, areas=(area[k], area), pixel=1.0) <= threshold)

    return greedy_nms(candidates, suppresses, max_keep=max_keep)


def exact_divide(x, divisor):
    """``x / divisor`` rounded once, as C divides. TensorFlow's graph optimiser turns a division
    by a constant into a multiplication by its reciprocal, off by an ulp now and then: harmless
    until a floor or ceil follows, as it does for bin edges. DivNoNan escapes that rewrite (a
    divisor of 0 never occurs here); TFLite's converter does not spare it."""
    return ops.divide_no_nan(x, ops.cast(divisor, x.dtype))


def round_half_away(x):
    """C's round(): halves away from zero (keras.ops.round rounds them to even). Exact in
    float32, where floor(|x| + 0.5) is not (0.49999997 + 0.5 rounds up to 1)."""
    magnitude = ops.abs(x)
    whole = ops.floor(magnitude)
    rounded = whole + ops.cast(magnitude - whole >= 0.5, x.dtype)
    return ops.where(x < 0, -rounded, rounded)


@register
class Proposal(keras.layers.Layer):
    """py-faster-rcnn's region proposal layer (``rpn.proposal_layer.ProposalLayer``, and the fork
    type Proposal) for one image.

    Inputs: RPN scores NHWC (1, H, W, 2A) (background scores first, then foreground), box deltas
    NHWC (1, H, W, 4A), im_info (1, 3+) = [image height, width, scale]. Each anchor of
    :func:`generate_anchors` at each cell, shifted by ``feat_stride``, is moved by its deltas
    (py-faster-rcnn's bbox_transform_inv: centre += d * size, size *= exp(d), widths counting
    both end pixels), clipped to the image, dropped when narrower or lower than ``min_size *
    scale``; the ``pre_nms_top_n`` best foreground scores (ties: the earlier anchor in (h, w, a)
    order first) go through greedy NMS (dropped when IoU > ``nms_thresh``, areas with the +1
    pixel convention) until ``rows`` are kept.

    Outputs: rois (rows, 5) [0, x1, y1, x2, y2], their scores (rows, 1), both padded with -1 after
    the proposals, and the number of proposals (1,) int32.

    Args:
        feat_stride, base_size, ratios, scales: the anchors: py-faster-rcnn's ``param_str`` or the Proposal
            type's ``proposal_param``.
        pre_nms_top_n, nms_thresh, min_size: py-faster-rcnn's TEST settings (6000, 0.7, 16) or
            ``proposal_param``'s.
        rows: the rois' rows: ``post_nms_top_n`` (300), fewer when fewer anchors are candidates.
    """

    def __init__(self, feat_stride, base_size, ratios, scales, pre_nms_top_n, nms_thresh, min_size, rows, **kwargs):
        super().__init__(**kwargs)
        self.feat_stride = int(feat_stride)
        self.base_size = int(base_size)
        self.ratios = tuple(float(r) for r in ratios)
        self.scales = tuple(float(s) for s in scales)
        self.pre_nms_top_n = int(pre_nms_top_n)
        self.nms_thresh = float(nms_thresh)
        self.min_size = float(min_size)
        self.rows = int(rows)

    def call(self, inputs):
        scores, deltas, im_info = inputs
        _, height, width, _ = scores.shape
        count = len(self.ratios) * len(self.scales)
        anchors = shifted_anchors(
            generate_anchors(self.base_size, self.ratios, self.scales), height, width, self.feat_stride
        )
        total = anchors.shape[0]
        fg = ops.reshape(scores[0, :, :, count:], (total,))
        info = ops.reshape(ops.cast(im_info, "float32"), (-1,))
        moved = apply_deltas(anchors, ops.reshape(deltas[0], (total, 4)))
        x1, y1, x2, y2 = clip_boxes(*moved, info[0], info[1])
        least = self.min_size * info[2]
        big_enough = ops.logical_and(x2 - x1 + 1.0 >= least, y2 - y1 + 1.0 >= least)

        candidates = min(self.pre_nms_top_n, total) if self.pre_nms_top_n > 0 else total
        best, order = ops.top_k(ops.where(big_enough, fg, float("-inf")), candidates)  # ties: lower index first
        valid = best > float("-inf")
        x1, y1, x2, y2 = (ops.take(v, order) for v in (x1, y1, x2, y2))
        keep = pixel_nms(x1, y1, x2, y2, valid, self.nms_thresh, max_keep=self.rows)
        position = ops.arange(candidates)
        rank = ops.sort(ops.where(keep, position, candidates))[: self.rows]
        present = rank < candidates
        rank = ops.minimum(rank, candidates - 1)
        boxes = ops.stack([ops.zeros_like(x1), x1, y1, x2, y2], axis=-1)
        rois = ops.where(present[:, None], ops.take(boxes, rank, axis=0), -1.0)
        roi_scores = ops.where(present, ops.take(best, rank), -1.0)[:, None]
        number = ops.sum(ops.cast(present, "int32"), keepdims=True)
        return [rois, roi_scores, number]

    def compute_output_spec(self, inputs):
        return [
            keras.KerasTensor((self.rows, 5), dtype="float32"),
            keras.KerasTensor((self.rows, 1), dtype="float32"),
            keras.KerasTensor((1,), dtype="int32"),
        ]

    def get_config(self):
        return {
            **super().get_config(),
            "feat_stride": self.feat_stride,
            "base_size": self.base_size,
            "ratios": self.ratios,
            "scales": self.scales,
            "pre_nms_top_n": self.pre_nms_top_n,
            "nms_thresh": self.nms_thresh,
            "min_size": self.min_size,
            "rows": self.rows,
        }


def find_proposal(model):
    """The model's :class:`Proposal` layer (a two-stage detector has one), or None."""
    return next((layer for layer in model.layers if isinstance(layer, Proposal)), None)


def _batch_mask(batch_index, images):
    """(R, N) one-hot of each roi's image (C's int conversion truncates); all zero when the index
    names no image of the batch (padding rows)."""
    index = ops.cast(batch_index, "int32")
    return ops.cast(ops.equal(index[:, None], ops.arange(images)[None, :]), "float32")


def _floor_log2(length, levels):
    """floor(log2(length)) of positive ints below 2^levels, and 2 to that power, exactly."""
    k = ops.zeros_like(length)
    for j in range(1, levels):
        k = k + ops.cast(length >= 2**j, "int32")
    return k, ops.take(2 ** np.arange(levels, dtype=np.int32), k)


def _doubling_table(x, axis, levels):
    """[T_0, ..., T_{levels-1}]: T_k[i] is the max of x over [i, i + 2^k) along ``axis`` wherever
    that range fits (elsewhere a value never read)."""
    tables = [x]
    size = x.shape[axis]
    for k in range(1, levels):
        prev, step = tables[-1], 2 ** (k - 1)
        ahead = ops.concatenate(
            [ops.take(prev, np.arange(step, size), axis=axis), ops.take(prev, np.arange(step), axis=axis)], axis=axis
        )
        tables.append(ops.maximum(prev, ahead))
    return tables


@register
class ROIPooling(keras.layers.Layer):
    """Fast R-CNN's ROIPooling (caffe-fast-rcnn's roi_pooling_layer).

    Inputs: features NHWC (N, H, W, C) and rois (R, 5) [batch index, x1, y1, x2, y2] in image
    pixels. Each roi's corners are scaled by ``spatial_scale`` and rounded (halves away from
    zero); its size counts both end cells (at least 1). Bin (i, j) spans rows
    [floor(i * h / pooled_h), ceil((i + 1) * h / pooled_h)) from the roi's first row (columns
    likewise), clipped to the map, and gives the max of its cells, or 0 when empty. Output
    (R, pooled_h, pooled_w, C).

    The max over any rectangle is the max of four (overlapping) power-of-two rectangles that
    cover it, read from a table of such maxima: a few gathers per bin instead of a scan.

    Args:
        pooled_h, pooled_w, spatial_scale: Caffe's ``roi_pooling_param``.
    """

    def __init__(self, pooled_h, pooled_w, spatial_scale, **kwargs):
        super().__init__(**kwargs)
        self.pooled_h = int(pooled_h)
        self.pooled_w = int(pooled_w)
        self.spatial_scale = float(spatial_scale)

    def _bins(self, start, end, pooled, size):
        """First and one-past-last cell (R, pooled) of each bin along one axis, clipped to [0, size]."""
        extent = ops.maximum(end - start + 1, 1)
        bin_size = exact_divide(ops.cast(extent, "float32"), pooled)
        i = np.arange(pooled, dtype=np.float32)
        lo = ops.cast(ops.floor(i * bin_size[:, None]), "int32") + start[:, None]
        hi = ops.cast(ops.ceil((i + 1.0) * bin_size[:, None]), "int32") + start[:, None]
        return ops.clip(lo, 0, size), ops.clip(hi, 0, size)

    def call(self, inputs):
        x, rois = inputs
        _, height, width, channels = x.shape
        images = ops.shape(x)[0]  # unknown when a saver traces the model
        rois = ops.reshape(rois, (-1, 5))
        corners = ops.cast(round_half_away(rois[:, 1:] * np.float32(self.spatial_scale)), "int32")
        h0, h1 = self._bins(corners[:, 1], corners[:, 3], self.pooled_h, height)
        w0, w1 = self._bins(corners[:, 0], corners[:, 2], self.pooled_w, width)
        h0, h1 = h0[:, :, None], h1[:, :, None]  # (R, pooled_h, 1)
        w0, w1 = w0[:, None, :], w1[:, None, :]  # (R, 1, pooled_w)
        empty = ops.logical_or(h1 <= h0, w1 <= w0)

        levels_h = int(np.floor(np.log2(height))) + 1
        levels_w = int(np.floor(np.log2(width))) + 1
        table = ops.stack(
            [ops.stack(_doubling_table(t, 1, levels_h)) for t in _doubling_table(x, 2, levels_w)]
        )  # (levels_w, levels_h, N, H, W, C)
        table = ops.reshape(table, (-1, channels))

        kh, span_h = _floor_log2(ops.maximum(h1 - h0, 1), levels_h)
        kw, span_w = _floor_log2(ops.maximum(w1 - w0, 1), levels_w)
        rows = [ops.minimum(h0, height - 1), ops.maximum(h1 - span_h, 0)]
        cols = [ops.minimum(w0, width - 1), ops.maximum(w1 - span_w, 0)]
        image = ops.clip(ops.cast(rois[:, 0], "int32"), 0, images - 1)[:, None, None]
        base = ((kw * levels_h + kh) * images + image) * height
        best = None
        for r in rows:
            for c in cols:
                value = ops.take(table, ops.reshape((base + r) * width + c, (-1,)), axis=0)
                best = value if best is None else ops.maximum(best, value)
        best = ops.reshape(best, (-1, self.pooled_h, self.pooled_w, channels))
        real = ops.sum(_batch_mask(rois[:, 0], images), axis=1)[:, None, None] > 0
        keep = ops.logical_and(ops.logical_not(empty), real)
        return ops.where(keep[..., None], best, 0.0)

    def compute_output_shape(self, input_shapes):
        features, rois = input_shapes
        return (rois[0], self.pooled_h, self.pooled_w, features[-1])

    def get_config(self):
        return {
            **super().get_config(),
            "pooled_h": self.pooled_h,
            "pooled_w": self.pooled_w,
            "spatial_scale": self.spatial_scale,
        }


@register
class PSROIPooling(keras.layers.Layer):
    """R-FCN's position-sensitive ROI pooling (caffe-rfcn's psroi_pooling_layer).

    Inputs: features NHWC (N, H, W, output_dim * group_size^2), channel (d * G + i) * G + j
    holding class d for bin (i, j); rois (R, 5) as for :class:`ROIPooling`. A roi spans
    round(x1) * scale .. (round(x2) + 1) * scale (C rounding; at least 0.1 wide); bin (i, j)
    spans rows [floor(y0 + i * h / G), ceil(y0 + (i + 1) * h / G)) clipped to the map (columns
    likewise), and output (i, j, d) is the mean of its channel's cells over the bin, or 0 when
    empty. Output (R, G, G, output_dim).

    The sums are mask products (einsum), the division by the cell count Caffe's.

    Args:
        output_dim, group_size, spatial_scale: the fork's ``psroi_pooling_param``.
    """

    def __init__(self, output_dim, group_size, spatial_scale, **kwargs):
        super().__init__(**kwargs)
        self.output_dim = int(output_dim)
        self.group_size = int(group_size)
        self.spatial_scale = float(spatial_scale)

    def _bins(self, first, last, size):
        scale = np.float32(self.spatial_scale)
        start = round_half_away(first) * scale
        end = (round_half_away(last) + 1.0) * scale
        extent = ops.maximum(end - start, np.float32(0.1))
        bin_size = exact_divide(extent, self.group_size)
        i = np.arange(self.group_size, dtype=np.float32)
        lo = ops.cast(ops.floor(i * bin_size[:, None] + start[:, None]), "int32")
        hi = ops.cast(ops.ceil((i + 1.0) * bin_size[:, None] + start[:, None]), "int32")
        lo, hi = ops.clip(lo, 0, size), ops.clip(hi, 0, size)
        cells = ops.arange(size)
        mask = ops.logical_and(cells >= lo[..., None], cells < hi[..., None])  # (R, G, size)
        return ops.cast(mask, "float32"), hi - lo

    def call(self, inputs):
        x, rois = inputs
        _, height, width, _ = x.shape
        images = ops.shape(x)[0]  # unknown when a saver traces the model
        g = self.group_size
        rois = ops.reshape(rois, (-1, 5))
        rows, bin_h = self._bins(rois[:, 2], rois[:, 4], height)
        cols, bin_w = self._bins(rois[:, 1], rois[:, 3], width)
        x = ops.reshape(x, (-1, height, width, self.output_dim, g, g))
        # Sum over the bin's columns (and the roi's image), then over its rows.
        pick = ops.einsum("rn,rjw->rjnw", _batch_mask(rois[:, 0], images), cols)
        by_row = ops.einsum("rjnw,nhwdij->rjhdi", pick, x)
        sums = ops.einsum("rih,rjhdi->rijd", rows, by_row)
        area = ops.cast(bin_h[:, :, None] * bin_w[:, None, :], "float32")[..., None]
        return ops.where(area > 0, sums / ops.maximum(area, 1.0), 0.0)

    def compute_output_shape(self, input_shapes):
        _, rois = input_shapes
        return (rois[0], self.group_size, self.group_size, self.output_dim)

    def get_config(self):
        return {
            **super().get_config(),
            "output_dim": self.output_dim,
            "group_size": self.group_size,
            "spatial_scale": self.spatial_scale,
        }
