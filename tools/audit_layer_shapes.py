"""One layer of each type over bottoms of 1 to 5 axes, through real Caffe and the converter.

    python tools/audit_layer_shapes.py [SUBSTRING]     # only the cases whose name contains it

Each case is a net ``Input -> one layer`` (a few parameter variants per type). Real Caffe (the
oracle) decides: it runs the net or refuses it. The converter must then agree: the same top
shape and values within the project tolerance, or a one-line ConversionError where Caffe
refuses. Printed: every case where they disagree, then a count per outcome. Outcomes:

    match / refused-both          agreement
    MISMATCH                      Caffe ran it; the converter's shape or values differ
    INTERNAL                      the converter failed with an internal error (exit 1)
    refused (Caffe ran it)        a documented limit of the converter (e.g. 3-D convolution)
    converts (Caffe refuses)      a leniency
"""

import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import caffe_oracle  # noqa: E402

SHAPES = {1: [6], 2: [2, 6], 3: [2, 4, 6], 4: [2, 4, 6, 5], 5: [2, 4, 3, 2, 5]}
ELEMENTWISE = ["ReLU", "Sigmoid", "TanH", "AbsVal", "BNLL", "ELU", "Power", "Exp", "Log", "Threshold", "Dropout",
               "ReLU6", "HardSigmoid", "HardSwish", "PReLU", "BatchNorm", "MVN", "LRN", "Normalize", "Softmax", "Split"]


def cases():
    """(name, layer text, tops, two bottoms) for every variant; each runs over ranks 1 to 5."""
    out = [(t.lower(), f'type: "{t}"', 1, False) for t in ELEMENTWISE]
    out += [
        ("prelu_shared", 'type: "PReLU" prelu_param { channel_shared: true }', 1, False),
        ("mvn_across", 'type: "MVN" mvn_param { across_channels: true }', 1, False),
        ("lrn_within", 'type: "LRN" lrn_param { norm_region: WITHIN_CHANNEL }', 1, False),
        ("softmax_m1", 'type: "Softmax" softmax_param { axis: -1 }', 1, False),
        ("reshape_flat", 'type: "Reshape" reshape_param { shape { dim: 0 dim: -1 } }', 1, False),
        ("argmax", 'type: "ArgMax"', 1, False),
        ("argmax_k2v", 'type: "ArgMax" argmax_param { top_k: 2 out_max_val: true }', 1, False),
        ("eltwise_prod", 'type: "Eltwise" eltwise_param { operation: PROD }', 1, True),
        ("scale_blob0", 'type: "Scale" scale_param { axis: 0 }', 1, True),
        ("crop1", 'type: "Crop" crop_param { axis: 1 }', 1, True),
        ("perm_swap", 'type: "Permute" permute_param { order: 0 order: 2 order: 1 }', 1, False),
        ("pool", 'type: "Pooling" pooling_param { kernel_size: 2 }', 1, False),
        ("conv", 'type: "Convolution" convolution_param { num_output: 3 kernel_size: 1 }', 1, False),
        ("deconv", 'type: "Deconvolution" convolution_param { num_output: 3 kernel_size: 1 }', 1, False),
        ("embed", 'type: "Embed" embed_param { input_dim: 4 num_output: 3 }', 1, False),
        ("upsample", 'type: "Upsample" upsample_param { scale: 2 }', 1, False),
        ("pad", 'type: "Pad" pad_param { pad_u: 1 pad_l: 2 }', 1, False),
        ("pixelshuffle", 'type: "PixelShuffle" pixelshuffle_param { upscale_factor: 2 }', 1, False),
        ("bilinear", 'type: "BilinearInterpolate" bilinear_interpolate_param { dst_h: 7 dst_w: 9 align_corners: true }',
         1, False),
        ("priorbox", 'type: "PriorBox" prior_box_param { min_size: 2 aspect_ratio: 2 img_size: 20 }', 1, False),
    ]
    for axis in (0, 1, 2, 3, -1):
        out.append((f"ip_ax{axis}", f'type: "InnerProduct" inner_product_param {{ num_output: 3 axis: {axis} }}', 1, False))
    for start, end in ((1, -1), (0, -1), (2, -1), (1, 2), (3, 1)):
        out.append((f"flatten_{start}_{end}", f'type: "Flatten" flatten_param {{ axis: {start} end_axis: {end} }}', 1, False))
    for axis in (0, 1, -1):
        out += [
            (f"concat_ax{axis}", f'type: "Concat" concat_param {{ axis: {axis} }}', 1, True),
            (f"slice_ax{axis}", f'type: "Slice" slice_param {{ axis: {axis} }}', 2, False),
            (f"tile_ax{axis}", f'type: "Tile" tile_param {{ axis: {axis} tiles: 2 }}', 1, False),
            (f"reduction_ax{axis}", f'type: "Reduction" reduction_param {{ axis: {axis} operation: SUMSQ }}', 1, False),
            (f"argmax_ax{axis}", f'type: "ArgMax" argmax_param {{ axis: {axis} top_k: 2 }}', 1, False),
        ]
    for axis, num_axes in ((1, 1), (0, -1), (1, -1), (-1, 1), (2, 1)):
        out.append((f"scale_{axis}_{num_axes}",
                    f'type: "Scale" scale_param {{ axis: {axis} num_axes: {num_axes} bias_term: true }}', 1, False))
    return [(f"{name}_r{rank}", rank, body, tops, two) for name, body, tops, two in out for rank in SHAPES]


