"""Streaming step throughput on stock runtimes: the portable exports against the fused op.

    python bench/deploy_bench.py [--slots 256] [--steps 200] [--reps 5] [--quick] [--out DIR]

The demo's model (Embedding(256, 64) -> ResetLSTM(256) -> Dense(256), bench/serving_bench.py's
build), `--slots` live streams, one character per stream per step, ~1 % of the slots starting a
new stream at each step (serving_bench's schedule). Variants:

- fused: ``resetlstm.StreamingModel.step`` (the fused op, state in the layer's variables);
- portable SavedModel: ``StreamingModel.export(path, portable=True)`` loaded with
  ``tf.saved_model.load``, its ``step`` function (stock TF ops, state in variables);
- LiteRT: ``resetlstm.tf.export_litert(server)`` in ``ai_edge_litert``'s interpreter (its
  default XNNPACK delegate, ``num_threads`` = the cores), the state (h, c) passed in and out as
  numpy arrays, as on a device;
- ONNX Runtime: ``export_onnx(server)`` in an ``onnxruntime.InferenceSession`` (CPU provider,
  ``intra_op_num_threads`` = the cores), the state passed in and out likewise.

All variants are checked to give the fused logits first. Reported: stream-steps per second
(slots x steps / s) and a step's latency (median, p90), medians over reps, variants interleaved
rep by rep. Writes <out>/deploy-cpu-<host-kind>.json and .md.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402

import common  # noqa: E402
from serving_bench import (  # noqa: E402
    EMBED, NEW_STREAM_RATE, UNITS, VOCAB, build, schedule, time_streams, write_report)

VARIANTS = {
    "fused": "StreamingModel.step (fused op)",
    "portable_tf": "portable SavedModel in TensorFlow",
    "litert": "LiteRT interpreter (XNNPACK)",
    "onnxruntime": "ONNX Runtime (CPU)",
}


def explicit_state_server(run, slots, state_size):
    """A step(tokens, new_stream) that keeps the state in numpy and passes it in and out."""
    state = {"h": np.zeros((slots, state_size), np.float32)}
    state["c"] = state["h"].copy()

    def step(tokens, new):
        y, state["h"], state["c"] = run(tokens, new, state["h"], state["c"])
        return y
    return step


def make_servers(model, slots, directory, threads):
    import tensorflow as tf
    import resetlstm
    from resetlstm.tf import export_litert, export_onnx

    servers = {}
    fused = resetlstm.StreamingModel(model, slots)
    servers["fused"] = lambda tokens, new: np.asarray(fused.step(tokens, new))

    portable = resetlstm.StreamingModel(model, slots)
    portable.export(os.path.join(directory, "portable"), portable=True)
    loaded = tf.saved_model.load(os.path.join(directory, "portable"))
    servers["portable_tf"] = lambda tokens, new: np.asarray(
        loaded.step(tf.constant(tokens), tf.constant(new))["output_0"])

    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=export_litert(portable, os.path.join(directory,
                                                                              "step.tflite")),
                              num_threads=threads)
    interpreter.allocate_tensors()
    runner = interpreter.get_signature_runner()
    names = runner.get_input_details()  # name -> details (index)
    outs = runner.get_output_details()
    index = {k: v["index"] for k, v in names.items()}
    out_index = {k: v["index"] for k, v in outs.items()}

    def run_litert(tokens, new, h, c):
        interpreter.set_tensor(index["inputs"], tokens)
        interpreter.set_tensor(index["new_stream"], new)
        interpreter.set_tensor(index["h"], h)
        interpreter.set_tensor(index["c"], c)
        interpreter.invoke()
        return [interpreter.get_tensor(out_index[k]) for k in ("output_0", "h_next", "c_next")]

    servers["litert"] = explicit_state_server(run_litert, slots, portable.state_size)

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(export_onnx(portable, os.path.join(directory, "step.onnx")),
                                   options, providers=["CPUExecutionProvider"])

    def run_onnx(tokens, new, h, c):
        return session.run(["output_0", "h_next", "c_next"],
                           {"inputs": tokens, "new_stream": new, "h": h, "c": c})

    servers["onnxruntime"] = explicit_state_server(run_onnx, slots, portable.state_size)
    versions = dict(tensorflow=tf.__version__, resetlstm=resetlstm.__version__,
                    onnxruntime=ort.__version__)
    try:
        from importlib.metadata import version

        versions["ai_edge_litert"] = version("ai-edge-litert")
        versions["tf2onnx"] = version("tf2onnx")
    except Exception:  # pragma: no cover - metadata missing
        pass
    return servers, versions


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--slots", type=int, default=256)
    p.add_argument("--steps", type=int, default=200, help="steps timed per rep")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="slots 16, steps 20, reps 2 (tests)")
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    args = p.parse_args(argv)
    if args.quick:
        args.slots, args.steps, args.reps = 16, 20, 2
    for flag in ("slots", "steps", "reps"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag} must be at least 1, got {getattr(args, flag)}")

    import keras
    import resetlstm

    machine = common.machine_info()
    cpu, threads = machine["cpu"], machine["cores_available"]
    print(f"deploy bench on {cpu['model']} ({threads} cores, {', '.join(cpu['flags_simd'])}); "
          f"{args.slots} slots, {args.steps} steps x {args.reps} reps", flush=True)
    model, _ = build(keras, resetlstm, EMBED, UNITS)
    with tempfile.TemporaryDirectory() as directory:
        servers, versions = make_servers(model, args.slots, directory, threads)
        # every variant gives the fused logits (fresh servers: the check runs first)
        tokens, new, _ = schedule(args.slots, 12, seed=1)
        outs = {key: np.stack([step(tokens[t], new[t]) for t in range(12)])
                for key, step in servers.items()}
        checks = {key: float(np.abs(outs[key] - outs["fused"]).max()) for key in servers}
        for key, err in checks.items():
            print(f"  check {key}: max |logits - fused| = {err:.2e}", flush=True)
            if err > 1e-4:
                raise SystemExit(f"{key} disagrees with the fused step by {err}")

        tokens, new, _ = schedule(args.slots, args.steps, seed=2)
        for step in servers.values():  # warm-up
            for t in range(3):
                step(tokens[t], new[t])
        rows = time_streams(servers, VARIANTS, args.slots, args.steps, args.reps,
                            lambda t: (tokens[t], new[t]))
    keys = list(VARIANTS)
    for key in keys:
        rows[key]["max_abs_diff_vs_fused"] = checks[key]
    base = rows["fused"]["stream_steps_per_s"]
    for key in keys:
        rows[key]["vs_fused"] = rows[key]["stream_steps_per_s"] / base

    kind = common.host_kind(cpu, threads)
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"deploy-cpu-{kind}{'-quick' if args.quick else ''}")
    lines = [f"# Streaming step on stock runtimes, {args.slots} slots, CPU",
             "",
             f"{cpu['model']} (family {cpu.get('family')}, model {cpu.get('model_number')}; "
             f"{', '.join(cpu['flags_simd'])}), {threads} cores; "
             + ", ".join(f"{k} {v}" for k, v in versions.items()) + ". Model Embedding("
             f"{VOCAB}, {EMBED}) -> ResetLSTM({UNITS}) -> Dense({VOCAB}); {args.steps} steps x "
             f"{args.reps} reps, ~{100 * NEW_STREAM_RATE:.0f} % of slots start a new stream per "
             "step. Medians.",
             "",
             "| variant | stream-steps/s | step latency median (ms) | p90 (ms) | vs fused | "
             "max abs diff vs fused |",
             "|---|---:|---:|---:|---:|---:|"]
    for key in keys:
        r = rows[key]
        lines.append(f"| {r['label']} | {r['stream_steps_per_s']:,.0f} | "
                     f"{r['latency_median_ms']:.2f} | {r['latency_p90_ms']:.2f} | "
                     f"{r['vs_fused']:.2f}x | {r['max_abs_diff_vs_fused']:.1e} |")
    write_report(stem, lines, dict(machine=machine, slots=args.slots, steps=args.steps,
                                   reps=args.reps, versions=versions, results=rows))

if __name__ == "__main__":
    main()
