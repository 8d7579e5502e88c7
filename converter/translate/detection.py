"""Detection heads: SSD's PriorBox (a constant blob of prior boxes) and DetectionOutput (box
decoding, per-class NMS), and MobileNet-YOLO's YoloDetectionOutput (region decoding,
class-agnostic NMS), each giving a fixed number of rows padded like Caffe's no-detection row."""

import math

from .._lazy import layers
from ..layout import CAFFE
from ..shapes import detection_rows, legacy_shape, prior_aspect_ratios
from . import translator


@translator("PriorBox")
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


@translator("DetectionOutput")
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


@translator("YoloDetectionOutput")
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


@translator("Yolov3DetectionOutput")
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
