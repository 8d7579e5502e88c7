"""Fork layers (SSD, YOLO, SegNet/ENet, PSPNet, ShuffleNet, SENet) compute what their Caffe forks
compute.

Golden: ``extensions`` (Normalize, Permute + Flatten, PriorBox, nearest Upsample,
BilinearInterpolate, PixelShuffle, Pad, ReLU6, HardSwish) on every layer top, and the
MobileNet-SSD replica whose DetectionOutput must give real Caffe's detections. The layers real
Caffe did not run here are pinned against transliterations of their fork's C++ loops.
"""

import math

import numpy as np
import pytest
from conftest import GOLDEN
from helpers import assert_close, build, check_golden, layer_values, model_inputs, run_net, run_outputs, write_net
from oracle import detections

EXTENSION_LAYERS = ["norm", "norm_shared", "loc_flat", "priors", "upsample", "interp", "pixelshuffle", "pad", "relu6", "hswish"]


def test_extensions_match_caffe_on_every_layer():
    errors = check_golden(GOLDEN / "extensions")
    compared = {key.split("/")[1] for key in errors if key.startswith("layer/")}
    assert set(EXTENSION_LAYERS) <= compared


def test_mobilenet_ssd_detections_match_caffe():
    net = GOLDEN / "zoo" / "mobilenet_ssd"
    errors = check_golden(net)
    assert "output/detection_out" in errors
    detections = np.load(net / "expected.npz")["layer/detection_out/detection_out"].reshape(-1, 7)
    # The reference is not a degenerate all-padding blob: both images detect, several labels.
    assert set(detections[:, 0]) == {0.0, 1.0}
    assert len(set(detections[:, 1])) > 2


def test_nms_chains_match_caffe_eager_and_compiled():
    """Greedy NMS over chains where each kept box decides which of the next ones survive, the
    model run eagerly and through Keras' compiled predict step. A suppression by every better box,
    kept or not, would keep one box per chain: real Caffe keeps a dozen."""
    net = GOLDEN / "nms_chains"
    expected = np.load(net / "expected.npz")
    inputs = {k[len("input/"):]: expected[k] for k in expected.files if k.startswith("input/")}
    conversion = build(net / "deploy.prototxt", net / "weights.caffemodel")
    eager = run_outputs(conversion, inputs)
    compiled = conversion.model.predict_on_batch(model_inputs(conversion, inputs))
    compiled = dict(zip(conversion.model.output_names, compiled))
    for name in ("det_shared", "det_per_class"):
        caffe = detections(expected[f"output/{name}"])
        chain = caffe[(caffe[:, 0] == 0) & (caffe[:, 1] == 1)]
        assert len(chain) > 10
        assert_close(detections(eager[name]), caffe, f"{name} eager")
        assert_close(detections(compiled[name]), caffe, f"{name} compiled")
    # Eager TensorFlow calls run the layer as a traced graph; other backends run its ops one by one.
    from caffe2keras.layers import DetectionOutput

    for layer in (la for la in conversion.model.layers if isinstance(la, DetectionOutput)):
        loc = inputs["loc" if layer.share_location else "loc_per_class"]
        args = [loc, inputs["conf"], inputs["priors"]]
        one_by_one = np.asarray(DetectionOutput._detect(layer, *args))
        assert np.array_equal(one_by_one, np.asarray(layer(args))), layer.name


def _darknet_reorg(x, stride, forward):
    """darknet's reorg_cpu, loop for loop, on the (N, C, H, W) bottom."""
    batch, c, h, w = x.shape
    flat, out = x.reshape(-1), np.zeros(x.size, x.dtype)
    out_c = c // (stride * stride)
    for b in range(batch):
        for k in range(c):
            for j in range(h):
                for i in range(w):
                    in_index = i + w * (j + h * (k + c * b))
                    c2, offset = k % out_c, k // out_c
                    w2, h2 = i * stride + offset % stride, j * stride + offset // stride
                    out_index = w2 + w * stride * (h2 + h * stride * (c2 + out_c * b))
                    if forward:
                        out[out_index] = flat[in_index]
                    else:
                        out[in_index] = flat[out_index]
    return out


