"""Shrink a failing net to the smallest one that still fails the same way, then save it as a
golden fixture made by real Caffe (tools/make_reference.py).

"The same way" is the outcome's signature: its status and the type of the first failing layer.
Each round proposes smaller nets, runs them through Caffe and the converter (a batch per Caffe
process) and keeps the first that still fails so; it stops when none does. Proposals, largest
cut first:

- keep only what the failing layer needs;
- replace the layers producing a blob by an input holding Caffe's own value of that blob (the
  failing layer's bottoms first): the values it saw stay exactly the same;
- drop one layer (and whatever then lacks its bottom), or bypass a one-bottom layer whose top
  has its bottom's shape;
- make an input smaller along one axis (its values sliced);
- drop one parameter field, or make a number smaller.

A proposal Caffe refuses is simply not taken.
"""

import copy
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from . import generate, run

ROUNDS = 60
BATCH = 12


def _producers(net):
    """For each layer, the index of the layer (or None for an input) that wrote each bottom."""
    last = {i.name: None for i in net.inputs}
    sources = []
    for index, layer in enumerate(net.layers):
        if layer.phase:
            sources.append([])
            continue
        sources.append([last.get(b) for b in layer.bottoms])
        for t in layer.tops:
            last[t] = index
    return sources


def _needed(net, keep):
    """Indices of the layers the layers ``keep`` depend on, ``keep`` included."""
    sources = _producers(net)
    needed, stack = set(), list(keep)
    while stack:
        i = stack.pop()
        if i in needed:
            continue
        needed.add(i)
        stack.extend(s for s in sources[i] if s is not None)
    return needed


def _prune_inputs(net):
    read = {b for layer in net.layers if not layer.phase for b in layer.bottoms}
    return replace(net, inputs=[i for i in net.inputs if i.name in read], shapes={})


def _without(net, drop):
    """``net`` without the layers ``drop`` and every layer that then lacks a bottom."""
    drop = set(drop)
    sources = _producers(net)
    kept = []
    for index, layer in enumerate(net.layers):
        if index in drop or any(s in drop for s in sources[index]):
            drop.add(index)
            continue
        kept.append(layer)
    return _prune_inputs(replace(net, layers=kept))


def _failing_index(net, outcome):
    for index, layer in enumerate(net.layers):
        if layer.name == outcome.layer:
            return index
    return None


def _blob_values(net):
    """Caffe's value of every blob version: ``{(layer index or None, top): array}``."""
    result = run.caffe_forward([net], _scratch())[0]
    if isinstance(result, run.caffe_oracle.OracleError):
        return None
    values = {(None, name): result.arrays["input/" + name] for name in result.inputs}
    spec = {layer.name: index for index, layer in enumerate(net.layers)}
    for layer in result.layers:
        for top in layer["tops"]:
            key = f"layer/{layer['name']}/{top}"
            if layer["name"] in spec and key in result.arrays:
                values[(spec[layer["name"]], top)] = result.arrays[key]
    return values


_SCRATCH = []


def _scratch():
    import tempfile

    if not _SCRATCH:
        _SCRATCH.append(tempfile.mkdtemp(prefix="c2k-shrink-"))
    return _SCRATCH[0]


def _cut_at(net, index, values):
    """``net`` with the bottoms of layer ``index`` made inputs holding Caffe's values, and only
    the layers from ``index`` on that do not need what came before."""
    sources = _producers(net)
    layer = net.layers[index]
    inputs = []
    renames = {}
    for b, src in zip(layer.bottoms, sources[index]):
        key = (src, b)
        if key not in values:
            return None
        name = b if src is None else f"{b}_in"
        if name not in {i.name for i in inputs}:
            inputs.append(generate.Input(name, tuple(values[key].shape), ("array", values[key])))
        renames[b] = name
    cut = copy.deepcopy(layer)
    cut.bottoms = [renames[b] for b in cut.bottoms]
    cut.tops = [f"{t}_out" if t in renames.values() else t for t in cut.tops]  # never in place on an input
    return _prune_inputs(replace(net, inputs=inputs, layers=[cut]))


def _param_paths(params, prefix=()):
    for key, value in params.items():
        path = prefix + (key,)
        if isinstance(value, dict):
            yield from _param_paths(value, path)
        yield path, value


def _set_path(params, path, value):
    params = copy.deepcopy(params)
    node = params
    for key in path[:-1]:
        node = node[key]
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return params


