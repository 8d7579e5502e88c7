"""Training semantics around the solver: the command line, what is refused and why, lr_mult 0
and BatchNorm's training rule without a solver, the learning-rate policies' edge cases."""

import json

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import FIXTURES
from helpers import assert_close, build, model_inputs

from caffe2keras import ConversionError
from caffe2keras.cli import main

SOLVER = FIXTURES / "solver"
HEADER = (
    'layer { name: "input" type: "Input" top: "data" top: "label"\n'
    '  input_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } shape { dim: 2 } } }\n'
)
FC = 'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 3 } }\n'
LOSS = 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }\n'
SOLVER_TEXT = 'base_lr: 0.1\nlr_policy: "fixed"\nmomentum: 0.9\n'


def write(tmp_path, net, solver=SOLVER_TEXT):
    (tmp_path / "net.prototxt").write_text(net)
    (tmp_path / "solver.prototxt").write_text(solver)
    return tmp_path / "net.prototxt", tmp_path / "solver.prototxt"


def refusal(tmp_path, net, solver=SOLVER_TEXT):
    prototxt, solver_path = write(tmp_path, net, solver)
    with pytest.raises(ConversionError) as err:
        build(prototxt, solver=str(solver_path))
    return str(err.value)


def test_cli_writes_a_compiled_model_that_loads_in_safe_mode(tmp_path):
    case = SOLVER / "adam_fixed_two_losses"
    out = tmp_path / "model.keras"
    result = CliRunner().invoke(main, [str(case / "train_val.prototxt"), str(case / "init.caffemodel"),
                                       "--solver", str(case / "solver.prototxt"), "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["training"]["solver"] == "Adam"
    assert [(t["output"], t["label"], t["weight"]) for t in record["training"]["targets"]] == [
        ("fc_attr", "attributes", 1.0), ("fc_cls", "label", pytest.approx(0.3))]
    assert [i["name"] for i in record["inputs"]] == ["data"]  # labels are targets, not inputs
    model = keras.models.load_model(out, safe_mode=True)
    assert type(model.optimizer).__name__ == "CaffeSolver"
    assert [type(loss).__name__ for loss in model.loss] == ["SigmoidCrossEntropyLoss", "SoftmaxWithLoss"]


@pytest.mark.parametrize("extra", [["-o", "model.tflite"], ["-o", "model.keras", "--mean", "1,2,3"],
                                   ["-o", "model.keras", "--outputs", "fc_cls"]])
def test_cli_refuses_what_would_drop_the_training_setup(tmp_path, extra):
    case = SOLVER / "adam_fixed_two_losses"
    args = [str(case / "train_val.prototxt"), "--solver", str(case / "solver.prototxt"), *extra]
    args = [str(tmp_path / a) if a.startswith("model.") else a for a in args]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("solver, message", [
    ('base_lr: 0.1\nlr_policy: "cosine"\n', "unknown lr_policy 'cosine'"),
    ('base_lr: 0.1\n', "unknown lr_policy ''"),
    ('type: "AdaGrad"\nbase_lr: 0.1\nlr_policy: "fixed"\nmomentum: 0.9\n', "momentum cannot be used with AdaGrad"),
    ('type: "Adamax"\nbase_lr: 0.1\nlr_policy: "fixed"\n', "unknown solver type 'Adamax'"),
    ('base_lr: 0.1\nlr_policy: "step"\n', "step needs a positive stepsize"),
    ('base_lr: 0.1\nlr_policy: "poly"\npower: 1\n', "poly needs a positive max_iter"),
    ('solver_type: ADAM\ntype: "SGD"\nbase_lr: 0.1\nlr_policy: "fixed"\n', "disagree"),
    ('base_lr: 0.1\nlr_policy: "fixed"\niter_size: 0\n', "iter_size must be at least 1"),
    ('base_lr: 0.1\nlr_policy: "fixed"\nregularization_type: "L3"\n', "unknown regularization_type"),
    ('base_lr: 0.1\nlr_polcy: "fixed"\n', ":2:"),
])
def test_bad_solver_is_refused_in_one_line_naming_the_file(tmp_path, solver, message):
    text = refusal(tmp_path, HEADER + FC + LOSS, solver)
    assert "solver.prototxt" in text and message in text


@pytest.mark.parametrize("net, message", [
    (HEADER + FC, "no loss layer"),
    (HEADER + FC + 'layer { name: "fc2" type: "InnerProduct" bottom: "fc" top: "fc2" inner_product_param { num_output: 3 } }\n'
     'layer { name: "loss" type: "EuclideanLoss" bottom: "fc" bottom: "fc2" top: "loss" }\n',
     "between two computed blobs"),
    (HEADER + FC + 'layer { name: "loss" type: "ContrastiveLoss" bottom: "fc" bottom: "fc" bottom: "label" top: "loss" }\n',
     "ContrastiveLoss cannot be trained"),
    (HEADER + FC + LOSS + 'layer { name: "loss2" type: "HingeLoss" bottom: "fc" bottom: "label" top: "loss2" }\n',
     "a second loss reads 'fc'"),
    (HEADER + 'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" include { phase: TRAIN }'
     ' inner_product_param { num_output: 3 } }\n'
     'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" include { phase: TEST }'
     ' inner_product_param { num_output: 4 } }\n' + LOSS, "differ between the TRAIN and TEST phases"),
    (HEADER + FC + 'layer { name: "relu" type: "ReLU" bottom: "fc" top: "fc" include { phase: TRAIN } }\n' + LOSS,
     "TRAIN phase only"),
    (HEADER + FC + LOSS + 'layer { name: "relu" type: "ReLU" bottom: "fc" top: "fc" include { phase: TEST } }\n',
     "rewrites fc"),
    (HEADER + 'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" param { name: "w" }'
     ' inner_product_param { num_output: 3 bias_term: false } }\n'
     'layer { name: "fc2" type: "InnerProduct" bottom: "data" top: "fc2" param { name: "w" }'
     ' inner_product_param { num_output: 3 bias_term: false } }\n' + LOSS, "shared weights"),
    (HEADER + 'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" propagate_down: false'
     ' inner_product_param { num_output: 3 } }\n' + LOSS, "propagate_down"),
    (HEADER + FC + 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss"'
     ' loss_param { weight_by_label_freqs: true } }\n', "class weighting"),
])
def test_nets_keras_cannot_train_as_caffe_are_refused_naming_the_reason(tmp_path, net, message):
    text = refusal(tmp_path, net)
    assert "net.prototxt" in text and message in text


def test_lr_mult_zero_freezes_without_a_solver(tmp_path):
    net = (HEADER +
           'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" param { lr_mult: 0 } param { lr_mult: 0 }'
           ' convolution_param { num_output: 2 kernel_size: 3 } }\n'
           'layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc" param { lr_mult: 1 } param { lr_mult: 0 }'
           ' inner_product_param { num_output: 3 } }\n' + LOSS)
    prototxt, _ = write(tmp_path, net)
    model = build(prototxt).model
    conv, fc = model.get_layer("conv"), model.get_layer("fc")
    assert not conv.trainable
    assert fc.trainable and [v.name for v in fc.trainable_weights] == ["kernel"]
    model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    assert not reloaded.get_layer("conv").trainable  # Keras saves trainability per layer


def test_batchnorm_follows_caffes_training_rule_under_any_optimizer():
    """Converted without a solver and fitted with plain Keras SGD at rate 0, BatchNorm's sums and
    scale factor after one batch are what Caffe's first iteration left in them."""
    case = SOLVER / "sgd_step_bn"
    expected = np.load(case / "expected.npz")
    conversion = build(case / "train_val.prototxt", case / "init.caffemodel")
    model = conversion.model
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    # Without a solver the TEST net is converted: its Input layer's label is an (unused) input.
    x = model_inputs(conversion, {"data": expected["batch/1/data"], "label": expected["batch/1/label"]})
    model.train_on_batch(x, expected["batch/1/label"])
    for i, value in enumerate(model.get_layer("bn1").get_weights()):
        assert_close(value, expected[f"step/1/param/bn1/{i}"], f"bn1 blob {i}")
    for i, value in enumerate(model.get_layer("bn1").get_weights()):  # negative control: Caffe's start
        assert np.abs(value - expected[f"step/0/param/bn1/{i}"]).max() > 1e-3


@pytest.mark.parametrize("stepvalues, rates", [
    ([2, 4], [1, 1, 0.5, 0.5, 0.25, 0.25]),
    ([1, 1, 3], [1, 0.5, 0.25, 0.125, 0.125, 0.125]),  # one step per iteration: the repeat lags
    ([3, 1], [1, 1, 1, 0.5, 0.25, 0.25]),  # an earlier value after a later one counts at once
    ([], [1, 1, 1]),
])
def test_multistep_takes_one_step_per_iteration(stepvalues, rates):
    """A transcript of Caffe's multistep state machine (the solver fixtures pin the repeat case
    against real Caffe)."""
    from caffe2keras.solver import CaffeLearningRate

    schedule = CaffeLearningRate("multistep", base_lr=1.0, gamma=0.5, stepvalue=stepvalues)
    np.testing.assert_allclose([float(schedule(i)) for i in range(len(rates))], rates)
    restored = CaffeLearningRate.from_config(schedule.get_config())
    np.testing.assert_allclose([float(restored(i)) for i in range(len(rates))], rates)


def test_sigmoid_cross_entropy_ignore_label_and_valid_normalization():
    """A transcript of BVLC master's SigmoidCrossEntropyLoss options (the reference Caffe predates
    ignore_label and normalization there; its default, BATCH_SIZE, is pinned by the fixtures)."""
    from caffe2keras.losses import SigmoidCrossEntropyLoss

    x = np.array([[2.0, -1.0, 0.5], [-3.0, 1.0, 0.0]], np.float32)
    t = np.array([[1.0, 0.0, -1.0], [0.0, -1.0, 1.0]], np.float32)
    valid = t != -1
    per_value = np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0) - x * t
    loss = SigmoidCrossEntropyLoss(ignore_label=-1, normalization="VALID")
    np.testing.assert_allclose(float(loss(t, x)), per_value[valid].sum() / valid.sum(), rtol=1e-6)
    loss = SigmoidCrossEntropyLoss(ignore_label=-1)  # BATCH_SIZE: ignored values still count for nothing
    np.testing.assert_allclose(float(loss(t, x)), per_value[valid].sum() / 2, rtol=1e-6)


def test_dropout_without_scale_train_drops_unscaled_in_training():
    """A transcript of BVLC master's scale_train: false (the reference Caffe lacks the field)."""
    from caffe2keras.layers import UnscaledDropout

    x = np.linspace(1.0, 2.0, 4000, dtype=np.float32).reshape(40, 100)
    layer = UnscaledDropout(0.25, seed=3)
    out = np.asarray(layer(x, training=True))
    kept = out != 0
    np.testing.assert_array_equal(out[kept], x[kept])
    assert abs(kept.mean() - 0.75) < 0.03
    np.testing.assert_allclose(np.asarray(layer(x, training=False)), 0.75 * x, rtol=1e-7)
