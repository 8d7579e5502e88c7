"""Runs inside the Caffe oracle's interpreter (``run_caffe.sh``): Caffe's solver on fixed batches.

    run_caffe.sh solver_side.py job.json

The job is a dict::

    solver        a solver prototxt (its ``net`` already points at ``net``)
    net           the train/val prototxt the solver trains and the probe net is built from
    weights       a caffemodel to start from, or null: seeded random blobs (caffe_side.randomize)
    save_weights  where to write the caffemodel Caffe starts from, or null
    steps         how many solver iterations to run
    seed          seed of Caffe, of random blobs and of the batches
    out           where to write the .npz of results (and ``<out>.json``)

Batches are drawn here, seeded, from what each blob feeds: a label of SoftmaxWithLoss, HingeLoss,
MultinomialLogisticLoss or Accuracy gets class indices (with ``ignore_label`` at about a fifth of
the positions when the loss sets one), a SigmoidCrossEntropyLoss target values in [0, 1], any
other blob N(0, 1). A train net whose first layer is MemoryData is fed through
``set_input_arrays`` (``iter_size`` distinct micro-batches per iteration); a net with Input
layers gets its blobs set before each iteration (every micro-batch of the iteration sees them).

After each iteration the probe net (the TEST phase of ``net``, sharing the solver net's blobs)
runs on one fixed probe batch. The .npz holds::

    batch/<k>/<blob>          what iteration k (1-based) was fed; for MemoryData all its micro-batches
    probe/<blob>              the probe batch
    step/<k>/param/<layer>/<i>  every learned blob after k iterations (k = 0: the start)
    step/<k>/probe/<blob>     every probe-net blob but inputs and Split tops, after k iterations
    step/<k>/loss             the train net's weighted loss of iteration k (iter_size 1 only)
    train/<k>/<layer>/bottom, train/<k>/<layer>/top   what each Dropout layer not in place
                              read and wrote in iteration k (its TRAIN-phase mask and scaling)
"""

import json
import os
import sys

import numpy as np
from google.protobuf import text_format

import caffe
from caffe.proto import caffe_pb2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from caffe_side import randomize  # noqa: E402

CLASS_LABELS = ("SoftmaxWithLoss", "HingeLoss", "MultinomialLogisticLoss", "Accuracy")


def consumers(net_param):
    """{blob: [(layer parameter, bottom index)]} over every layer of the prototxt (both phases)."""
    found = {}
    for layer in net_param.layer:
        for i, bottom in enumerate(layer.bottom):
            found.setdefault(bottom, []).append((layer, i))
    return found


def draw(blob, shape, net, net_param, rng):
    """Seeded values for ``blob`` of ``shape``, fitting what reads it."""
    for layer, index in consumers(net_param).get(blob, []):
        if index != 1:
            continue
        if layer.type in CLASS_LABELS:
            pred = net.blobs[layer.bottom[0]].data
            axis = layer.softmax_param.axis if layer.type == "SoftmaxWithLoss" else 1
            classes = pred.shape[axis]
            labels = rng.randint(0, classes, size=shape).astype(np.float32)
            if layer.loss_param.HasField("ignore_label"):
                mask = rng.uniform(size=shape) < 0.2
                labels[mask] = layer.loss_param.ignore_label
            return labels
        if layer.type == "SigmoidCrossEntropyLoss":
            return rng.uniform(0.0, 1.0, size=shape).astype(np.float32)
    return rng.normal(0.0, 1.0, size=shape).astype(np.float32)


def memory_data(net):
    layer = net.layers[0] if len(net.layers) else None
    return layer is not None and layer.type == "MemoryData"


def feed_memory(net, net_param, rng, count):
    """Draw ``count`` items for the MemoryData layer and hand them to the net."""
    name = net._layer_names[0]
    tops = list(net.top_names[name])
    data_shape = (count,) + net.blobs[tops[0]].data.shape[1:]
    data = draw(tops[0], data_shape, net, net_param, rng)
    labels = draw(tops[1], (count,), net, net_param, rng) if len(tops) > 1 else np.zeros(count, np.float32)
    data, labels = np.ascontiguousarray(data), np.ascontiguousarray(labels)
    net.set_input_arrays(data, labels)
    return {tops[0]: data, tops[1] if len(tops) > 1 else "label": labels}


