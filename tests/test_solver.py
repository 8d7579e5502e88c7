"""Fine-tuning with ``--solver`` against Caffe's own solver (fixtures/solver, see its README).

Each fixture is a small train/val net and a solver that real Caffe ran for a few iterations on
fixed batches (tools/make_solver_reference.py). The converted, compiled model takes the same
batches with ``train_on_batch``; after every iteration each learned blob (weights, biases,
BatchNorm's running sums and scale factor) and every blob of the TEST net on a probe batch must
match Caffe's within the project tolerance, as must each iteration's loss.
"""

import json

import numpy as np
import pytest
from conftest import FIXTURES
from helpers import assert_close, blob_values, build, model_inputs

CASES = sorted(p for p in (FIXTURES / "solver").iterdir() if (p / "expected.npz").exists())


def _keras_layout(value):
    value = np.asarray(value, np.float32)
    return value.transpose(0, 2, 3, 1) if value.ndim == 4 else value


def _final_blobs(graph):
    """The SSA id holding each Caffe blob's final value (what Caffe's net.blobs shows)."""
    final = {graph.blobs[b].name: b for b in graph.inputs}
    for node in graph.nodes:
        for bid in node.tops:
            final[graph.blobs[bid].name] = bid
    return final


def _reference_weights(graph, expected, step):
    from caffe2keras.caffemodel import Weights

    layers = {}
    prefix = f"step/{step}/param/"
    for key in expected.files:
        if key.startswith(prefix):
            layer, index = key[len(prefix):].rsplit("/", 1)
            layers.setdefault(layer, {})[int(index)] = expected[key]
    return Weights({name: [blobs[i] for i in sorted(blobs)] for name, blobs in layers.items()})


def check_weights(conversion, expected, step):
    """Every variable of the trained model against the model Caffe's blobs at ``step`` convert to."""
    from caffe2keras.translate import build_model

    reference = build_model(conversion.graph, _reference_weights(conversion.graph, expected, step)).model
    for mine, theirs in zip(conversion.model.weights, reference.weights):
        assert_close(np.asarray(mine), np.asarray(theirs), f"iteration {step}: {mine.path}")


def check_probe(conversion, expected, step):
    probe = {k.split("/", 1)[1]: expected[k] for k in expected.files if k.startswith("probe/")}
    inputs = {conversion.graph.blobs[b].name: probe[conversion.graph.blobs[b].name] for b in conversion.graph.inputs}
    values = blob_values(conversion, inputs)
    compared = 0
    for name, bid in _final_blobs(conversion.graph).items():
        key = f"step/{step}/probe/{name}"
        if key in expected.files and bid in values:
            assert_close(values[bid], expected[key], f"iteration {step}: TEST blob {name}")
            compared += 1
    assert compared, "no TEST-net blob compared"


def replay(case, steps=None):
    """Train the converted model as Caffe did; yields (iteration, conversion, expected) after each."""
    expected = np.load(case / "expected.npz")
    meta = json.loads((case / "meta.json").read_text())
    conversion = build(case / "train_val.prototxt", case / "init.caffemodel", solver=str(case / "solver.prototxt"))
    graph = conversion.graph
    iter_size = meta["iter_size"]
    for step in range(1, (steps or meta["steps"]) + 1):
        model = conversion.model  # a test may swap in the model reloaded from a file
        batch = {k.split("/", 2)[2]: expected[k] for k in expected.files if k.startswith(f"batch/{step}/")}
        per_pass = len(next(iter(batch.values()))) // iter_size if meta["memory_data"] else None
        for i in range(iter_size):
            part = batch if per_pass is None else {k: v[i * per_pass:(i + 1) * per_pass] for k, v in batch.items()}
            x = model_inputs(conversion, {graph.blobs[b].name: part[graph.blobs[b].name] for b in graph.inputs})
            y = [_keras_layout(part[t.label]) for t in conversion.targets]
            loss = model.train_on_batch(x, y if len(y) > 1 else y[0])
        loss = loss[0] if isinstance(loss, list) else loss  # the total, then each output's
        if f"step/{step}/loss" in expected.files:
            assert_close(loss, expected[f"step/{step}/loss"], f"iteration {step}: loss")
        yield step, conversion, expected


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_training_follows_caffe_solver(case):
    for step, conversion, expected in replay(case):
        check_weights(conversion, expected, step)
        check_probe(conversion, expected, step)


