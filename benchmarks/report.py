"""The results as Markdown: the targets of issue 12 with their measured ratios, then one table per
part with the absolute numbers (the floor's, OpenCV's) beside the ratios.

A target is "met" when its ratio is on the right side of the goal; a measurement that failed,
was killed or timed out shows why instead. Goals the issue states in words (linear scaling, 2 jobs
using the machine) get a number here: per-layer time at most 1.5× the smallest chain's, and 2 jobs
at least 1.5× the nets per minute of 1 job on 2 cores.
"""

import conversion
import hotspots
import inference
import measure
import models

FORMAT_LABELS = {"h5": ".h5", "keras": ".keras", "savedmodel": "SavedModel", "tflite": ".tflite", "onnx": ".onnx"}
METHOD_LABELS = {
    "predict": "`predict`",
    "eager": "`model(x)`",
    "predict_on_batch": "`predict_on_batch`",
    "compiled": "`tf.function`",
    "xla": "XLA",
    "tflite": ".tflite",
    "onnx": ".onnx",
}
LINEAR_GOAL = 1.5
JOBS_GOAL = 1.5


def _x(value, digits=2):
    return "–" if value is None else f"{value:.{digits}f}×"


def _s(value, digits=1):
    return "–" if value is None else f"{value:.{digits}f} s"


def _met(ok):
    return "–" if ok is None else ("yes" if ok else "**no**")


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


# ---------------------------------------------------------------- targets


def target_rows(results):
    rows = []
    conv = results.get("conversion")
    if conv:
        tf_rss = conv["tf_rss_mib"]
        for entry in conv["nets"]:
            label = models.LABELS[entry["net"]]
            for fmt, r in entry["formats"].items():
                case = f"{label} → {FORMAT_LABELS[fmt]}"
                if r["status"] != "ok":
                    rows.append(("conversion time", case, r["note"], _time_goal(fmt), "**no**"))
                    rows.append(("conversion memory", case, r["note"], f"≤ {conversion.TARGET_MEMORY}× model", "**no**"))
                    continue
                share, budget = conversion.target_ratio(fmt, r)
                if fmt in conversion.TARGET_FLOOR:
                    measured = f"{_x(r['ratio'])} floor ({_s(r['seconds'])} vs {_s(r['floor_s'])})"
                else:
                    measured = f"{_x(share)} budget ({_s(r['seconds'])} vs {budget})" if share is not None else budget
                rows.append(("conversion time", case, measured, _time_goal(fmt), _met(None if share is None else share <= 1)))
                mem = conversion.memory_multiple(r, entry["size_mib"], tf_rss)
                rows.append(("conversion memory", case, f"{_x(mem)} model (+{r['peak_mib'] - tf_rss:.0f} MiB)",
                             f"≤ {conversion.TARGET_MEMORY}× model", _met(mem <= conversion.TARGET_MEMORY)))
    inf = results.get("inference")
    if inf:
        for entry in inf["nets"]:
            label = models.LABELS[entry["net"]]
            if "error" in entry:
                rows.append(("inference", label, entry["error"], "", "**no**"))
                continue
            for batch, res in entry["batches"].items():
                cv = res["opencv"]["seconds"]
                for method, goal in inference.TARGETS.items():
                    case = f"{label} b{batch} {METHOD_LABELS[method]}"
                    if method not in res:
                        why = entry["failed"].get(f"{method}@{batch}") or _export_note(entry, method) or "not run"
                        rows.append(("inference", case, why, f"≥ {goal}× OpenCV", "**no**"))
                        continue
                    ratio = res[method]["ratio"]
                    rows.append(("inference", case, f"{_x(ratio)} OpenCV ({int(batch) / cv:.1f} img/s)", f"≥ {goal}× OpenCV",
                                 _met(ratio >= goal)))
    scal = results.get("scaling")
    if scal:
        for row in scal["chains"]:
            case = f"chain of {row['layers']:,} layers"
            if row["status"] != "ok":
                rows.append(("scale: layers", case, row["note"], f"≤ {LINEAR_GOAL}× per layer", "**no**"))
            elif "per_layer_vs_first" in row:
                rows.append(("scale: layers", case, f"{_x(row.get('per_layer_vs_first'))} ms/layer of the first "
                             f"({row['ms_per_layer']:.2f} ms/layer)", f"≤ {LINEAR_GOAL}× per layer",
                             _met(row["per_layer_vs_first"] <= LINEAR_GOAL)))
        big = scal.get("big")
        if big:
            b, h5 = big["build"], big["h5"]
            rows.append(("scale: bytes", f"{big['size_mib']:.0f} MiB MLP, build", f"{_x(b['ratio'])} floor", "streams", _met(b["ratio"] is not None)))
            rows.append(("scale: bytes", f"{big['size_mib']:.0f} MiB MLP → .h5", h5["note"] or f"{_x(h5['ratio'])} floor", "≤ 1.3× floor",
                         _met(None if h5["ratio"] is None else h5["ratio"] <= conversion.TARGET_FLOOR["h5"])))
    batch = results.get("batch")
    if batch:
        runs = {r["jobs"]: r for r in batch["runs"]}
        one = runs.get(1, {}).get("per_minute")
        for jobs, r in runs.items():
            if jobs == 1:
                rows.append(("many models", f"batch, 1 job ({batch['nets']} nets)", f"{one:.1f} nets/min" if one else r.get("note"), "", "–"))
            elif "per_minute" in r and one:
                ratio = r.get("ratio", r["per_minute"] / one)
                rows.append(("many models", f"batch, {jobs} jobs", f"{_x(ratio)} 1 job ({r['per_minute']:.1f} nets/min)",
                             f"≥ {JOBS_GOAL}× 1 job", _met(ratio >= JOBS_GOAL)))
            else:
                rows.append(("many models", f"batch, {jobs} jobs", r.get("note", ""), f"≥ {JOBS_GOAL}× 1 job", "–"))
    return rows


