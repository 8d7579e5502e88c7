"""Every golden network converts to a model that computes what real Caffe computed.

Top-level nets (fixtures/golden/<net>) are compared on every layer top; zoo replicas
(fixtures/golden/zoo/<net>, and the non-redistributable ones in the shared folder) on every layer
top through real Caffe's recorded samples, plus their full outputs.
"""

import keras
import numpy as np
import pytest
from conftest import CORE_NETS, GOLDEN, shared_path
from helpers import assert_close, build, check_golden, model_inputs

TOP_NETS = [
    *CORE_NETS,
    "extensions",
    "caffe_order",
    "argmax_ties",
    "batchnorm_batch_stats",
    "legacy_shapes",
    "nameless_layers",
]

# The same weights in Caffe's other storage formats.
OTHER_WEIGHTS = [
    ("v1_legacy", "weights_v1.caffemodel"),
    ("conv_variants", "weights.caffemodel.h5"),
    ("norm_scale", "weights.caffemodel.h5"),
]

slow = pytest.mark.slow
ZOO_NETS = [
    "bvlc_alexnet",
    "bvlc_googlenet",
    "cifar10_quick",
    "lenet",
    "nin_imagenet",
    pytest.param("resnet50", marks=slow),
    "squeezenet_v1.0",
    "squeezenet_v1.1",
    "mobilenet_v1",
    "mobilenet_v2",
    pytest.param("se_bn_inception", marks=slow),
    pytest.param("inception_v3", marks=slow),
    pytest.param("inception_resnet_v2", marks=slow),
    pytest.param("xception", marks=slow),
    "mobilenet_ssd",
    "fcn8s_voc",
    "mtcnn_lnet",
    "mtcnn_onet",
]

# Zoo replicas whose upstream licence does not allow shipping them: read from the shared folder.
SHARED_ZOO_NETS = [
    "age_net",
    "colorization_v2",
    pytest.param("densenet121", marks=slow),
    "vgg16",
    "yolo_tiny_v1",
]


@pytest.mark.parametrize("net", TOP_NETS)
def test_golden_net(net):
    check_golden(GOLDEN / net)


@pytest.mark.parametrize("net", ["caffe_order", "argmax_ties", "batchnorm_batch_stats", "legacy_shapes"])
def test_new_layer_configs_reload_in_safe_mode(tmp_path, net):
    # BatchNorm on batch statistics, ArgMax's rank, the legacy 4-D views: saved and loaded, the same outputs.
    conversion = build(GOLDEN / net / "deploy.prototxt", GOLDEN / net / "weights.caffemodel")
    expected = np.load(GOLDEN / net / "expected.npz")
    feed = model_inputs(conversion, {k[len("input/"):]: expected[k] for k in expected.files if k.startswith("input/")})
    conversion.model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras", safe_mode=True, compile=False)
    for got, want in zip(reloaded(feed, training=False), conversion.model(feed, training=False)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_argmax_ties_fixture_holds_ties():
    # Without equal values among the top k the fixture could not tell Caffe's tie order apart.
    expected = np.load(GOLDEN / "argmax_ties" / "expected.npz")
    values = expected["layer/am_all_val/am_all_val"][:, 1, :, 0]
    assert any(len(set(row)) < len(row) for row in values)


def test_batch_statistics_differ_from_the_stored_ones():
    # Negative control: normalising by the stored statistics would miss Caffe's bn_batch.
    expected = np.load(GOLDEN / "batchnorm_batch_stats" / "expected.npz")
    batch, stored = expected["layer/bn_batch/bn_batch"], expected["layer/bn_stored/bn_stored"]
    with pytest.raises(AssertionError):
        assert_close(stored, batch, "stored statistics")


def test_average_pooling_adds_in_caffes_order():
    # Bit for bit: Caffe adds a window's values in row-major order; the converted model must too.
    errors = check_golden(GOLDEN / "pooling_sum_order")
    assert errors and all(err == 0.0 for err in errors.values()), errors
    # Negative control: a mean reduced in another order misses Caffe's rounding.
    expected = np.load(GOLDEN / "pooling_sum_order" / "expected.npz")
    tree = expected["input/data"].mean(axis=(2, 3), dtype=np.float32)
    assert np.abs(tree - expected["layer/global/global"][:, :, 0, 0]).max() > 0


@pytest.mark.parametrize("net, caffemodel", OTHER_WEIGHTS, ids=[f"{n}-{w}" for n, w in OTHER_WEIGHTS])
def test_golden_net_weight_formats(net, caffemodel):
    check_golden(GOLDEN / net, caffemodel_name=caffemodel)


def test_train_val_prototxt_converts_test_phase():
    net_dir = GOLDEN / "train_val_phase"
    conversion = build(net_dir / "train_val_phase.prototxt", net_dir / "weights.caffemodel")
    graph = conversion.graph
    # Input shape from the TEST Data layer: batch_size 2, crop_size 27.
    assert [graph.blobs[i].shape for i in graph.inputs] == [(2, 3, 27, 27)]
    # Accuracy and loss dropped: what fed them is the only output.
    assert [graph.blobs[o].name for o in graph.outputs] == ["fc"]
    assert len(conversion.model.outputs) == 1
    assert tuple(conversion.model.outputs[0].shape)[1:] == (5,)
    assert graph.blobs[graph.outputs[0]].shape == (2, 5)
    check_golden(net_dir, conversion=conversion)


@pytest.mark.parametrize("net", ZOO_NETS)
def test_zoo_replica(net):
    check_golden(GOLDEN / "zoo" / net)


@pytest.mark.parametrize("net", SHARED_ZOO_NETS)
def test_zoo_replica_shared(net):
    check_golden(shared_path("golden", "zoo", net))


def test_assert_close_uses_project_tolerance():
    expected = np.full((2, 3), 50.0, dtype=np.float32)
    assert_close(expected + 4.9e-3, expected, "within 1e-4 * 50")
    with pytest.raises(AssertionError, match="max abs error"):
        assert_close(expected + 5.1e-3, expected, "beyond 1e-4 * 50")
    small = np.zeros((4,), dtype=np.float32)
    with pytest.raises(AssertionError, match="tolerance"):
        assert_close(small + 2e-4, small, "absolute floor 1e-4")
    with pytest.raises(AssertionError, match="shape"):
        assert_close(expected.reshape(3, 2), expected, "shape")