@pytest.mark.parametrize("name", ["sgd_step_bn", "itersize_memorydata", "adam_fixed_two_losses"])
def test_plain_fit_follows_caffe_solver(name):
    """``model.fit`` over the iterations' batches in order ends where Caffe's solver did."""
    case = FIXTURES / "solver" / name
    expected = np.load(case / "expected.npz")
    meta = json.loads((case / "meta.json").read_text())
    conversion = build(case / "train_val.prototxt", case / "init.caffemodel", solver=str(case / "solver.prototxt"))
    graph, steps = conversion.graph, meta["steps"]

    def stacked(blob):
        return np.concatenate([expected[f"batch/{k}/{blob}"] for k in range(1, steps + 1)])

    x = model_inputs(conversion, {graph.blobs[b].name: stacked(graph.blobs[b].name) for b in graph.inputs})
    y = [_keras_layout(stacked(t.label)) for t in conversion.targets]
    per_pass = len(x[0]) // (steps * meta["iter_size"])
    conversion.model.fit(x, y if len(y) > 1 else y[0], batch_size=per_pass, shuffle=False, epochs=1, verbose=0)
    check_weights(conversion, expected, steps)


@pytest.mark.parametrize("name", ["adam_fixed_two_losses", "sgd_multistep_decay", "itersize_memorydata"])
def test_saved_model_goes_on_training_as_caffe(name, tmp_path):
    """Optimizer state (iteration, history, Adam's moments), schedule, multipliers and losses
    survive a .keras file loaded with safe_mode: training resumes on Caffe's trajectory."""
    import keras

    case = FIXTURES / "solver" / name
    for step, conversion, expected in replay(case):
        if step == 2:
            path = tmp_path / "model.keras"
            conversion.model.save(path)
            conversion.model = keras.models.load_model(path, safe_mode=True)
            check_weights(conversion, expected, step)
    check_weights(conversion, expected, step)
    outputs = conversion.model.output_names
    probe = {k.split("/", 1)[1]: expected[k] for k in expected.files if k.startswith("probe/")}
    values = conversion.model(model_inputs(conversion, probe), training=False)
    for name, value in zip(outputs, values if isinstance(values, list) else [values]):
        assert_close(np.asarray(value), expected[f"step/{step}/probe/{name}"], f"reloaded output {name}")


def test_dropout_scales_what_it_keeps_as_caffe_does_in_training():
    import keras

    case = FIXTURES / "solver" / "dropout_branch"
    expected = np.load(case / "expected.npz")
    bottoms = np.concatenate([expected[k].ravel() for k in sorted(expected.files) if k.endswith("/drop/bottom")])
    tops = np.concatenate([expected[k].ravel() for k in sorted(expected.files) if k.endswith("/drop/top")])
    kept = tops != 0
    caffe_scales = np.unique(np.round(tops[kept] / bottoms[kept], 5))
    assert len(caffe_scales) == 1, f"Caffe scaled kept values by {caffe_scales}"

    conversion = build(case / "train_val.prototxt", case / "init.caffemodel", solver=str(case / "solver.prototxt"))
    graph = conversion.graph
    final = _final_blobs(graph)
    probe = keras.Model(conversion.model.inputs, [conversion.tensors[final["conv1"]].value,
                                                  conversion.tensors[final["drop"]].value])
    x = model_inputs(conversion, {"data": np.concatenate([expected[f"batch/{k}/data"] for k in range(1, 6)])})
    before, after = (np.asarray(v) for v in probe(x, training=True))
    keras_kept = after != 0
    np.testing.assert_allclose(after[keras_kept] / before[keras_kept], caffe_scales[0], rtol=1e-5)
    # Both drop each value with probability 0.3: the two fractions agree within sampling noise.
    n, p = kept.size, 0.3
    assert abs((1 - kept.mean()) - (1 - keras_kept.mean())) < 5 * np.sqrt(2 * p * (1 - p) / n)
    before, after = (np.asarray(v) for v in probe(x, training=False))
    np.testing.assert_array_equal(after, before)  # the TEST net has no Dropout