def _time_goal(fmt):
    if fmt in conversion.TARGET_FLOOR:
        return f"≤ {conversion.TARGET_FLOOR[fmt]}× floor"
    return "≤ 2× floor + converter"


def _export_note(entry, method):
    info = entry.get("exports", {}).get(method)
    return info["note"] if info and info["status"] != "ok" else ""


# ---------------------------------------------------------------- per-part tables


def conversion_tables(conv):
    tf_rss = conv["tf_rss_mib"]
    fmts = [f for f in conversion.FORMATS if any(f in e["formats"] for e in conv["nets"])]
    header = ["net", "size", "floor (to exit)", "build in memory"] + [f"→ {FORMAT_LABELS[f]}" for f in fmts] + ["max err / tol"]
    time_rows, mem_rows = [], []
    for e in conv["nets"]:
        b = e["build"]
        errors = b["errors"] or {}
        worst = max((err / tol for err, tol in errors.values()), default=None)
        floor = measure.median([r["floor_s"] for r in e["formats"].values()])
        cells = [models.LABELS[e["net"]], f"{e['size_mib']:.0f} MiB", _s(floor, 2),
                 f"{_x(b['ratio'])} ({_s(b['seconds'], 2)} vs {_s(b['floor_s'], 2)})"]
        mems = [models.LABELS[e["net"]], f"{e['size_mib']:.0f} MiB", f"{tf_rss:.0f} MiB",
                f"{_x((b['rss_mib'] - tf_rss) / e['size_mib']) if b['rss_mib'] else '–'}"]
        for f in fmts:
            r = e["formats"].get(f)
            if r is None:
                cells.append("")
                mems.append("")
                continue
            if r["status"] != "ok":
                cells.append(r["note"])
                mems.append(r["note"])
                continue
            cell = f"{_x(r['ratio'])} ({_s(r['seconds'])})"
            conv_alone = r.get("converter")
            if conv_alone:
                cell += f"; converter {_s(conv_alone['seconds']) if conv_alone['seconds'] is not None else conv_alone['note']}"
            cells.append(cell)
            mem = conversion.memory_multiple(r, e["size_mib"], tf_rss)
            mem_cell = f"{_x(mem)} (+{r['peak_mib'] - tf_rss:.0f} MiB)"
            if conv_alone and conv_alone.get("rss_growth_mib") is not None:
                mem_cell += f"; converter +{conv_alone['rss_growth_mib']:.0f} MiB"
            mems.append(mem_cell)
        cells.append(f"{worst:.3f}" if worst is not None else "–")
        time_rows.append(cells)
        mem_rows.append(mems[: 4 + len(fmts)])
    mem_header = ["net", "size", "TensorFlow's own", "build in memory"] + [f"→ {FORMAT_LABELS[f]}" for f in fmts]
    return (["Time, as a multiple of the floor run paired with it (median of the pairs); converter = the runtime's own "
             "converter alone:", ""] + _table(header, time_rows)
            + ["", "Peak RSS above TensorFlow's own, as a multiple of the caffemodel's size:", ""] + _table(mem_header, mem_rows))