def proposals(net, outcome, values):
    """Smaller nets, the largest cuts first."""
    failing = _failing_index(net, outcome)
    if failing is not None:
        needed = _needed(net, [failing])
        if len(needed) < len(net.layers):
            yield _without(net, [i for i in range(len(net.layers)) if i not in needed])
        if values is not None:
            cut = _cut_at(net, failing, values)
            if cut is not None:
                yield cut
    for index in reversed(range(len(net.layers))):
        if index != failing:
            yield _without(net, [index])
    for index, layer in enumerate(net.layers):
        if index == failing or len(layer.bottoms) != 1 or len(layer.tops) != 1:
            continue
        top, bottom = layer.tops[0], layer.bottoms[0]
        rest = []
        for later in net.layers[index + 1 :]:
            later = copy.deepcopy(later)
            later.bottoms = [bottom if b == top else b for b in later.bottoms]
            later.tops = [bottom if t == top else t for t in later.tops]
            rest.append(later)
        yield _prune_inputs(replace(net, layers=net.layers[:index] + rest))
    for k, inp in enumerate(net.inputs):
        for axis, size in enumerate(inp.shape):
            for smaller in sorted({1, size // 2, size - 1}):
                if not 1 <= smaller < size:
                    continue
                shape = tuple(smaller if a == axis else d for a, d in enumerate(inp.shape))
                values_now = net.input_values()[inp.name]
                kind = ("array", np.take(values_now, range(smaller), axis=axis))
                inputs = list(net.inputs)
                inputs[k] = replace(inp, shape=shape, kind=kind)
                yield replace(net, inputs=inputs, shapes={})
    for index, layer in enumerate(net.layers):
        for path, value in list(_param_paths(layer.params)):
            if path in generate.EXPLICIT:
                continue
            options = [None]
            if isinstance(value, bool):
                options = [None]
            elif isinstance(value, (int, float)) and not isinstance(value, bool) and value not in (0, 1):
                options = [None, type(value)(1)]
            elif isinstance(value, list) and len(value) > 1:
                options = [None, value[:1]]
            for option in options:
                layers = list(net.layers)
                layers[index] = replace(layer, params=_prune_empty(_set_path(layer.params, path, option)))
                yield replace(net, layers=layers, shapes={})


def _prune_empty(params):
    return {k: _prune_empty(v) if isinstance(v, dict) else v for k, v in params.items()
            if not (isinstance(v, dict) and not _prune_empty(v))}


def shrink(outcome, log=print):
    """The smallest net found failing with ``outcome``'s signature, and its outcome."""
    net = generate.with_inputs_as_arrays(outcome.net, outcome.net.input_values())
    best = outcome
    for _ in range(ROUNDS):
        values = _blob_values(net)
        seen, candidates = set(), []
        for candidate in proposals(net, best, values):
            key = candidate.prototxt() + repr([(i.name, i.shape) for i in candidate.inputs])
            if candidate.size() < net.size() and candidate.layers and key not in seen:
                seen.add(key)
                candidates.append(candidate)
        found = None
        for start in range(0, len(candidates), BATCH):
            batch = candidates[start : start + BATCH]
            for candidate, result in zip(batch, run.evaluate(batch)):
                if result.signature == best.signature:
                    found = (candidate, result)
                    break
            if found:
                break
        if found is None:
            break
        net, best = found
        log(f"  {net.size()[0]} layers, {net.size()[1]} input values: {best.detail[:100]}")
    return net, best


def save_fixture(net, directory, name):
    """Write ``net`` as a golden fixture made by real Caffe (tools/make_reference.py)."""
    sys.path.insert(0, str(run.REPO / "tools"))
    import make_reference

    net = replace(net, name=name)
    directory = Path(directory) / name
    directory.mkdir(parents=True, exist_ok=True)
    proto = directory / "deploy.prototxt"
    proto.write_text(net.prototxt())
    make_reference.make(proto, directory, seed=net.seed % 2**31, randomize=True, inputs=net.input_values(), name=name)
    return directory


def shrink_and_save(outcome, directory, name=None, log=print):
    net, best = shrink(outcome, log=log)
    name = name or f"{(best.layer_type or 'net').lower()}_{outcome.net.name}"
    where = save_fixture(net, directory, name)
    log(f"{name}: {best.status} {best.detail}")
    return where