def run(job):
    seed = int(job["seed"])
    caffe.set_mode_cpu()
    caffe.set_random_seed(seed)
    np.random.seed(seed)
    rng = np.random.RandomState(seed)
    net_param = caffe_pb2.NetParameter()
    with open(job["net"]) as f:
        text_format.Merge(f.read(), net_param)
    solver_param = caffe_pb2.SolverParameter()
    with open(job["solver"]) as f:
        text_format.Merge(f.read(), solver_param)
    iter_size = solver_param.iter_size
    solver = caffe.get_solver(job["solver"])
    net = solver.net
    if job.get("weights"):
        net.copy_from(job["weights"])
    else:
        randomize(net, rng)
    if job.get("save_weights"):
        net.save(job["save_weights"])
    probe = caffe.Net(job["net"], caffe.TEST)
    probe.share_with(net)

    arrays = {}
    if memory_data(probe):
        batch = probe.blobs[probe.top_names[probe._layer_names[0]][0]].data.shape[0]
        for blob, value in feed_memory(probe, net_param, rng, batch).items():
            arrays["probe/" + blob] = value
    else:
        for blob in probe.inputs:
            arrays["probe/" + blob] = draw(blob, probe.blobs[blob].data.shape, probe, net_param, rng)
    probe_inputs = {k.split("/", 1)[1] for k in arrays if k.startswith("probe/")}

    steps = int(job["steps"])
    if memory_data(net):
        batch = net.blobs[net.top_names[net._layer_names[0]][0]].data.shape[0]
        fed = feed_memory(net, net_param, rng, steps * iter_size * batch)
        per_step = iter_size * batch
        for k in range(steps):
            for blob, value in fed.items():
                arrays["batch/%d/%s" % (k + 1, blob)] = value[k * per_step : (k + 1) * per_step]
    else:
        for k in range(steps):
            for blob in net.inputs:
                arrays["batch/%d/%s" % (k + 1, blob)] = draw(blob, net.blobs[blob].data.shape, net, net_param, rng)

    split_tops = {top for i, name in enumerate(probe._layer_names) if probe.layers[i].type == "Split"
                  for top in probe.top_names[name]}

    def record(k):
        for name, blobs in net.params.items():
            for i, blob in enumerate(blobs):
                arrays["step/%d/param/%s/%d" % (k, name, i)] = blob.data.copy()
        if not memory_data(probe):
            for blob in probe.inputs:
                probe.blobs[blob].data[...] = arrays["probe/" + blob]
        probe.forward()
        for blob in probe.blobs:
            if blob not in probe_inputs and blob not in split_tops:
                arrays["step/%d/probe/%s" % (k, blob)] = probe.blobs[blob].data.copy()

    dropouts = [name for i, name in enumerate(net._layer_names) if net.layers[i].type == "Dropout"
                and list(net.bottom_names[name]) != list(net.top_names[name])]

    record(0)
    for k in range(1, steps + 1):
        if not memory_data(net):
            for blob in net.inputs:
                net.blobs[blob].data[...] = arrays["batch/%d/%s" % (k, blob)]
        solver.step(1)
        if iter_size == 1:
            weights = net.blob_loss_weights
            arrays["step/%d/loss" % k] = np.float32(sum(
                weights[b] * float(net.blobs[b].data.sum()) for b in net.outputs if weights[b]))
        for name in dropouts:
            arrays["train/%d/%s/bottom" % (k, name)] = net.blobs[net.bottom_names[name][0]].data.copy()
            arrays["train/%d/%s/top" % (k, name)] = net.blobs[net.top_names[name][0]].data.copy()
        record(k)
    np.savez_compressed(job["out"], **arrays)
    meta = {
        "train_inputs": list(net.inputs),
        "probe_inputs": sorted(probe_inputs),
        "memory_data": memory_data(net),
        "iter_size": iter_size,
        "steps": steps,
        "params": {name: len(blobs) for name, blobs in net.params.items()},
    }
    with open(job["out"] + ".json", "w") as f:
        json.dump(meta, f)


def main():
    with open(sys.argv[1]) as f:
        job = json.load(f)
    try:
        run(job)
    except Exception as err:  # noqa: BLE001 - reported to the driver as data
        with open(job["out"] + ".json", "w") as f:
            json.dump({"error": "%s: %s" % (type(err).__name__, err)}, f)


if __name__ == "__main__":
    main()