@pytest.mark.parametrize("reverse", [False, True])
def test_reorg_follows_darknet_index_formula(tmp_path, reverse):
    text = f"""
    input: "data" input_shape {{ dim: 2 dim: 8 dim: 4 dim: 6 }}
    layer {{ name: "reorg" type: "Reorg" bottom: "data" top: "reorg" reorg_param {{ stride: 2 reverse: {str(reverse).lower()} }} }}
    """
    x = np.random.default_rng(0).standard_normal((2, 8, 4, 6)).astype(np.float32)
    conversion, values = run_net(tmp_path, text, {"data": x})
    got = values[("reorg", "reorg")]
    assert got.shape == ((2, 2, 8, 12) if reverse else (2, 32, 2, 3))
    assert_close(got.reshape(-1), _darknet_reorg(x, 2, reverse), "reorg")


def _fork_gelu(x):
    """The forks' gelu_layer.cpp: the tanh approximation, in double as its C++ promotes."""
    x = x.astype(np.float64)
    return 0.5 * x * (1 + np.tanh(0.7978845608 * x + 0.7978845608 * 0.044715 * x * x * x))


def _fork_mish(x):
    """The forks' mish_layer: x * tanh(log(1 + exp(x)))."""
    x = x.astype(np.float64)
    return x * np.tanh(np.log1p(np.exp(x)))


@pytest.mark.parametrize(("caffe_type", "transcript", "control"), [
    ("GELU", _fork_gelu, lambda x: 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))),
    ("Mish", _fork_mish, lambda x: x / (1 + np.exp(-x))),
])
def test_activations_the_oracle_lacks_follow_their_fork(tmp_path, caffe_type, transcript, control):
    """GELU and Mish come from Caffe forks the oracle's Caffe does not include (its 77 types have
    neither), so they are pinned against transcripts of the forks' formulas. Negative control:
    the erf GELU and Swish, their nearest neighbours, differ from them beyond the tolerance."""
    text = f"""
    input: "data" input_shape {{ dim: 2 dim: 3 dim: 4 dim: 5 }}
    layer {{ name: "act" type: "{caffe_type}" bottom: "data" top: "act" }}
    """
    # Within ±3 the erf GELU is 4.7e-4 off, beyond the tolerance of 1e-4 x max|y| (3e-4).
    x = np.linspace(-3, 3, 120, dtype=np.float32).reshape(2, 3, 4, 5)
    _, values = run_net(tmp_path, text, {"data": x})
    expected = transcript(x)
    assert_close(values[("act", "act")], expected, caffe_type)
    with pytest.raises(AssertionError):
        assert_close(control(x.astype(np.float64)), expected, f"{caffe_type} control")


def test_shuffle_channel_transposes_groups(tmp_path):
    text = """
    input: "data" input_shape { dim: 1 dim: 6 dim: 2 dim: 3 }
    layer { name: "shuffle" type: "ShuffleChannel" bottom: "data" top: "shuffle" shuffle_channel_param { group: 3 } }
    """
    x = np.random.default_rng(1).standard_normal((1, 6, 2, 3)).astype(np.float32)
    _, values = run_net(tmp_path, text, {"data": x})
    # Channels (group, C/group) -> (C/group, group): 0 2 4 1 3 5.
    assert_close(values[("shuffle", "shuffle")], x[:, [0, 2, 4, 1, 3, 5]], "shuffle")


