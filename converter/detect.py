"""Detections from a converted two-stage detector (Faster R-CNN, R-FCN), made as py-faster-rcnn's
test code makes them: each class's box deltas applied to every proposal (its bbox_transform_inv,
on the proposals scaled back to the image) and clipped to the image; then per class, the boxes
scoring at least ``threshold``, best first, through NMS dropping IoU > ``nms`` (demo.py: 0.8,
0.3). ``caffe2keras predict`` calls :func:`detect` for models holding a proposal layer.

The image is scaled to fit the model's input (aspect kept) and padded at the bottom and right
with what the model's baked mean subtracts to zero, as py-faster-rcnn pads its image batches;
im_info is (scaled height, scaled width, scale).
"""

from dataclasses import dataclass

import numpy as np

from . import depth
from .errors import ConversionError


@dataclass
class Detection:
    index: int  # class index (0 is the background)
    label: str
    score: float
    box: tuple  # x1, y1, x2, y2 in the image's pixels


def detector(model):
    """A model on ``model``'s inputs giving cls_prob, bbox_pred, the rois and how many are
    proposals (the padding rows after them are -1)."""
    import keras

    from .layers.rcnn import find_proposal

    outputs = dict(zip(model.output_names, model.outputs))
    missing = [name for name in ("cls_prob", "bbox_pred") if name not in outputs]
    if missing:
        raise ConversionError(f"the detector has no output named {' or '.join(missing)} (outputs: {', '.join(outputs)})")
    rois, _, count = find_proposal(model).output
    return depth.call(keras.Model, model.inputs, [outputs["cls_prob"], outputs["bbox_pred"], rois, count])


def class_deltas(bbox_pred, classes):
    """(R, classes, 4) deltas: one set per class, or R-FCN's class-agnostic (background,
    object) pair with the object's deltas for every class."""
    rows, width = bbox_pred.shape
    if width == 4 * classes:
        return bbox_pred.reshape(rows, classes, 4)
    if width == 8:
        return np.repeat(bbox_pred[:, None, 4:8], classes, axis=1)
    raise ConversionError(f"bbox_pred has {width} columns, neither 4 per class ({classes} classes) nor 8 (agnostic)")


def detections(cls_prob, bbox_pred, rois, image_hw, scale=1.0, threshold=0.8, nms=0.3):
    """Rows [class, score, x1, y1, x2, y2] (float32), by class, then best first: what
    py-faster-rcnn's test code keeps for these proposals (``rois`` without padding rows)."""
    from keras import ops

    from .layers.rcnn import apply_deltas, clip_boxes, pixel_nms

    classes = cls_prob.shape[1]
    boxes = (rois[:, 1:5].astype(np.float64) / scale).astype(np.float32)
    deltas = class_deltas(np.asarray(bbox_pred, np.float32), classes)
    height, width = (float(v) for v in image_hw)
    rows = []
    for c in range(1, classes):
        scores = np.asarray(cls_prob[:, c], np.float32)
        order = np.argsort(-scores, kind="stable")
        corners = clip_boxes(*apply_deltas(boxes[order], deltas[order, c]), height, width)
        corners = [ops.convert_to_numpy(v) for v in corners]
        keep = ops.convert_to_numpy(pixel_nms(*corners, scores[order] >= threshold, nms))
        for i in np.flatnonzero(keep):
            rows.append([c, scores[order[i]], *(v[i] for v in corners)])
    return np.asarray(rows, np.float32).reshape(-1, 6)


def fit_image(path, height, width, channels, pad):
    """The image at ``path`` (RGB) scaled (bilinear) to fit height x width with its aspect kept,
    placed top-left on a canvas of ``pad``; returns (canvas, scaled height, scaled width, scale,
    the image's own height and width)."""
    import tensorflow as tf

    from .predict import decode_image

    image = decode_image(path, channels)
    h, w = int(image.shape[0]), int(image.shape[1])
    scale = min(height / h, width / w)
    size = (max(1, min(height, round(h * scale))), max(1, min(width, round(w * scale))))
    scaled = tf.image.resize(image, size, method="bilinear").numpy()
    canvas = np.empty((height, width, channels), np.float32)
    canvas[...] = pad
    canvas[: size[0], : size[1]] = np.clip(scaled, 0.0, 255.0)
    return canvas, size[0], size[1], scale, (h, w)


def detect(model, image_path, labels=None, threshold=0.8, nms=0.3):
    """Detections in one image: ``(detections, notes)``; notes are warnings for the user."""
    from . import preprocess
    from .predict import model_pixels

    images = [t for t in model.inputs if len(t.shape) == 4]
    others = [t for t in model.inputs if len(t.shape) != 4]
    if len(images) != 1 or len(others) != 1 or tuple(others[0].shape[1:]) != (3,):
        shapes = ", ".join(str(tuple(i.shape)) for i in model.inputs)
        raise ConversionError(f"a detector takes one image and im_info (N, 3); this one takes {shapes}")
    _, height, width, channels = (int(d) if d is not None else None for d in images[0].shape)
    notes = []
    config = preprocess.find(model)
    pad = 0.0
    if config is None:
        notes.append("the model has no baked preprocessing (convert with --mean 102.9801,115.9465,122.7717 "
                     "for py-faster-rcnn's models): it is fed raw BGR pixels 0-255")
    elif config["mean"] is not None:
        pad = np.asarray(config["mean"], np.float32)[::-1]  # Caffe's BGR mean, as RGB canvas pixels
    canvas, h, w, scale, image_hw = fit_image(image_path, height, width, channels, pad)
    feed = {images[0].name: model_pixels(model, canvas)[None], others[0].name: np.array([[h, w, scale]], np.float32)}
    from keras import ops

    outputs = detector(model)([feed[t.name] for t in model.inputs])
    cls_prob, bbox_pred, rois, count = (ops.convert_to_numpy(v) for v in outputs)
    n = int(count[0])
    rows = detections(cls_prob[:n], bbox_pred[:n], rois[:n], image_hw, scale, threshold, nms)
    if labels is not None and len(labels) != cls_prob.shape[1]:
        notes.append(f"{len(labels)} labels for {cls_prob.shape[1]} classes")
    found = [
        Detection(int(c), labels[int(c)] if labels and int(c) < len(labels) else "", float(s), tuple(float(v) for v in box))
        for c, s, *box in rows
    ]
    return sorted(found, key=lambda d: -d.score), notes


def format_table(found):
    lines = [f"{'score':>9}  {'class':>5}  {'x1':>7} {'y1':>7} {'x2':>7} {'y2':>7}  label"]
    for d in found:
        x1, y1, x2, y2 = d.box
        lines.append(f"{d.score:>9.4f}  {d.index:>5}  {x1:>7.1f} {y1:>7.1f} {x2:>7.1f} {y2:>7.1f}  {d.label}".rstrip())
    if not found:
        lines.append("(no detection above the threshold)")
    return "\n".join(lines)