def inference_table(inf):
    methods = [m for m in inference.METHODS[1:]]
    header = ["net", "batch", "OpenCV"] + [METHOD_LABELS[m] for m in methods] + ["outputs: max err / tol", "logits: err / tol"]
    rows = []
    for e in inf["nets"]:
        label = models.LABELS[e["net"]]
        if "error" in e:
            rows.append([label, "", e["error"]] + [""] * (len(methods) + 2))
            continue
        for batch, res in e["batches"].items():
            cv = res["opencv"]["seconds"]
            cells = [label, batch, f"{int(batch) / cv:.1f} img/s"]
            for m in methods:
                cells.append(_x(res[m]["ratio"]) if m in res else "n/a")
            worst = inference.worst_check(res)
            notes = {r["check"][2] for r in res.values() if r["check"][2]}
            cells.append((f"{worst:.3g}" if worst is not None else "–") + (f" ({', '.join(sorted(notes))})" if notes else ""))
            logits = e.get("logits", {}).get(batch)
            cells.append(f"{logits[0] / logits[1]:.3g} ({logits[2]})" if logits else "–")
            rows.append(cells)
    lines = [f"Speed as a multiple of OpenCV's (> 1: faster), median over {inf['rounds']} rounds of paired windows, "
             f"{inf['threads']} threads each:", ""] + _table(header, rows)
    for e in inf["nets"]:
        for what, why in e.get("failed", {}).items():
            lines.append(f"- {models.LABELS[e['net']]} {what}: {why}")
        for fmt, info in e.get("exports", {}).items():
            if info["status"] != "ok":
                lines.append(f"- {models.LABELS[e['net']]} export {fmt}: {info['note']}")
    return lines


def scaling_tables(scal):
    rows = []
    for r in scal["chains"]:
        if r["status"] == "ok":
            rows.append([f"{r['layers']:,}", _s(r["floor_s"]), _s(r["wall"]), f"{r['ms_per_layer']:.2f}",
                         _x(r.get("per_layer_vs_first")), f"{r['peak_mib']:.0f} MiB"])
        else:
            rows.append([f"{r['layers']:,}", _s(r["floor_s"]), f"{r['note']} ({_s(r['wall'])})", "", "", f"{r['peak_mib']:.0f} MiB"])
    lines = [f"Chains of small layers → .{scal['format']} (one run each):", ""]
    lines += _table(["layers", "floor", "conversion", "ms per layer", "vs the first", "peak RSS"], rows)
    big = scal.get("big")
    if big:
        b, h5 = big["build"], big["h5"]
        errors = b["errors"] or {}
        worst = max((err / tol for err, tol in errors.values()), default=None)
        lines += ["", f"The > 2 GiB MLP ({big['size_mib']:.0f} MiB), paired with floors that copy it:", ""]
        lines += _table(
            ["floor (import + copy)", "build in memory", "build RSS", "floor to exit", "CLI → .h5", ".h5 peak RSS", "max err / tol"],
            [[_s(b["floor_s"], 2), f"{_x(b['ratio'])} ({_s(b['seconds'], 2)})", f"{b['rss_mib']:.0f} MiB" if b["rss_mib"] else "–",
              _s(h5["floor_s"], 2), h5["note"] or f"{_x(h5['ratio'])} ({_s(h5['seconds'])})",
              f"{h5['peak_mib']:.0f} MiB" if h5["peak_mib"] else "–", f"{worst:.3f}" if worst is not None else "–"]],
        )
    return lines


