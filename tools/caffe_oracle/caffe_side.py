"""Runs inside the Caffe oracle's interpreter (``run_caffe.sh``): real Caffe, numpy 1.x, no TensorFlow.

    run_caffe.sh caffe_side.py jobs.json

``jobs.json`` is a list of jobs; each is a dict::

    prototxt      the net Caffe loads (already rewritten for this Caffe, see run.py)
    weights       a caffemodel to load, or null: Caffe's fillers initialise the net
    randomize     overwrite every learned blob with seeded random values (BatchNorm statistics
                  kept valid: variance > 0, scale factor > 0) before saving/running
    save_weights  where to write the caffemodel Caffe holds after initialisation, or null (a name
                  ending in .h5: Caffe's HDF5 format, save_hdf5)
    inputs        an .npz with a value per input blob, or null: seeded N(0, 1) inputs
    seed          the seed of fillers, randomised blobs and random inputs
    out           where to write the .npz of results
    every_layer   true: record each layer's tops right after that layer ran (in-place chains
                  visible step by step) as layer/<layer>/<top>; false: only the network outputs
    keep          blob names whose values after the forward pass to record as blob/<name>

The .npz holds input/<blob>, layer/<layer>/<top> (every_layer), output/<blob> and blob/<kept>; a sidecar
``<out>.json`` holds the layer list (name, type, bottoms, tops with shapes) in execution order,
or ``{"error": "..."}`` when Caffe refused the net (Caffe's CHECK failures abort the process, so
the driver also reports a job whose files never appeared).
"""

import json
import sys

import numpy as np

import caffe


def randomize(net, rng):
    for name, blobs in net.params.items():
        if net.layer_dict[name].type == "BatchNorm":
            # Caffe stores running sums and their scale factor: mean = blobs[0] / blobs[2].
            factor = rng.uniform(0.5, 2.0) if len(blobs) > 2 else 1.0
            blobs[0].data[...] = rng.normal(0.0, 0.5, blobs[0].data.shape) * factor
            blobs[1].data[...] = rng.uniform(0.2, 2.0, blobs[1].data.shape) * factor
            if len(blobs) > 2:
                blobs[2].data[...] = factor
            continue
        for blob in blobs:
            shape = blob.data.shape
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            blob.data[...] = rng.normal(0.0, 1.0 / np.sqrt(max(fan_in, 1)), shape)


def stats(value):
    flat = value.astype(np.float64).ravel()
    index = np.linspace(0, flat.size - 1, num=min(64, flat.size)).astype(int) if flat.size else np.zeros(0, int)
    return {
        "shape": list(value.shape),
        "sum": float(flat.sum()) if flat.size else 0.0,
        "abs_sum": float(np.abs(flat).sum()) if flat.size else 0.0,
        "l2": float(np.sqrt((flat**2).sum())) if flat.size else 0.0,
        "min": float(flat.min()) if flat.size else 0.0,
        "max": float(flat.max()) if flat.size else 0.0,
        "sample_index": index.tolist(),
        "sample": flat[index].tolist(),
    }


def run(job):
    seed = int(job.get("seed", 0))
    caffe.set_mode_cpu()
    caffe.set_random_seed(seed)
    np.random.seed(seed)
    if job.get("weights"):
        net = caffe.Net(job["prototxt"], job["weights"], caffe.TEST)
    else:
        net = caffe.Net(job["prototxt"], caffe.TEST)
    rng = np.random.RandomState(seed)
    if job.get("randomize"):
        randomize(net, rng)
    if job.get("save_weights"):
        if job["save_weights"].endswith(".h5"):
            net.save_hdf5(job["save_weights"])
        else:
            net.save(job["save_weights"])

    given = dict(np.load(job["inputs"])) if job.get("inputs") else {}
    arrays = {}
    for name in net.inputs:
        blob = net.blobs[name]
        if name in given:
            value = np.asarray(given[name], dtype=np.float32)
            if value.shape != blob.data.shape:
                blob.reshape(*value.shape)
        else:
            value = rng.normal(0.0, 1.0, blob.data.shape).astype(np.float32)
        arrays["input/" + name] = value
    if any(net.blobs[name].data.shape != arrays["input/" + name].shape for name in net.inputs):
        net.reshape()
    for name in net.inputs:
        net.blobs[name].data[...] = arrays["input/" + name]

    layers = []
    names = list(net._layer_names)
    # By index, not net.top_names[name]: layer names may repeat or be empty (a nameless layer).
    blob_names = list(net._blob_names)
    every = job.get("every_layer", True)
    if every:
        net.reshape()
        for name in net.inputs:
            net.blobs[name].data[...] = arrays["input/" + name]
    for i, name in enumerate(names):
        tops = [blob_names[j] for j in net._top_ids(i)]
        if every:
            net._forward(i, i)
            for top in tops:
                arrays["layer/%s/%s" % (name, top)] = net.blobs[top].data.copy()
        layers.append({
            "name": name,
            "type": net.layers[i].type,
            "bottoms": [blob_names[j] for j in net._bottom_ids(i)],
            "tops": {top: list(net.blobs[top].data.shape) for top in tops},
        })
    if not every:
        net.forward()
    for name in net.outputs:
        arrays["output/" + name] = net.blobs[name].data.copy()
    for name in job.get("keep", []):
        arrays["blob/" + name] = net.blobs[name].data.copy()
    np.savez(job["out"], **arrays)
    meta = {"layers": layers, "inputs": list(net.inputs), "outputs": list(net.outputs)}
    if job.get("stats"):
        # Each top as its layer left it: an in-place layer after it rewrites the blob.
        for layer in meta["layers"]:
            layer["tops"] = {
                top: stats(arrays.get("layer/%s/%s" % (layer["name"], top), net.blobs[top].data))
                for top in layer["tops"]
            }
    with open(job["out"] + ".json", "w") as f:
        json.dump(meta, f)


def main():
    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    for job in jobs:
        # One bad net (Python-level error) must not cost the others; CHECK failures abort the
        # whole process, which the driver notices and retries job by job.
        try:
            run(job)
        except Exception as err:  # noqa: BLE001 - reported to the driver as data
            with open(job["out"] + ".json", "w") as f:
                json.dump({"error": "%s: %s" % (type(err).__name__, err)}, f)
        sys.stdout.write("done %s\n" % job["out"])
        sys.stdout.flush()


if __name__ == "__main__":
    main()
