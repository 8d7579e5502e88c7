"""Scale with the net: conversion time against the number of layers and against model bytes.

- **layers**: chains of N small layers (``models.chain``: 1×1 Convolution, Scale, ReLU and a
  residual Eltwise, repeated) converted by the CLI, one run each, paired with a floor run
  (importing TensorFlow, to exit). Time per layer = (conversion − floor) / N; linear growth keeps
  it flat from 1,000 to 50,000 layers. Each run's time limit grows with N.
- **bytes**: the > 2 GiB MLP (``models.big_mlp``) built in memory (outputs checked against numpy)
  and converted to ``.h5`` by the CLI, each paired with a floor (import + copying its 2 GiB).
"""

import conversion
import measure
import models

LAYERS = (1000, 10000, 50000)
# The time limit of a chain's conversion: BASE_S + PER_LAYER_S × layers.
BASE_S, PER_LAYER_S = 300.0, 0.06


def chains(work, layers=LAYERS, fmt="h5", guards=None):
    guards = dict(guards or {})
    rows = []
    for n in layers:
        prototxt, caffemodel = models.chain(work, n)
        out = work / "out" / f"chain_{n}.{fmt}"
        out.parent.mkdir(exist_ok=True)
        floor = conversion.run_floor(work, caffemodel, guards)
        out.unlink(missing_ok=True)
        limits = guards | {"timeout": BASE_S + PER_LAYER_S * n}
        r = measure.run(measure.cli("convert", prototxt, caffemodel, "-o", out, "--force", "-q"), **limits)
        out.unlink(missing_ok=True)
        row = {"layers": n, "floor_s": floor["wall"], "wall": r.wall, "peak_mib": r.peak_mib, "status": r.status,
               "note": r.note, "load": measure.load()}
        if r.ok:
            row["ms_per_layer"] = (r.wall - floor["wall"]) / n * 1e3
        rows.append(row)
        print(f"  chain of {n} layers → .{fmt}: " + (
            f"{r.wall:.1f} s (floor {floor['wall']:.1f} s), {row['ms_per_layer']:.2f} ms per layer, peak {r.peak_mib:.0f} MiB"
            if r.ok else r.note), flush=True)
    first = next((row for row in rows if "ms_per_layer" in row), None)
    for row in rows:
        if first and "ms_per_layer" in row and first["ms_per_layer"] > 0:
            row["per_layer_vs_first"] = row["ms_per_layer"] / first["ms_per_layer"]
    return rows


def big(work, repeats=3, keep=False, guards=None):
    guards = guards or {}
    prototxt, caffemodel = models.big_mlp(work)
    try:
        size = caffemodel.stat().st_size / measure.MiB
        result = {"size_mib": size, "load": measure.load()}
        result["build"] = conversion.build_pairs(work, "big_mlp", prototxt, caffemodel, [1, models.BIG_IN], "big", repeats, guards)
        result["h5"] = conversion.cli_pairs(work, "big_mlp", prototxt, caffemodel, [], "h5", repeats, guards)
        build, h5 = result["build"], result["h5"]
        print(f"  big_mlp ({size:.0f} MiB): build in memory {conversion._ratio_text(build['ratio'])} floor "
              f"({build['floor_s']:.1f} s), CLI → .h5 {h5['note'] or conversion._ratio_text(h5['ratio']) + ' floor'}", flush=True)
        return result
    finally:
        if not keep:
            caffemodel.unlink()


def run(work, layers=LAYERS, fmt="h5", big_model=True, repeats=3, keep=False, guards=None):
    results = {"chains": chains(work, layers, fmt, guards), "format": fmt}
    if big_model:
        results["big"] = big(work, repeats, keep, guards)
    return results
