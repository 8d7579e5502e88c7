"""Mutated prototxts and caffemodels end in a converted model or a ConversionError, nothing else.

A seeded mutation loop over the small golden networks: prototxt tokens are deleted, duplicated,
swapped for other tokens, numbers become 0 / -1 / huge, lines are shuffled, the text is cut
short; caffemodel bytes are flipped, inserted, deleted, the file is truncated. Every mutated
input goes through :func:`caffe2keras.api.check` (parse, shapes, weights), which is cheap; every
``C2K_FUZZ_KERAS_EVERY``-th one that passes is also built into a Keras model.

Two verdicts on one run: nothing but ConversionError leaves ``convert()`` (the contract), and no
:class:`~caffe2keras.errors.InternalError` either (a ConversionError, but one meaning the
converter met input it did not recognise as bad, or mistranslated a valid one).

CI runs ``C2K_FUZZ_N`` (default 300) inputs from ``C2K_FUZZ_SEED`` (default 5); a long run::

    C2K_FUZZ_N=10000 python -m pytest tests/test_fuzz.py -s
"""

import os
import random
import re
import time

import pytest
from conftest import GOLDEN

NETS = [
    ("pooling_edges", "weights.caffemodel"),
    ("dense_flatten", "weights.caffemodel"),
    ("v1_legacy", "weights.caffemodel"),
    ("v1_legacy", "weights_v1.caffemodel"),
    ("eltwise_act", "weights.caffemodel"),
    ("shape_ops", "weights.caffemodel"),
    # Caffe's HDF5 format goes through h5py, which fails on damaged files in its own ways.
    ("conv_variants", "weights.caffemodel.h5"),
    ("norm_scale", "weights.caffemodel.h5"),
]
N = int(os.environ.get("C2K_FUZZ_N", "300"))
KERAS_EVERY = int(os.environ.get("C2K_FUZZ_KERAS_EVERY", "3"))
SEED = int(os.environ.get("C2K_FUZZ_SEED", "5"))

TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|[-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\w+|#[^\n]*|\s+|.', re.S)
NUMBER = re.compile(r"[-+]?\d")
NUMBERS = ["0", "-1", "1", "2", "7", "65535", "2147483647", "2147483648", "99999999999", "-2147483649", "1e30", "0.5"]
WORDS = [
    "Convolution", "Pooling", "InnerProduct", "Input", "Concat", "Slice", "Reshape", "Data", "Python",
    "Bogus", "MAX", "AVE", "STOCHASTIC", "true", "false", "layer", "layers", "top", "bottom", "name",
    "type", "dim", "axis", "num_output", "kernel_size", "group", "pad", "stride", "SUM", "PROD",
]


def mutate_prototxt(text, rng):
    tokens = TOKEN.findall(text)
    for _ in range(rng.randint(1, 3)):
        if not tokens:
            break
        # Mostly changes a parser accepts (numbers, names, wiring), so most inputs reach shapes.
        op = rng.choices(range(8), weights=[1, 1, 1, 4, 4, 3, 1, 1])[0]
        i = rng.randrange(len(tokens))
        if op == 0:
            del tokens[i]
        elif op == 1:
            tokens.insert(i, tokens[i])
        elif op == 2:
            tokens[i] = rng.choice(tokens)
        elif op in (3, 4):  # numbers are where most real-world breakage lives
            spots = [j for j, t in enumerate(tokens) if NUMBER.match(t)]
            if spots:
                tokens[rng.choice(spots)] = rng.choice(NUMBERS)
        elif op == 5:
            words = [j for j, t in enumerate(tokens) if t[:1].isalpha() or t[:1] == '"']
            if words:
                j = rng.choice(words)
                if tokens[j].startswith('"') and rng.random() < 0.5:  # rewire: another blob or layer name
                    tokens[j] = tokens[rng.choice([k for k in words if tokens[k].startswith('"')])]
                else:
                    word = rng.choice(WORDS)
                    tokens[j] = f'"{word}"' if tokens[j].startswith('"') else word
        elif op == 6:
            lines = "".join(tokens).split("\n")
            a, b = rng.randrange(len(lines)), rng.randrange(len(lines))
            if rng.random() < 0.5:
                lines[a], lines[b] = lines[b], lines[a]
            else:
                lines.insert(a, lines[b])
            tokens = TOKEN.findall("\n".join(lines))
        else:
            text = "".join(tokens)
            tokens = TOKEN.findall(text[: rng.randrange(len(text) + 1)])
    return "".join(tokens)


def mutate_caffemodel(data, rng):
    data = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(6)
        i = rng.randrange(len(data) + 1)
        if op == 0:
            for _ in range(rng.randint(1, 8)):
                if data:
                    data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif op == 1:
            data[i:i] = rng.randbytes(rng.randint(1, 16))
        elif op == 2:
            del data[i : i + rng.randint(1, 64)]
        elif op == 3:
            del data[i:]
        elif op == 4 and data:
            # A length or dimension varint becomes huge.
            data[min(i, len(data) - 1)] = rng.choice([0xFF, 0x80, 0x00, 0x7F])
        else:
            data[i : i + 4] = rng.randbytes(4)
    return bytes(data)


def mutate_arguments(rng):
    """Occasionally odd ``input_shapes`` / ``outputs`` as a library caller might pass them."""
    kwargs = {}
    if rng.random() < 0.1:
        dims = [rng.choice([1, 2, 3, 0, -1, 5, 17, 190000, 2**40]) for _ in range(rng.choice([2, 3, 4, 4, 5]))]
        kwargs["input_shapes"] = {rng.choice([None, "data", "nope"]): tuple(dims)}
    if rng.random() < 0.05:
        kwargs["outputs"] = [rng.choice(["conv", "data", "prob", "nope", "conv1", ""])]
    return kwargs


def fuzz(n, tmp_path, seed=SEED, keras_every=KERAS_EVERY):
    """Run ``n`` mutated conversions. Returns the counts, the escapes (exceptions other than
    ConversionError) and the internal errors, each with how to reproduce it."""
    import keras

    from caffe2keras import api
    from caffe2keras.errors import ConversionError, InternalError

    rng = random.Random(seed)
    sources = {
        (net, model): ((GOLDEN / net / "deploy.prototxt").read_text(), (GOLDEN / net / model).read_bytes())
        for net, model in NETS
    }
    proto_path, model_path = tmp_path / "net.prototxt", tmp_path / "net.caffemodel"
    stats = {"inputs": 0, "converted": 0, "refused": 0, "keras_built": 0}
    escapes, internal = [], []
    for i in range(n):
        key = rng.choice(NETS)
        text, data = sources[key]
        what = rng.random()
        mutated_text = mutate_prototxt(text, rng) if what < 0.65 or what > 0.9 else text
        mutated_data = mutate_caffemodel(data, rng) if what >= 0.65 else data
        kwargs = mutate_arguments(rng)
        proto_path.write_text(mutated_text)
        model_path.write_bytes(mutated_data)
        stats["inputs"] += 1
        try:
            api.check(proto_path, model_path, **kwargs)
            if stats["converted"] % keras_every == 0:
                api.build(proto_path, model_path, **kwargs)
                keras.backend.clear_session()  # or thousands of models pile up in Keras' global state
                stats["keras_built"] += 1
            stats["converted"] += 1
        except InternalError as err:
            internal.append(_found(tmp_path, i, key, kwargs, f"InternalError: {err}", mutated_text, mutated_data))
        except ConversionError as err:
            assert "\n" not in str(err), f"input {i}: multi-line message {str(err)!r}"
            stats["refused"] += 1
        except Exception as err:  # noqa: BLE001  (what this test exists to catch)
            escapes.append(_found(tmp_path, i, key, kwargs, f"{type(err).__name__}: {err}", mutated_text, mutated_data))
    return stats, escapes, internal


def _found(tmp_path, i, key, kwargs, message, text, data):
    """A line describing a failing input, which is kept next to the fuzz files to rerun."""
    (tmp_path / f"found{i}.prototxt").write_text(text)
    (tmp_path / f"found{i}.caffemodel").write_bytes(data)
    return f"input {i} {key} {kwargs}: {message} (kept as {tmp_path / f'found{i}.*'})"


@pytest.fixture(scope="module")
def fuzz_run(tmp_path_factory):
    start = time.perf_counter()
    stats, escapes, internal = fuzz(N, tmp_path_factory.mktemp("fuzz"))
    print(f"\nfuzz: {stats}, {len(escapes)} escapes, {len(internal)} internal errors, "
          f"{time.perf_counter() - start:.1f}s (seed {SEED})")
    return stats, escapes, internal


def test_mutated_inputs_raise_nothing_but_conversion_error(fuzz_run):
    stats, escapes, internal = fuzz_run
    # Each input ends one way, counted once: a loop that lost inputs would pass on fewer.
    assert stats["converted"] + stats["refused"] + len(escapes) + len(internal) == stats["inputs"] == N, stats
    # Both sides are reached: refusals (the contract is about them), and conversions past the
    # parser, or the loop tests nothing but syntax errors.
    assert stats["refused"] > 0 and stats["converted"] > 0 and stats["keras_built"] > 0, stats
    assert not escapes, "\n".join(escapes[:10])


def test_mutated_inputs_meet_no_converter_bug(fuzz_run):
    """An InternalError keeps the contract, but the input was bad (or valid) in a way the
    converter did not recognise: each is a bug to fix where the layer is checked or translated."""
    _, _, internal = fuzz_run
    assert not internal, "\n".join(internal[:10])


def test_mutations_are_deterministic_and_mutate():
    rng_a, rng_b = random.Random(1), random.Random(1)
    text = (GOLDEN / "dense_flatten" / "deploy.prototxt").read_text()
    data = (GOLDEN / "dense_flatten" / "weights.caffemodel").read_bytes()
    outs_a = [(mutate_prototxt(text, rng_a), mutate_caffemodel(data, rng_a)) for _ in range(20)]
    outs_b = [(mutate_prototxt(text, rng_b), mutate_caffemodel(data, rng_b)) for _ in range(20)]
    assert outs_a == outs_b
    assert sum(t != text for t, _ in outs_a) >= 15 and sum(d != data for _, d in outs_a) >= 15
