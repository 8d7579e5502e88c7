"""The benchmark's inputs, written under the work directory (build/bench) and reused next time.

- the full-size nets of ``../shared/fullsize`` (GoogLeNet, ResNet-50, VGG16) with its
  ``synth.py`` weights, for which real Caffe's outputs are known;
- zoo nets without published weights here (MobileNet v1, MobileNet-SSD): deterministic random
  weights written from the converter's own graph by the tests' oracle (``tests/oracle.py``,
  seed 0), in a child process since it imports Keras;
- a > 2 GiB caffemodel (an MLP whose first InnerProduct blob alone is past protobuf's 2 GiB
  limit), streamed to disk record header first, never built as a message;
- chains of N small layers (1×1 Convolution, ReLU, …) for the layer-count scaling;
- a folder of model folders for ``caffe2keras batch``: the golden zoo replicas real Caffe ran.
"""

import re
import subprocess
import sys

import measure
from measure import SHARED

FULLSIZE = SHARED / "fullsize"
ZOO = SHARED / "zoo"
GOLDEN_ZOO = SHARED / "golden" / "zoo"
TESTS = measure.REPO / "tests"

# name: (prototxt, input size, weights: "fullsize" (synth.py) or "random" (the tests' oracle))
NETS = {
    "bvlc_googlenet": (ZOO / "bvlc_googlenet" / "deploy.prototxt", 224, "fullsize"),
    "resnet50": (ZOO / "resnet50" / "deploy.prototxt", 224, "fullsize"),
    "vgg16": (ZOO / "vgg16" / "deploy.prototxt", 224, "fullsize"),
    "mobilenet_v1": (ZOO / "mobilenet_v1" / "deploy.prototxt", 224, "random"),
    "mobilenet_ssd": (ZOO / "mobilenet_ssd" / "deploy.prototxt", 300, "random"),
}
LABELS = {
    "bvlc_googlenet": "GoogLeNet",
    "resnet50": "ResNet-50",
    "vgg16": "VGG16",
    "mobilenet_v1": "MobileNet v1",
    "mobilenet_ssd": "MobileNet-SSD",
}
# Random weights give near-uniform class scores (about 1/21), below the 0.25 the deployed SSD
# keeps: at 0.05 (as the OpenCV zoo test) the detection layer has boxes to sort and suppress, as
# with a real image.
SSD_CONFIDENCE = 0.05


def prepare(work, name):
    """(prototxt, caffemodel) of a benchmark net, writing the caffemodel on first use."""
    prototxt, _, weights = NETS[name]
    caffemodel = work / f"{name}.caffemodel"
    if name == "mobilenet_ssd":
        prototxt = work / "mobilenet_ssd.prototxt"
    if not caffemodel.exists() or not prototxt.exists():
        print(f"writing {caffemodel.name} …", flush=True)
        if weights == "fullsize":
            args = [FULLSIZE / "synth.py", FULLSIZE / f"{name}.spec.json", caffemodel, inputs_path(work, name)]
        else:
            args = [__file__, "_random", NETS[name][0], prototxt, caffemodel, SSD_CONFIDENCE if name == "mobilenet_ssd" else ""]
        done = subprocess.run(measure.python(*args), capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"could not write {caffemodel}:\n{done.stderr[-2000:]}")
    return prototxt, caffemodel


def inputs_path(work, name):
    """synth.py's input of a full-size net (the one real Caffe's outputs were computed on)."""
    return work / f"{name}_input.npz"


def child_random(source, prototxt, caffemodel, confidence):
    sys.path.insert(0, str(TESTS))
    from oracle import random_caffemodel, with_confidence_threshold

    if confidence:
        with_confidence_threshold(source, prototxt, float(confidence))
    elif str(prototxt) != str(source):
        raise SystemExit(f"{prototxt}: only the SSD's prototxt is rewritten")
    random_caffemodel(prototxt, caffemodel, seed=0)


# ---------------------------------------------------------------- the > 2 GiB caffemodel

# data (1, BIG_IN) → fc1 (BIG_HIDDEN) → ReLU → fc2 (BIG_OUT).
BIG_IN, BIG_HIDDEN, BIG_OUT, BIG_SEED = 16384, 33000, 16, 1234
BIG_ROWS = 1024  # fc1 rows generated (and written) at a time
BIG_PROTOTXT = f"""name: "big_mlp"
input: "data"
input_shape {{ dim: 1 dim: {BIG_IN} }}
layer {{ name: "fc1" type: "InnerProduct" bottom: "data" top: "fc1" inner_product_param {{ num_output: {BIG_HIDDEN} }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "fc1" top: "fc1" }}
layer {{ name: "fc2" type: "InnerProduct" bottom: "fc1" top: "fc2" inner_product_param {{ num_output: {BIG_OUT} }} }}
"""


def _synth():
    """``../shared/fullsize/synth.py``, the shared writer of synthetic caffemodels."""
    sys.path.insert(0, str(FULLSIZE))
    import synth

    return synth


def _len_field(number, size):
    """The header of a length-delimited field whose ``size`` payload bytes follow separately."""
    varint = _synth()._varint
    return varint(number << 3 | 2) + varint(size)


def _string(number, text):
    data = text.encode()
    return _len_field(number, len(data)) + data


def _big_blocks(name, rows, cols):
    """(rows, cols) float32 values of a big blob, block by block of ``BIG_ROWS`` rows: the same
    for the writer and for the numpy reference, never all in memory."""
    import numpy as np

    for r0 in range(0, rows, BIG_ROWS):
        rng = np.random.default_rng([BIG_SEED, sum(map(ord, name)), r0])
        n = min(BIG_ROWS, rows - r0)
        yield r0, (rng.standard_normal((n, cols), dtype=np.float32) / np.float32(np.sqrt(cols)))


