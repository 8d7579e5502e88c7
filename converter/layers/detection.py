"""One-stage detection heads: SSD's PriorBox and DetectionOutput, MobileNet-YOLO's YOLO v2 and v3
detection outputs.
"""

import math

import keras
import numpy as np
from keras import ops

from .base import register, traced_when_eager
from .boxes import greedy_nms, greedy_nms_matrix, iou


def prior_boxes(feature_hw, image_hw, step_hw, offset, min_sizes, max_sizes, aspect_ratios, clip, variances):
    """SSD's PriorBox (prior_box_layer.cpp) as a (1, 2, H*W*priors*4) array: corner boxes
    normalised by the image size, then their variances. Box sizes are whole pixels: SSD reads
    each min_size and max_size into an ``int`` (SSD512's 35.84 is a 35-pixel box)."""
    (fh, fw), (ih, iw), (sh, sw) = feature_hw, image_hw, step_hw
    boxes = []
    for h in range(fh):
        for w in range(fw):
            cx, cy = (w + offset) * sw, (h + offset) * sh
            for s, min_size in enumerate(min_sizes):
                min_size = int(min_size)
                sizes = [(min_size, min_size)]
                if max_sizes:
                    side = math.sqrt(min_size * int(max_sizes[s]))
                    sizes.append((side, side))
                for ar in aspect_ratios:
                    if abs(ar - 1.0) < 1e-6:
                        continue
                    sizes.append((min_size * math.sqrt(ar), min_size / math.sqrt(ar)))
                for bw, bh in sizes:
                    half_w, half_h = bw / 2.0, bh / 2.0
                    boxes.append(((cx - half_w) / iw, (cy - half_h) / ih, (cx + half_w) / iw, (cy + half_h) / ih))
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1)
    if clip:
        boxes = np.clip(boxes, 0.0, 1.0)
    var = np.asarray(variances if variances else [0.1], dtype=np.float32)
    var = np.tile(var if var.size == 4 else np.repeat(var[:1], 4), boxes.size // 4)
    return np.stack([boxes, var])[None]


@register
class PriorBox(keras.layers.Layer):
    """SSD's PriorBox: a constant (1, 2, H*W*priors*4) blob of prior boxes and variances that
    depends only on the feature map and image sizes (see :func:`prior_boxes`); its inputs (the
    feature map, and the image when Caffe's layer has it) are not read.

    Args:
        feature_hw, image_hw: the feature map's and the image's (h, w).
        step_hw: the distance between cell centres in image pixels (Caffe's ``step``, else image /
            feature).
        offset: the centre's offset within a cell.
        min_sizes, max_sizes, aspect_ratios: Caffe's, the aspect ratios already flipped and with 1 first.
        clip: clip the boxes to [0, 1].
        variances: one value or four.
    """

    def __init__(self, feature_hw, image_hw, step_hw, offset, min_sizes, max_sizes, aspect_ratios, clip, variances,
                 **kwargs):
        super().__init__(**kwargs)
        self.feature_hw = tuple(feature_hw)
        self.image_hw = tuple(image_hw)
        self.step_hw = tuple(float(s) for s in step_hw)
        self.offset = float(offset)
        self.min_sizes = tuple(float(s) for s in min_sizes)
        self.max_sizes = tuple(float(s) for s in max_sizes)
        self.aspect_ratios = tuple(float(a) for a in aspect_ratios)
        self.clip = bool(clip)
        self.variances = tuple(float(v) for v in variances)
        self._priors = prior_boxes(
            self.feature_hw, self.image_hw, self.step_hw, self.offset, self.min_sizes, self.max_sizes,
            self.aspect_ratios, self.clip, self.variances,
        )

    def call(self, x):
        return ops.convert_to_tensor(self._priors)

    def compute_output_shape(self, input_shape):
        return self._priors.shape

    def get_config(self):
        return {
            **super().get_config(),
            "feature_hw": self.feature_hw,
            "image_hw": self.image_hw,
            "step_hw": self.step_hw,
            "offset": self.offset,
            "min_sizes": self.min_sizes,
            "max_sizes": self.max_sizes,
            "aspect_ratios": self.aspect_ratios,
            "clip": self.clip,
            "variances": self.variances,
        }


@register
class DetectionOutput(keras.layers.Layer):
    """SSD's DetectionOutput with a fixed number of rows per image (Caffe's varies).

    Inputs in Caffe order: loc (N, P*L*4), conf (N, P*classes), priors (1, 2, P*4). Boxes are
    decoded against the priors (CORNER, CENTER_SIZE or CORNER_SIZE), then per class other than
    the background: scores above ``confidence_threshold``, the ``top_k`` best, greedy NMS keeping
    a box when its Jaccard overlap with every kept box is <= ``nms_threshold``; of all kept, the
    ``keep_top_k`` best. Rows are [image, label, score, xmin, ymin, xmax, ymax] ordered by label,
    then score (Caffe's order), ``rows`` per image, padded with [image, -1, ..., -1] (Caffe's own
    row for an image without detections); the output is (1, 1, N * rows, 7).

    Args:
        num_classes, share_location, background_label_id, code_type, variance_encoded_in_target: Caffe's
            ``detection_output_param``.
        confidence_threshold, nms_threshold, top_k, keep_top_k: likewise (NMS's in ``nms_param``).
        rows: rows per image of the output.
    """

    def __init__(self, num_classes, share_location, background_label_id, code_type, variance_encoded_in_target,
                 confidence_threshold, nms_threshold, top_k, keep_top_k, rows, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.share_location = bool(share_location)
        self.background_label_id = int(background_label_id)
        self.code_type = code_type
        self.variance_encoded_in_target = bool(variance_encoded_in_target)
        self.confidence_threshold = float(confidence_threshold)
        self.nms_threshold = float(nms_threshold)
        self.top_k = int(top_k)
        self.keep_top_k = int(keep_top_k)
        self.rows = int(rows)

    def _decode(self, loc, prior, var):
        px0, py0, px1, py1 = (prior[..., i] for i in range(4))
        if self.variance_encoded_in_target:
            v = [1.0, 1.0, 1.0, 1.0]
        else:
            v = [var[..., i] for i in range(4)]
        l0, l1, l2, l3 = (loc[..., i] for i in range(4))
        pw, ph = px1 - px0, py1 - py0
        if self.code_type == "CORNER":
            return ops.stack([px0 + v[0] * l0, py0 + v[1] * l1, px1 + v[2] * l2, py1 + v[3] * l3], axis=-1)
        if self.code_type == "CORNER_SIZE":
            return ops.stack(
                [px0 + v[0] * l0 * pw, py0 + v[1] * l1 * ph, px1 + v[2] * l2 * pw, py1 + v[3] * l3 * ph], axis=-1
            )
        cx, cy = (px0 + px1) / 2.0, (py0 + py1) / 2.0
        dcx, dcy = v[0] * l0 * pw + cx, v[1] * l1 * ph + cy
        dw, dh = ops.exp(v[2] * l2) * pw, ops.exp(v[3] * l3) * ph
        return ops.stack([dcx - dw / 2.0, dcy - dh / 2.0, dcx + dw / 2.0, dcy + dh / 2.0], axis=-1)

    def call(self, inputs):
        return traced_when_eager(self, DetectionOutput._detect, *inputs)

    def _detect(self, loc, conf, priors):
        n_priors = priors.shape[-1] // 4
        n_loc = 1 if self.share_location else self.num_classes
        classes = [c for c in range(self.num_classes) if c != self.background_label_id]
        k = self.top_k
        prior = ops.reshape(priors[0, 0], (1, n_priors, 1, 4))
        var = ops.reshape(priors[0, 1], (1, n_priors, 1, 4))
        boxes = self._decode(ops.reshape(loc, (-1, n_priors, n_loc, 4)), prior, var)  # (N, P, L, 4)
        boxes = ops.transpose(boxes, (0, 2, 1, 3))  # (N, L, P, 4)
        if self.share_location:
            class_boxes = ops.repeat(boxes, len(classes), axis=1)
        else:
            class_boxes = ops.take(boxes, classes, axis=1)
        scores = ops.transpose(ops.reshape(conf, (-1, n_priors, self.num_classes)), (0, 2, 1))
        scores = ops.take(scores, classes, axis=1)  # (N, K, P)
        masked = ops.where(scores > self.confidence_threshold, scores, float("-inf"))
        cand_scores, cand_index = ops.top_k(masked, k)  # stable: ties keep the lower prior first
        cand_boxes = ops.take_along_axis(class_boxes, ops.expand_dims(cand_index, -1), axis=2)
        valid = cand_scores > self.confidence_threshold
        # A box is dropped when some kept box overlaps it by more than the threshold (or by NaN:
        # Caffe keeps only when overlap <= threshold).
        corners = [cand_boxes[..., i] for i in range(4)]
        overlaps = iou([ops.expand_dims(c, -1) for c in corners], [ops.expand_dims(c, -2) for c in corners])
        conflict = ops.logical_not(overlaps <= self.nms_threshold)
        keep = greedy_nms_matrix(valid, conflict)
        kept_scores = ops.where(keep, cand_scores, float("-inf"))
        flat_scores = ops.reshape(kept_scores, (-1, len(classes) * k))
        best, best_index = ops.top_k(flat_scores, self.rows)
        big = len(classes) * k
        order = ops.sort(ops.where(best > float("-inf"), best_index, big), axis=-1)
        present = order < big
        order = ops.minimum(order, big - 1)
        label = ops.take(np.asarray(classes, dtype="float32"), order // k)
        score = ops.take_along_axis(flat_scores, order, axis=1)
        flat_boxes = ops.reshape(cand_boxes, (-1, len(classes) * k, 4))
        box = ops.take_along_axis(flat_boxes, ops.expand_dims(order, -1), axis=1)
        image = ops.cast(ops.arange(ops.shape(loc)[0]), "float32")[:, None, None] + ops.zeros_like(box[..., :1])
        rows = ops.concatenate([ops.expand_dims(label, -1), ops.expand_dims(score, -1), box], axis=-1)
        rows = ops.where(ops.expand_dims(present, -1), rows, -1.0)
        return ops.reshape(ops.concatenate([image, rows], axis=-1), (1, 1, -1, 7))

    def compute_output_shape(self, input_shapes):
        n = input_shapes[0][0]
        return (1, 1, None if n is None else n * self.rows, 7)

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "share_location": self.share_location,
            "background_label_id": self.background_label_id,
            "code_type": self.code_type,
            "variance_encoded_in_target": self.variance_encoded_in_target,
            "confidence_threshold": self.confidence_threshold,
            "nms_threshold": self.nms_threshold,
            "top_k": self.top_k,
            "keep_top_k": self.keep_top_k,
            "rows": self.rows,
        }


@register
class YoloDetectionOutput(keras.layers.Layer):
    """MobileNet-YOLO's YoloDetectionOutput (YOLO v2 region decoding) for one image, NHWC input
    (1, side, side, num_box * (5 + classes)).

    Each cell (j, i) and anchor n gives x = (i + sigmoid(t0)) / side, y = (j + sigmoid(t1)) / side,
    w = exp(t2) * bias_w / side, h = exp(t3) * bias_h / side and confidence = sigmoid(t4) * the
    highest softmax class score. Boxes with confidence >= threshold, best first, go through
    class-agnostic greedy NMS (dropped when IoU >= ``nms_threshold`` with a kept box). Rows are
    [0, class + 1, confidence, left, top, right, bottom] for the kept boxes, then padding rows
    [0, -1, ..., -1] up to one row per anchor box: the output is (1, 1, side * side * num_box, 7).

    Args:
        num_classes, num_box, biases, confidence_threshold, nms_threshold: the fork's
            ``yolo_detection_output_param`` (``biases``: anchor w, h pairs).
    """

    def __init__(self, num_classes, num_box, biases, confidence_threshold, nms_threshold, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.num_box = int(num_box)
        self.biases = tuple(float(b) for b in biases)
        self.confidence_threshold = float(confidence_threshold)
        self.nms_threshold = float(nms_threshold)

    def call(self, x):
        _, rows_, cols, channels = x.shape
        side = cols  # the layer takes its grid size from the width for both axes
        n_box, per_box = self.num_box, channels // self.num_box
        total = rows_ * cols * n_box
        t = ops.reshape(x[0], (rows_, cols, n_box, per_box))
        j = np.arange(rows_, dtype="float32").reshape(-1, 1, 1)
        i = np.arange(cols, dtype="float32").reshape(1, -1, 1)
        bias = np.asarray(self.biases[: 2 * n_box], dtype="float32").reshape(n_box, 2)
        bx = (i + ops.sigmoid(t[..., 0])) / side
        by = (j + ops.sigmoid(t[..., 1])) / side
        bw = ops.exp(t[..., 2]) * bias[:, 0] / side
        bh = ops.exp(t[..., 3]) * bias[:, 1] / side
        probs = ops.softmax(t[..., 5 : 5 + self.num_classes], axis=-1)
        confidence = ops.sigmoid(t[..., 4]) * ops.max(probs, axis=-1)
        label = ops.cast(ops.argmax(probs, axis=-1), "float32") + 1.0
        flat = [ops.reshape(v, (total,)) for v in (bx, by, bw, bh, confidence, label)]
        bx, by, bw, bh, confidence, label = flat
        masked = ops.where(confidence >= self.confidence_threshold, confidence, -1.0)
        score, order = ops.top_k(masked, total)
        valid = score >= self.confidence_threshold
        bx, by, bw, bh, label = (ops.take(v, order) for v in (bx, by, bw, bh, label))
        corners, area = _corners(bx, by, bw, bh), bw * bh
        overlaps = iou([c[:, None] for c in corners], [c[None] for c in corners], areas=(area[:, None], area[None]))
        conflict = overlaps >= self.nms_threshold
        keep = greedy_nms_matrix(valid, conflict)
        return _yolo_rows(keep, ops.arange(total), total, (bx, by, bw, bh, label, score))

    def compute_output_shape(self, s):
        return (1, 1, s[1] * s[2] * self.num_box, 7)

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "num_box": self.num_box,
            "biases": self.biases,
            "confidence_threshold": self.confidence_threshold,
            "nms_threshold": self.nms_threshold,
        }


@register
class Yolov3DetectionOutput(keras.layers.Layer):
    """MobileNet-YOLO's Yolov3DetectionOutput for one image; inputs NHWC (1, S_t, S_t,
    num_box * (5 + classes)), one per scale t.

    Anchor n of scale t uses bias pair ``mask[t * num_box / groups + n]``: x = (col +
    sigmoid(t0)) / S, y = (row + sigmoid(t1)) / S, w = exp(t2) * bias_w / (S * anchors_scale[t]),
    h likewise; every class whose sigmoid(score) * sigmoid(objectness) is above the threshold is a
    candidate. All candidates, best first, go through class-agnostic greedy NMS (dropped when
    IoU >= ``nms_threshold`` with a kept box). Rows [0, class + 1, confidence, left, top, right,
    bottom], padded with [0, -1, ..., -1] to one row per (cell, anchor, class).

    Args:
        num_classes, num_box, biases, anchors_scale, mask, confidence_threshold, nms_threshold: the fork's
            ``yolov3_detection_output_param``.
    """

    def __init__(self, num_classes, num_box, biases, anchors_scale, mask, confidence_threshold, nms_threshold,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.num_box = int(num_box)
        self.biases = tuple(float(b) for b in biases)
        self.anchors_scale = tuple(int(a) for a in anchors_scale)
        self.mask = tuple(int(m) for m in mask)
        self.confidence_threshold = float(confidence_threshold)
        self.nms_threshold = float(nms_threshold)

    def _candidates(self, x, t, offset):
        side = x.shape[2]
        n_box, length = self.num_box, 5 + self.num_classes
        v = ops.reshape(x[0], (x.shape[1], side, n_box, length))
        col = np.arange(side, dtype="float32").reshape(1, -1, 1)
        row = np.arange(x.shape[1], dtype="float32").reshape(-1, 1, 1)
        anchors = np.asarray([self.biases[2 * m : 2 * m + 2] for m in self.mask[offset : offset + n_box]], "float32")
        extent = float(side * self.anchors_scale[t])
        boxes = ops.stack(
            [
                (col + ops.sigmoid(v[..., 0])) / side,
                (row + ops.sigmoid(v[..., 1])) / side,
                ops.exp(v[..., 2]) * anchors[:, 0] / extent,
                ops.exp(v[..., 3]) * anchors[:, 1] / extent,
            ],
            axis=-1,
        )
        scores = ops.sigmoid(v[..., 5:]) * ops.sigmoid(v[..., 4:5])
        count = x.shape[1] * side * n_box * self.num_classes
        boxes = ops.reshape(ops.repeat(ops.expand_dims(boxes, -2), self.num_classes, axis=-2), (count, 4))
        labels = np.tile(np.arange(1, self.num_classes + 1, dtype="float32"), count // self.num_classes)
        return boxes, ops.reshape(scores, (count,)), labels

    def call(self, inputs):
        groups = len(self.mask) // len(inputs)
        parts = [self._candidates(x, t, t * groups) for t, x in enumerate(inputs)]
        boxes = ops.concatenate([p[0] for p in parts], axis=0)
        scores = ops.concatenate([p[1] for p in parts], axis=0)
        labels = np.concatenate([p[2] for p in parts])
        total = labels.size
        masked = ops.where(scores > self.confidence_threshold, scores, -1.0)
        score, order = ops.top_k(masked, total)
        valid = score > self.confidence_threshold
        boxes = ops.take(boxes, order, axis=0)
        label = ops.take(ops.convert_to_tensor(labels), order)
        bx, by, bw, bh = (boxes[:, k] for k in range(4))
        corners, area = _corners(bx, by, bw, bh), bw * bh

        def suppresses(k):
            return iou([c[k] for c in corners], corners, areas=(area[k], area)) >= self.nms_threshold

        keep = greedy_nms(valid, suppresses)
        return _yolo_rows(keep, ops.arange(total), total, (bx, by, bw, bh, label, score))

    def compute_output_shape(self, input_shapes):
        total = sum(s[1] * s[2] for s in input_shapes) * self.num_box * self.num_classes
        return (1, 1, total, 7)

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "num_box": self.num_box,
            "biases": self.biases,
            "anchors_scale": self.anchors_scale,
            "mask": self.mask,
            "confidence_threshold": self.confidence_threshold,
            "nms_threshold": self.nms_threshold,
        }


def _corners(bx, by, bw, bh):
    """YOLO's centre-size boxes as corners (left, top, right, bottom)."""
    return bx - bw / 2, by - bh / 2, bx + bw / 2, by + bh / 2


def _yolo_rows(keep, position, total, boxes):
    """The kept boxes, in order, as Caffe's (1, 1, total, 7) detection rows
    ``[image, label, score, xmin, ymin, xmax, ymax]``; the rest padded with -1."""
    rank = ops.sort(ops.where(keep, position, total))
    present = rank < total
    rank = ops.minimum(rank, total - 1)
    bx, by, bw, bh, label, score = (ops.take(v, rank) for v in boxes)
    rows = ops.stack([label, score, *_corners(bx, by, bw, bh)], axis=-1)
    rows = ops.where(present[:, None], rows, -1.0)
    rows = ops.concatenate([ops.zeros_like(rows[:, :1]), rows], axis=-1)
    return ops.reshape(rows, (1, 1, total, 7))