def batch_table(batch):
    rows = []
    for r in batch["runs"]:
        if "per_minute" in r:
            cpu = r.get("cpu")
            rates = r.get("per_minute_rounds", [])
            rows.append([r["jobs"], f"{r['ok']} of {batch['nets']}", _s(r["wall"], 0),
                         f"{r['per_minute']:.1f}" + (f" ({', '.join(f'{x:.0f}' for x in rates)})" if len(rates) > 1 else ""),
                         _s(cpu, 0) if cpu else "–", f"{cpu / r['wall']:.2f}" if cpu else "–", f"{r['peak_mib']:.0f} MiB",
                         f"{r['tree_peak_mib']:.0f} MiB" if r.get("tree_peak_mib") else "–"])
        else:
            rows.append([r["jobs"], r.get("note", ""), "", "", "", "", "", ""])
    lines = [f"`caffe2keras batch` over the golden zoo replicas → .{batch['format']}"
             + (f", medians of {batch['rounds']} rounds (each round's nets/min in brackets)" if batch.get("rounds", 1) > 1 else "")
             + (f"; this session got {batch['cores_available']:.2f} cores of busy loops" if "cores_available" in batch else "")
             + ":", ""]
    lines += _table(["jobs", "converted", "wall", "nets/min", "CPU", "cores busy", "peak RSS (largest process)",
                           "peak RSS (all processes)"], rows)
    for r in batch["runs"]:
        for failure in r.get("failed", []):
            lines.append(f"- failed ({r['jobs']} job): {failure}")
    return lines


def startup_table(rows):
    lines = ["Fresh processes, median wall time to exit of five:", ""]
    return lines + _table(["command", "wall"], [[f"`{name}`", r["note"] or _s(r["seconds"], 2)] for name, r in rows.items()])


def hotspot_lines(hot):
    lines = ["Per-layer times (compiled one by one, TensorFlow's per-call overhead subtracted) beside OpenCV's "
             "(`getPerfProfile`; OpenCV fuses ReLU/BatchNorm/Scale into the convolution):", ""]
    for e in hot["nets"]:
        lines += hotspots.summary(e)
        if "error" in e:
            continue
        for kind in ("predict", "eager"):
            top = e["cprofile"][kind]["top_own"][:4]
            lines.append(f"    cProfile {kind} ({e['cprofile'][kind]['ms_per_call']:.1f} ms/call): " + "; ".join(
                f"{r['function']} {r['own_ms']:.1f} ms" for r in top))
    return lines


def markdown(results):
    meta = results["meta"]
    lines = [f"Run of {meta['date']} UTC, commit {meta['commit']} (caffe2keras from {meta['caffe2keras']}), {meta['machine']}; "
             f"{meta['load_start']} at the start, {meta['load_end']} at the end. "
             f"Versions: {meta['versions']}. Durations: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in meta["durations_s"].items()) + ".",
             ""]
    lines += _table(["target", "case", "measured", "goal", "met"], target_rows(results))
    if "conversion" in results:
        lines += ["", "#### Conversion", ""] + conversion_tables(results["conversion"])
    if "inference" in results:
        lines += ["", "#### Inference", ""] + inference_table(results["inference"])
    if "scaling" in results:
        lines += ["", "#### Scale", ""] + scaling_tables(results["scaling"])
    if "batch" in results:
        lines += ["", "#### Many models", ""] + batch_table(results["batch"])
    if "startup" in results:
        lines += ["", "#### Start-up", ""] + startup_table(results["startup"])
    if "hotspots" in results:
        lines += ["", "#### Where the time goes", ""] + ["```"] + hotspot_lines(results["hotspots"]) + ["```"]
    return "\n".join(lines) + "\n"