def _big_bias(name, n):
    import numpy as np

    return np.random.default_rng([BIG_SEED, sum(map(ord, name)), 10**9]).standard_normal(n).astype(np.float32) * 0.1


def big_mlp(work):
    """(prototxt, caffemodel) of the > 2 GiB MLP, writing them on first use."""
    prototxt, caffemodel = work / "big_mlp.prototxt", work / "big_mlp.caffemodel"
    prototxt.write_text(BIG_PROTOTXT)
    if not caffemodel.exists():
        print("writing big_mlp.caffemodel (> 2 GiB) …", flush=True)
        _write_big_caffemodel(caffemodel)
    return prototxt, caffemodel


def _write_big_caffemodel(path):
    """Stream the MLP's caffemodel: each record's header is computed from the sizes, then the
    float data is written block by block."""
    layers = [("fc1", BIG_HIDDEN, BIG_IN), ("fc2", BIG_OUT, BIG_HIDDEN)]
    with open(path, "wb") as f:
        f.write(_string(1, "big_mlp"))  # NetParameter.name
        for name, rows, cols in layers:
            blobs = []
            for shape, nbytes in (((rows, cols), rows * cols * 4), ((rows,), rows * 4)):
                dims = b"".join(_synth()._varint(d) for d in shape)
                shape_field = _len_field(7, len(dims) + len(_len_field(1, len(dims)))) + _len_field(1, len(dims)) + dims
                head = shape_field + _len_field(5, nbytes)
                blobs.append((head, nbytes))
            body = _string(1, name) + _string(2, "InnerProduct")  # LayerParameter.name, .type
            blob_fields = [(_len_field(7, len(h) + n), h, n) for h, n in blobs]
            size = len(body) + sum(len(k) + len(h) + n for k, h, n in blob_fields)
            f.write(_len_field(100, size) + body)
            (k0, h0, _), (k1, h1, _) = blob_fields
            f.write(k0 + h0)
            for _, block in _big_blocks(name, rows, cols):
                f.write(block.astype("<f4").tobytes())
            f.write(k1 + h1 + _big_bias(name, rows).astype("<f4").tobytes())


def big_reference(x):
    """The MLP's output computed with numpy from the generator, block by block."""
    import numpy as np

    hidden = np.empty(BIG_HIDDEN, np.float64)
    for r0, block in _big_blocks("fc1", BIG_HIDDEN, BIG_IN):
        hidden[r0 : r0 + len(block)] = block.astype(np.float64) @ x.astype(np.float64)
    hidden = np.maximum(hidden + _big_bias("fc1", BIG_HIDDEN), 0)
    out = np.zeros(BIG_OUT, np.float64)
    for r0, block in _big_blocks("fc2", BIG_OUT, BIG_HIDDEN):
        out[r0 : r0 + len(block)] = block.astype(np.float64) @ hidden
    return out + _big_bias("fc2", BIG_OUT)


# ---------------------------------------------------------------- chains of small layers

# The repeating unit of a chain: small layers of the kinds every net has, each a new blob.
CHAIN_UNIT = (
    ("Convolution", "convolution_param { num_output: 4 kernel_size: 1 }", [[4, 4, 1, 1], [4]]),
    ("ReLU", "", []),
    ("Scale", "scale_param { bias_term: true }", [[4], [4]]),
    ("Eltwise", "", []),  # sums the blob with the one before the unit: a residual edge
)


def chain(work, layers):
    """(prototxt, caffemodel) of a chain of ``layers`` small layers on a (1, 4, 8, 8) input."""
    prototxt, caffemodel = work / f"chain_{layers}.prototxt", work / f"chain_{layers}.caffemodel"
    if prototxt.exists() and caffemodel.exists():
        return prototxt, caffemodel
    lines = ['name: "chain"', 'input: "data"', "input_shape { dim: 1 dim: 4 dim: 8 dim: 8 }"]
    spec, below, unit_input = [], "data", "data"
    for i in range(layers):
        kind, param, blobs = CHAIN_UNIT[i % len(CHAIN_UNIT)]
        if i % len(CHAIN_UNIT) == 0:
            unit_input = below
        bottoms = [below, unit_input] if kind == "Eltwise" else [below]
        name = f"{kind.lower()}{i}"
        bottom_text = " ".join(f'bottom: "{b}"' for b in bottoms)
        lines.append(f'layer {{ name: "{name}" type: "{kind}" {bottom_text} top: "{name}" {param} }}')
        if blobs:
            spec.append({"name": name, "type": kind, "blobs": blobs})
        below = name
    prototxt.write_text("\n".join(lines) + "\n")
    _synth().write_caffemodel({"name": "chain", "layers": spec}, caffemodel, seed=0)
    return prototxt, caffemodel


# ---------------------------------------------------------------- the zoo for `batch`


def golden_zoo_folder(work):
    """A folder of model folders (one prototxt + one caffemodel each, linked) for ``batch``:
    the golden zoo replicas, real Caffe's weights. Returns (folder, net names)."""
    folder = work / "zoo_models"
    names = []
    for net in sorted(p for p in GOLDEN_ZOO.iterdir() if (p / "weights.caffemodel").exists()):
        target = folder / net.name
        target.mkdir(parents=True, exist_ok=True)
        for file in ("deploy.prototxt", "weights.caffemodel"):
            link = target / file
            if not link.exists():
                link.symlink_to(net / file)
        names.append(net.name)
    return folder, names


def count_layers(prototxt):
    return len(re.findall(r"^\s*layers? \{", prototxt.read_text(), re.M))


if __name__ == "__main__":
    measure.child_main(globals())