def test_axpy_scales_its_second_bottom(tmp_path):
    text = """
    input: "a" input_shape { dim: 2 dim: 3 dim: 1 dim: 1 }
    input: "x" input_shape { dim: 2 dim: 3 dim: 4 dim: 5 }
    input: "y" input_shape { dim: 2 dim: 3 dim: 4 dim: 5 }
    layer { name: "axpy" type: "Axpy" bottom: "a" bottom: "x" bottom: "y" top: "out" }
    """
    rng = np.random.default_rng(2)
    a, x, y = (rng.standard_normal(s).astype(np.float32) for s in [(2, 3, 1, 1), (2, 3, 4, 5), (2, 3, 4, 5)])
    _, values = run_net(tmp_path, text, {"a": a, "x": x, "y": y})
    assert_close(values[("axpy", "out")], a * x + y, "axpy")


def _caffe_interp(x, out_h, out_w, pad_beg=0, pad_end=0):
    """PSPNet's caffe_cpu_interp2 (align corners), in float32 like Caffe."""
    n, c, h, w = x.shape
    hs, ws = h + pad_beg + pad_end, w + pad_beg + pad_end
    y = np.zeros((n, c, out_h, out_w), np.float32)
    rh = np.float32(hs - 1) / np.float32(out_h - 1) if out_h > 1 else np.float32(0)
    rw = np.float32(ws - 1) / np.float32(out_w - 1) if out_w > 1 else np.float32(0)
    for h2 in range(out_h):
        h1r = np.float32(rh * np.float32(h2))
        h1 = int(h1r)
        h1p = 1 if h1 < hs - 1 else 0
        l1 = np.float32(h1r - h1)
        for w2 in range(out_w):
            w1r = np.float32(rw * np.float32(w2))
            w1 = int(w1r)
            w1p = 1 if w1 < ws - 1 else 0
            k1 = np.float32(w1r - w1)
            p = x[:, :, h1 - pad_beg :, w1 - pad_beg :]
            y[:, :, h2, w2] = (1 - l1) * ((1 - k1) * p[:, :, 0, 0] + k1 * p[:, :, 0, w1p]) + l1 * (
                (1 - k1) * p[:, :, h1p, 0] + k1 * p[:, :, h1p, w1p]
            )
    return y


@pytest.mark.parametrize(
    "param, size",
    [("zoom_factor: 3", (13, 16)), ("shrink_factor: 2", (3, 3)), ("height: 9 width: 4", (9, 4)),
     ("zoom_factor: 2 pad_beg: -1 pad_end: -1", (5, 7))],
)
def test_interp_sizes_and_align_corners_bilinear(tmp_path, param, size):
    text = f"""
    input: "data" input_shape {{ dim: 2 dim: 3 dim: 5 dim: 6 }}
    layer {{ name: "interp" type: "Interp" bottom: "data" top: "interp" interp_param {{ {param} }} }}
    """
    x = np.random.default_rng(3).standard_normal((2, 3, 5, 6)).astype(np.float32)
    _, values = run_net(tmp_path, text, {"data": x})
    got = values[("interp", "interp")]
    assert got.shape[2:] == size
    pad = -1 if "pad_beg" in param else 0
    assert_close(got, _caffe_interp(x, *size, pad_beg=pad, pad_end=pad), "interp")


