"""Detection heads: SSD's PriorBox (a constant blob of prior boxes) and DetectionOutput (box
decoding, per-class NMS), and MobileNet-YOLO's YoloDetectionOutput (region decoding,
class-agnostic NMS), each giving a fixed number of rows padded like Caffe's no-detection row."""

import math

from .._lazy import layers
from ..errors import ConversionError
from ..layout import CAFFE
from ..shapes import legacy_shape, needs_4d
from ..spec import register


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


def shape_prior_box(node, bottoms):
    _, _, h, w = legacy_shape(bottoms[0], "PriorBox")
    return [(1, 2, h * w * priors_per_cell(node.param.prior_box_param) * 4)]


@register("PriorBox", shape=shape_prior_box,
          fixed_because="its boxes are laid out for one feature-map and image size")
def prior_box(ctx, node, inputs):
    p = node.param.prior_box_param
    feature, image = inputs[0], inputs[1] if len(inputs) > 1 else None
    # Caffe reads both bottoms' sizes with its legacy height()/width(): 1 past a blob's last axis.
    fh, fw = legacy_shape(feature.shape, "PriorBox")[2:]
    if p.HasField("img_h") or p.HasField("img_w"):
        ih, iw = p.img_h, p.img_w
    elif p.HasField("img_size"):
        ih = iw = p.img_size
    elif image is not None:
        ih, iw = legacy_shape(image.shape, "PriorBox")[2:]
    else:
        raise ctx.fail(node, "PriorBox needs the image as second bottom, or img_size / img_h and img_w")
    if p.HasField("step_h") or p.HasField("step_w"):
        sh, sw = p.step_h, p.step_w
    elif p.HasField("step"):
        sh = sw = p.step
    else:
        sh, sw = ih / fh, iw / fw
    if len(p.variance) not in (0, 1, 4):
        raise ctx.fail(node, f"PriorBox needs 1 or 4 variances, got {len(p.variance)}")
    layer = layers.PriorBox(
        feature_hw=(fh, fw),
        image_hw=(ih, iw),
        step_hw=(sh, sw),
        offset=p.offset,
        min_sizes=list(p.min_size),
        max_sizes=list(p.max_size),
        aspect_ratios=prior_aspect_ratios(p),
        clip=p.clip,
        variances=list(p.variance),
        name=ctx.name(node),
    )
    # The priors depend on sizes only; the image is an input all the same, so the layer making it
    # stays in the model (see Crop).
    return [layer([feature.value] + ([image.value] if image is not None else []))]


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


def shape_detection_output(node, bottoms):
    if len(bottoms) != 3:
        raise ConversionError("DetectionOutput needs three bottoms (loc, conf, priors)")
    return [(1, 1, bottoms[0][0] * detection_rows(node, bottoms), 7)]


@register("DetectionOutput", shape=shape_detection_output)
def detection_output(ctx, node, inputs):
    p = node.param.detection_output_param
    nms = p.nms_param
    if nms.eta != 1.0:
        raise ctx.fail(node, f"adaptive NMS (eta {nms.eta}) is not supported")
    loc, conf, priors = inputs
    num_priors = priors.shape[2] // 4
    n_loc = 1 if p.share_location else p.num_classes
    if math.prod(loc.shape[1:]) != num_priors * n_loc * 4:
        raise ctx.fail(node, f"loc {list(loc.shape)} does not hold {n_loc} box(es) for each of {num_priors} priors")
    if math.prod(conf.shape[1:]) != num_priors * p.num_classes:
        raise ctx.fail(
            node, f"conf {list(conf.shape)} does not hold {p.num_classes} scores for each of {num_priors} priors"
        )
    top_k = nms.top_k if nms.HasField("top_k") and nms.top_k > -1 else num_priors
    layer = layers.DetectionOutput(
        num_classes=p.num_classes,
        share_location=p.share_location,
        background_label_id=p.background_label_id,
        code_type=p.DESCRIPTOR.fields_by_name["code_type"].enum_type.values_by_number[p.code_type].name,
        variance_encoded_in_target=p.variance_encoded_in_target,
        # Without a threshold Caffe takes every score above -FLT_MAX.
        confidence_threshold=p.confidence_threshold if p.HasField("confidence_threshold") else -3.4028235e38,
        nms_threshold=nms.nms_threshold,
        top_k=min(top_k, num_priors),
        keep_top_k=p.keep_top_k,
        rows=detection_rows(node, [t.shape for t in inputs]),
        name=ctx.name(node, layout=CAFFE),
    )
    return [(layer([ctx.caffe(loc, node), ctx.caffe(conf, node), ctx.caffe(priors, node)]), CAFFE)]


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


@register("YoloDetectionOutput", shape=shape_yolo_detection_output,
          fixed_because="its rows are the cells of one grid size")
def yolo_detection_output(ctx, node, inputs):
    p = node.param.yolo_detection_output_param
    layer = layers.YoloDetectionOutput(
        num_classes=p.num_classes,
        num_box=p.num_box,
        biases=list(p.biases),
        confidence_threshold=p.confidence_threshold,
        nms_threshold=p.nms_threshold,
        name=ctx.name(node, layout=CAFFE),
    )
    return [(layer(ctx.canonical(inputs[0], node)), CAFFE)]


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


@register("Yolov3DetectionOutput", shape=shape_yolov3_detection_output,
          fixed_because="its rows are the cells of one grid size per scale")
def yolov3_detection_output(ctx, node, inputs):
    p = node.param.yolov3_detection_output_param
    layer = layers.Yolov3DetectionOutput(
        num_classes=p.num_classes,
        num_box=p.num_box,
        biases=list(p.biases),
        anchors_scale=list(p.anchors_scale),
        mask=list(p.mask),
        confidence_threshold=p.confidence_threshold,
        nms_threshold=p.nms_threshold,
        name=ctx.name(node, layout=CAFFE),
    )
    return [(layer([ctx.canonical(x, node) for x in inputs]), CAFFE)]