def prototxt(name, rank, body, tops, two):
    dims = " ".join(f"dim: {d}" for d in SHAPES[rank])
    inputs = ["data", "data2"] if two else ["data"]
    head = "".join(f'input: "{b}"\ninput_shape {{ {dims} }}\n' for b in inputs)
    bottoms = " ".join(f'bottom: "{b}"' for b in inputs)
    top_list = " ".join(f'top: "t{i}"' for i in range(tops))
    return f'name: "{name}"\n{head}layer {{ name: "L" {body} {bottoms} {top_list} }}\n'


def feeds(name, rank, two):
    rng = np.random.RandomState(3)
    x = rng.normal(size=SHAPES[rank]).astype(np.float32)
    if name.startswith("embed"):
        x = rng.randint(0, 4, SHAPES[rank]).astype(np.float32)
    elif name.startswith("argmax"):
        x = np.maximum(x, 0)  # ties at 0
    out = {"data": x}
    if two:
        out["data2"] = rng.normal(size=SHAPES[rank]).astype(np.float32)
    return out


def main(argv):
    from caffe2keras.errors import ConversionError, InternalError
    from helpers import assert_close, build, layer_values

    if caffe_oracle.interpreter() is None:
        sys.exit(f"error: {caffe_oracle.missing_reason()}")
    selected = [c for c in cases() if not argv or argv[0] in c[0]]
    tally = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        jobs = []
        for name, rank, body, tops, two in selected:
            text = prototxt(name, rank, body, tops, two)
            (Path(tmp) / f"{name}.prototxt").write_text(text)
            jobs.append(caffe_oracle.Job(prototxt=text, inputs=feeds(name, rank, two), seed=5, randomize=True,
                                         save_weights=str(Path(tmp) / f"{name}.caffemodel")))
        for (name, rank, *_), result in zip(selected, caffe_oracle.forward(jobs)):
            proto, weights = Path(tmp) / f"{name}.prototxt", Path(tmp) / f"{name}.caffemodel"
            caffe_ran = not isinstance(result, caffe_oracle.OracleError)
            try:
                conversion = build(proto, weights if caffe_ran else None)
                if not caffe_ran:
                    outcome, detail = "converts (Caffe refuses)", str(result)[:120]
                else:
                    ours = layer_values(conversion, {k[6:]: v for k, v in result.arrays.items() if k.startswith("input/")})
                    for key, value in result.arrays.items():
                        if key.startswith("layer/L/"):
                            assert ("L", key[8:]) in ours, f"no converted top {key[8:]}"
                            assert_close(ours[("L", key[8:])], value, key)
                    outcome, detail = "match", ""
            except InternalError as err:
                outcome, detail = "INTERNAL", str(err)
            except ConversionError as err:
                outcome = "refused-both" if not caffe_ran else "refused (Caffe ran it)"
                detail = err.message
            except AssertionError as err:
                outcome, detail = "MISMATCH", str(err)
            tally[outcome] += 1
            if outcome not in ("match", "refused-both"):
                print(f"{name:24s} {outcome:26s} {detail[:150]}")
    print(", ".join(f"{n} {k}" for k, n in tally.most_common()))


if __name__ == "__main__":
    main(sys.argv[1:])