def _caffe_max_pool_mask(x, k, s):
    n, c, h, w = x.shape
    oh, ow = -(-(h - k) // s) + 1, -(-(w - k) // s) + 1
    pooled, mask = np.zeros((n, c, oh, ow), np.float32), np.zeros((n, c, oh, ow), np.float32)
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * s, j * s
            he, we = min(hs + k, h), min(ws + k, w)
            win = x[:, :, hs:he, ws:we].reshape(n, c, -1)
            arg = win.argmax(-1)  # first maximum in row-major scan, as Caffe's strict >
            pooled[:, :, i, j] = win.max(-1)
            mask[:, :, i, j] = (hs + arg // (we - ws)) * w + ws + arg % (we - ws)
    return pooled, mask


def test_segnet_unpooling_puts_values_back_at_the_argmax(tmp_path):
    text = """
    input: "data" input_shape { dim: 2 dim: 3 dim: 7 dim: 8 }
    layer { name: "pool" type: "Pooling" bottom: "data" top: "pool" top: "mask" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
    layer { name: "up" type: "Upsample" bottom: "pool" bottom: "mask" top: "up" upsample_param { scale: 2 upsample_h: 7 upsample_w: 8 } }
    """
    x = np.random.default_rng(4).standard_normal((2, 3, 7, 8)).astype(np.float32)
    _, values = run_net(tmp_path, text, {"data": x})
    pooled, mask = _caffe_max_pool_mask(x, 2, 2)
    assert_close(values[("pool", "pool")], pooled, "pool")
    assert_close(values[("pool", "mask")], mask, "mask")
    expected = np.zeros_like(x).reshape(2, 3, -1)
    np.put_along_axis(expected, mask.reshape(2, 3, -1).astype(np.int64), pooled.reshape(2, 3, -1), axis=-1)
    assert_close(values[("up", "up")], expected.reshape(x.shape), "upsample")


def test_bn_variants(tmp_path):
    """PSPNet's four-blob BN uses its stored statistics; SegNet's INFERENCE BN is scale and
    shift; SegNet/ENet's LEARN BN normalises by the batch it is given."""
    from oracle import random_caffemodel

    text = """
    input: "data" input_shape { dim: 2 dim: 3 dim: 4 dim: 5 }
    layer { name: "psp" type: "BN" bottom: "data" top: "psp" bn_param { slope_filler { value: 1 } bias_filler { value: 0 } eps: 1e-5 } }
    layer { name: "infer" type: "BN" bottom: "data" top: "infer" bn_param { bn_mode: INFERENCE } }
    layer { name: "learn" type: "BN" bottom: "data" top: "learn" }
    """
    proto, _ = write_net(tmp_path, text)
    model = tmp_path / "net.caffemodel"
    random_caffemodel(proto, model)
    from caffe2keras import caffemodel

    blobs = {k: [b.reshape(1, 3, 1, 1) for b in v] for k, v in caffemodel.load(model).layers.items()}
    x = np.random.default_rng(5).standard_normal((2, 3, 4, 5)).astype(np.float32)
    values = layer_values(build(proto, model), {"data": x})
    slope, bias, mean, var = blobs["psp"]
    assert_close(values[("psp", "psp")], slope * (x - mean) / np.sqrt(var + 1e-5) + bias, "PSPNet BN")
    scale, shift = blobs["infer"]
    assert_close(values[("infer", "infer")], scale * x + shift, "SegNet INFERENCE BN")
    scale, shift = blobs["learn"]
    mu = x.mean(axis=(0, 2, 3), keepdims=True)
    sigma2 = (x**2).mean(axis=(0, 2, 3), keepdims=True) - mu**2
    assert_close(values[("learn", "learn")], scale * (x - mu) / np.sqrt(sigma2 + 1e-9) + shift, "LEARN BN")


def test_detection_output_pads_with_caffes_no_detection_rows(tmp_path):
    """Nothing above the threshold: every row is Caffe's [image, -1, -1, ...] row."""
    text = """
    input: "loc" input_shape { dim: 2 dim: 16 }
    input: "conf" input_shape { dim: 2 dim: 12 }
    input: "priors" input_shape { dim: 1 dim: 2 dim: 16 }
    layer { name: "det" type: "DetectionOutput" bottom: "loc" bottom: "conf" bottom: "priors" top: "det"
      detection_output_param { num_classes: 3 nms_param { nms_threshold: 0.45 top_k: 4 } keep_top_k: 3
        code_type: CENTER_SIZE confidence_threshold: 0.9 } }
    """
    rng = np.random.default_rng(6)
    priors = np.concatenate([np.sort(rng.uniform(0, 1, (4, 2, 2)), axis=1).transpose(0, 2, 1).reshape(-1),
                             np.full(16, 0.1)]).reshape(1, 2, 16).astype(np.float32)
    inputs = {"loc": rng.standard_normal((2, 16)).astype(np.float32),
              "conf": np.full((2, 12), 1 / 3, np.float32), "priors": priors}
    conversion, values = run_net(tmp_path, text, inputs)
    rows = values[("det", "det")]
    assert rows.shape == (1, 1, 6, 7)
    expected = np.full((6, 7), -1.0, np.float32)
    expected[:, 0] = [0, 0, 0, 1, 1, 1]
    assert_close(rows.reshape(6, 7), expected, "padding rows")


def _yolo_v2_detections(x, num_classes, num_box, biases, threshold, nms_threshold):
    """MobileNet-YOLO's YoloDetectionOutputLayer::Forward_cpu, transliterated, for one image."""
    _, c, h, w = x.shape
    side, per_box = w, c // num_box
    sigmoid = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    predicts = []
    for j in range(side):
        for i in range(side):
            for n in range(num_box):
                t = x[0, n * per_box : (n + 1) * per_box, j, i].astype(np.float64)
                e = np.exp(t[5 : 5 + num_classes] - t[5 : 5 + num_classes].max())
                probs = e / e.sum()
                conf = sigmoid(t[4]) * probs.max()
                box = ((i + sigmoid(t[0])) / side, (j + sigmoid(t[1])) / side,
                       np.exp(t[2]) * biases[2 * n] / side, np.exp(t[3]) * biases[2 * n + 1] / side)
                if conf >= threshold:
                    predicts.append((conf, int(probs.argmax()), box))
    predicts.sort(key=lambda p: -p[0])

    def overlap(x1, w1, x2, w2):
        return min(x1 + w1 / 2, x2 + w2 / 2) - max(x1 - w1 / 2, x2 - w2 / 2)

    dropped = set()
    for a in range(len(predicts) - 1):
        if a in dropped:
            continue
        for b in range(a + 1, len(predicts)):
            if b in dropped:
                continue
            (ax, ay, aw, ah), (bx, by, bw, bh) = predicts[a][2], predicts[b][2]
            iw, ih = overlap(ax, aw, bx, bw), overlap(ay, ah, by, bh)
            inter = 0.0 if iw < 0 or ih < 0 else iw * ih
            if inter / (aw * ah + bw * bh - inter) >= nms_threshold:
                dropped.add(b)
    return np.asarray([[0, cls + 1, conf, bx - bw / 2, by - bh / 2, bx + bw / 2, by + bh / 2]
                       for k, (conf, cls, (bx, by, bw, bh)) in enumerate(predicts) if k not in dropped])


def test_yolo_v2_detection_output_follows_mobilenet_yolo(tmp_path):
    biases = [1.08, 1.19, 3.42, 4.41, 6.63, 11.38]
    text = f"""
    input: "data" input_shape {{ dim: 1 dim: 24 dim: 5 dim: 5 }}
    layer {{ name: "det" type: "YoloDetectionOutput" bottom: "data" top: "det"
      yolo_detection_output_param {{ num_classes: 3 num_box: 3 coords: 4 confidence_threshold: 0.2
        nms_threshold: 0.45 {" ".join(f"biases: {b}" for b in biases)} }} }}
    """
    x = (2.0 * np.random.default_rng(7).standard_normal((1, 24, 5, 5))).astype(np.float32)
    conversion, values = run_net(tmp_path, text, {"data": x})
    rows = values[("det", "det")].reshape(-1, 7)
    assert rows.shape == (75, 7)
    compiled = np.asarray(conversion.model.predict_on_batch(model_inputs(conversion, {"data": x}))).reshape(-1, 7)
    expected = _yolo_v2_detections(x, 3, 3, biases, 0.2, 0.45)
    assert 3 < len(expected) < 60  # enough detections, and some suppressed or below threshold
    padding = np.full((75 - len(expected), 7), -1.0)
    padding[:, 0] = 0
    for what, got in (("eager", rows), ("compiled", compiled)):
        assert_close(got[: len(expected)], expected, f"{what} detections")
        assert_close(got[len(expected):], padding, f"{what} padding rows")


def _yolo_v3_detections(xs, num_classes, num_box, biases, anchors_scale, mask, threshold, nms_threshold):
    """MobileNet-YOLO's Yolov3DetectionOutputLayer::Forward_cpu, transliterated, for one image."""
    sigmoid = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    length, groups = 5 + num_classes, len(mask) // len(xs)
    predicts = []
    for t, x in enumerate(xs):
        side = x.shape[3]
        for s in range(side * side):
            row, col = divmod(s, side)
            for n in range(num_box):
                v = x[0, n * length : (n + 1) * length, row, col].astype(np.float64)
                m = mask[n + t * groups]
                box = ((col + sigmoid(v[0])) / side, (row + sigmoid(v[1])) / side,
                       np.exp(v[2]) * biases[2 * m] / (side * anchors_scale[t]),
                       np.exp(v[3]) * biases[2 * m + 1] / (side * anchors_scale[t]))
                for c in range(num_classes):
                    score = sigmoid(v[5 + c]) * sigmoid(v[4])
                    if score > threshold:
                        predicts.append((score, c, box))
    predicts.sort(key=lambda p: -p[0])
    kept = []
    for conf, cls, (bx, by, bw, bh) in predicts:
        def iou(other):
            ox, oy, ow, oh = other
            iw = min(bx + bw / 2, ox + ow / 2) - max(bx - bw / 2, ox - ow / 2)
            ih = min(by + bh / 2, oy + oh / 2) - max(by - bh / 2, oy - oh / 2)
            inter = 0.0 if iw < 0 or ih < 0 else iw * ih
            return inter / (bw * bh + ow * oh - inter)

        if all(iou(k[2]) < nms_threshold for k in kept):
            kept.append((conf, cls, (bx, by, bw, bh)))
    return np.asarray([[0, cls + 1, conf, bx - bw / 2, by - bh / 2, bx + bw / 2, by + bh / 2]
                       for conf, cls, (bx, by, bw, bh) in kept])


def test_yolo_v3_detection_output_follows_mobilenet_yolo(tmp_path):
    biases = [10, 14, 23, 27, 37, 58, 81, 82, 135, 169, 344, 319]
    text = f"""
    input: "a" input_shape {{ dim: 1 dim: 21 dim: 3 dim: 3 }}
    input: "b" input_shape {{ dim: 1 dim: 21 dim: 6 dim: 6 }}
    layer {{ name: "det" type: "Yolov3DetectionOutput" bottom: "a" bottom: "b" top: "det"
      yolov3_detection_output_param {{ num_classes: 2 num_box: 3 confidence_threshold: 0.3 nms_threshold: 0.45
        {" ".join(f"biases: {b}" for b in biases)} anchors_scale: 32 anchors_scale: 16 mask_group_num: 2
        mask: 3 mask: 4 mask: 5 mask: 0 mask: 1 mask: 2 }} }}
    """
    rng = np.random.default_rng(8)
    a = (1.5 * rng.standard_normal((1, 21, 3, 3))).astype(np.float32)
    b = (1.5 * rng.standard_normal((1, 21, 6, 6))).astype(np.float32)
    _, values = run_net(tmp_path, text, {"a": a, "b": b})
    rows = values[("det", "det")].reshape(-1, 7)
    total = (9 + 36) * 3 * 2
    assert rows.shape == (total, 7)
    expected = _yolo_v3_detections([a, b], 2, 3, biases, [32, 16], [3, 4, 5, 0, 1, 2], 0.3, 0.45)
    assert 3 < len(expected) < total // 2
    assert_close(rows[: len(expected)], expected, "detections")
    assert (rows[len(expected):, 1] == -1).all()
