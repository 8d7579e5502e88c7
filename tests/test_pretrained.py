"""Real pretrained Caffe models (from the shared folder) reproduce real Caffe's outputs.

Each case in ``pretrained/expected/<case>.npz`` holds the input real Caffe was fed
(``input/<blob>``, NCHW) and what it computed (``output/<blob>``). The input's shape overrides the
prototxt's declared one, as a user converting for another batch or image size would.
"""

import numpy as np
import pytest
from conftest import shared_path
from helpers import assert_close, build, run_outputs

CASES = {
    "lenet_v2": ("lenet_mnist_v2_ahmdtaha", "mnist_deploy.prototxt", "lenet_iter_10000.caffemodel"),
    "lenet_v1_weights": ("lenet_mnist_v1_everpeace", "lenet.prototxt", "lenet_iter_10000.caffemodel"),
    "cifar10_full_v1": ("cifar10_full_v1_everpeace", "cifar10_full.prototxt", "cifar10_full_iter_70000.caffemodel"),
    "mtcnn_det1": ("mtcnn_kpzhang93", "det1.prototxt", "det1.caffemodel"),
    "mtcnn_det2": ("mtcnn_kpzhang93", "det2.prototxt", "det2.caffemodel"),
    "mtcnn_det3": ("mtcnn_kpzhang93", "det3.prototxt", "det3.caffemodel"),
    "resnet50_stem": ("resnet50_stem_htshinichi", "test.prototxt", "test.caffemodel"),
}


def load_case(case):
    """(expected npz, {input blob: NCHW array}, conversion with the inputs' shapes)."""
    expected = np.load(shared_path("pretrained", "expected", f"{case}.npz"))
    folder, prototxt, caffemodel = CASES[case]
    folder = shared_path("pretrained", folder)
    inputs = {k[len("input/"):]: expected[k] for k in expected.files if k.startswith("input/")}
    conversion = build(
        folder / prototxt, folder / caffemodel, input_shapes={name: x.shape for name, x in inputs.items()}
    )
    return expected, inputs, conversion


def check_outputs(case, expected, inputs, conversion):
    outputs = run_outputs(conversion, inputs)
    wanted = sorted(k[len("output/"):] for k in expected.files if k.startswith("output/"))
    assert wanted, f"{case}: no outputs to compare"
    for name in wanted:
        assert name in outputs, f"{case}: model has no output '{name}' (outputs: {sorted(outputs)})"
        assert_close(outputs[name], expected[f"output/{name}"], f"{case} output {name}")
    return outputs


@pytest.mark.parametrize("case", sorted(CASES))
def test_pretrained_matches_caffe(case):
    expected, inputs, conversion = load_case(case)
    check_outputs(case, expected, inputs, conversion)


@pytest.mark.parametrize("case", ["lenet_v2", "lenet_v1_weights"])
def test_lenet_reads_all_ten_digits(case):
    expected, inputs, conversion = load_case(case)
    outputs = check_outputs(case, expected, inputs, conversion)
    (probs,) = outputs.values()
    predicted = np.argmax(probs, axis=1)
    np.testing.assert_array_equal(predicted, expected["labels"], err_msg=f"{case}: predicted digits")


def test_mtcnn_det2_ignores_extra_caffemodel_layer(capsys, caplog, recwarn):
    # det2.caffemodel also holds conv5-3 (a landmark head det2.prototxt does not declare).
    expected, inputs, conversion = load_case("mtcnn_det2")
    captured = capsys.readouterr()
    said = captured.out + captured.err + caplog.text + " ".join(str(w.message) for w in recwarn)
    assert "conv5-3" in said, f"no warning naming the unused caffemodel layer conv5-3 (got {said!r})"
    check_outputs("mtcnn_det2", expected, inputs, conversion)
