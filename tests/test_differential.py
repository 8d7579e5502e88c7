"""Generated nets against real Caffe (tests/differential): every layer top and output of each
converted net equals Caffe's at the project tolerance.

A bounded count runs by default (``C2K_DIFF_N``, default 40, from ``C2K_DIFF_SEED``, default 1);
a long run is ``C2K_DIFF_N=2000 python -m pytest tests/test_differential.py`` or
``python -m tests.differential --n 10000 --seed 1``. Skipped where no Caffe oracle is built
(``../shared/oracle/build.sh``).
"""

import os

import pytest
from differential import generate, run

N = int(os.environ.get("C2K_DIFF_N", "40"))
SEED = int(os.environ.get("C2K_DIFF_SEED", "1"))
# Inputs and weights are drawn so that every blob stays well inside float32's comfortable range.
SENSIBLE = 1e5

needs_oracle = pytest.mark.skipif(not run.oracle_available(), reason=run.caffe_oracle.missing_reason())


@needs_oracle
def test_generated_nets_match_caffe():
    tally = run.run_many(generate.Generator(SEED), N)
    print(tally.line())
    failures = [o for o in tally.failures if o.status in ("mismatch", "converter_refused", "caffe_refused", "pending")]
    assert not failures, "\n".join(f"{o.net.name}: {o.status} {o.layer_type or ''} {o.detail}" for o in failures[:10])
    assert not tally.generator_notes, tally.generator_notes[:5]
    assert tally.largest < SENSIBLE, f"a generated net computed {tally.largest:.3g}: its values are not sensible"
    assert tally.counts.get("ok", 0) >= 0.9 * N


@needs_oracle
def test_a_wrong_translation_is_caught(monkeypatch):
    """Negative control: a Sigmoid translated as TanH must be reported, at that layer."""
    import keras
    from caffe2keras import translate

    translate.supported_types()
    monkeypatch.setitem(
        translate.TRANSLATORS, "Sigmoid",
        lambda ctx, node, inputs: [(keras.layers.Activation("tanh", name=ctx.name(node))(inputs[0].value),
                                    inputs[0].layout)],
    )
    net = generate.Net("control", [generate.Input("data", (2, 3, 4, 5), ("normal", 1.0))],
                       [generate.Layer("squash", "Sigmoid", ["data"], ["out"])])
    (outcome,) = run.evaluate([net])
    assert (outcome.status, outcome.layer, outcome.layer_type) == ("mismatch", "squash", "Sigmoid")


@needs_oracle
def test_a_net_caffe_refuses_is_counted_as_such():
    net = generate.Net("refused", [generate.Input("data", (1, 2, 3, 3), ("normal", 1.0))],
                       [generate.Layer("lrn", "LRN", ["data"], ["out"], {"lrn_param": {"local_size": 2}})])
    (outcome,) = run.evaluate([net])
    assert outcome.status == "caffe_refused", outcome


def test_nets_are_reproducible():
    a, b = generate.Generator(7).net(3), generate.Generator(7).net(3)
    assert a.prototxt() == b.prototxt()
    assert all((a.input_values()[k] == v).all() for k, v in b.input_values().items())
