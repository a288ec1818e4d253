"""Streaming inference throughput: resetlstm.StreamingModel against the usual way.

    python bench/serving_bench.py [--slots 256] [--steps 200] [--reps 5] [--quick] [--out DIR]

Same model on both sides (the demo's: Embedding(256, 64) -> LSTM(256) -> Dense(256), the same
weights), `--slots` live streams, one character per stream per step; about 1 % of the slots start
a new stream at each step (continuous batching).

- resetlstm: ``StreamingModel(model, slots).step(tokens, new_stream)``: one fused step for all
  slots, the state stays in the layer's variables, new streams reset their row inside the step.
- usual way: keras.layers.LSTM(return_state=True) called one step at a time on [slots, 1] inputs
  with ``initial_state=[h, c]``; each stream's (h, c) is kept in a Python dict, gathered into the
  batch before the call and scattered back after it, a new stream starting from zeros. Three
  ways to call it: ``model.predict_on_batch`` (what Keras offers for one batch), ``model(...)``
  eagerly, and ``model`` inside a ``tf.function`` (the fastest: no per-step Keras overhead).

Reported: stream-steps per second (slots x steps / second) and one step's latency (median, p90)
per variant, medians over reps; variants interleave rep by rep. Outputs are checked equal first
(all variants must give the same logits for the same streams). Writes
<out>/serving-cpu-<host-kind>.json and .md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402

import common  # noqa: E402

VOCAB = 256
EMBED, UNITS = 64, 256  # the demo's model (defaults of --embed / --units)
NEW_STREAM_RATE = 0.01


def build(keras, resetlstm, embed, units):
    tokens = keras.Input((None,), dtype="int32")
    resets = keras.Input((None,), dtype="bool")
    h = keras.layers.Embedding(VOCAB, embed)(tokens)
    h = resetlstm.ResetLSTM(units, return_sequences=True)(h, resets=resets)
    ours = keras.Model([tokens, resets], keras.layers.Dense(VOCAB)(h))
    rng = np.random.default_rng(0)
    ours.set_weights([rng.normal(0, 0.2, w.shape).astype("float32") for w in ours.get_weights()])

    tok = keras.Input((1,), dtype="int32")
    h0, c0 = keras.Input((units,)), keras.Input((units,))
    e = keras.layers.Embedding(VOCAB, embed)(tok)
    y, h1, c1 = keras.layers.LSTM(units, return_state=True)(e, initial_state=[h0, c0])
    usual = keras.Model([tok, h0, c0], [keras.layers.Dense(VOCAB)(y), h1, c1])
    usual.set_weights(ours.get_weights())
    return ours, usual


class UsualServer:
    """Per-stream (h, c) in a dict; gather before, scatter after every step."""

    def __init__(self, call, slots, units):
        self.call = call
        self.state = {}
        self.holder = list(range(slots))  # stream id in each slot
        self.zeros = np.zeros(units, np.float32)

    def step(self, tokens, new_stream, new_ids):
        for s in np.flatnonzero(new_stream):
            self.state.pop(self.holder[s], None)  # the old stream ended
            self.holder[s] = new_ids[s]
        h = np.stack([self.state.get(i, (self.zeros, self.zeros))[0] for i in self.holder])
        c = np.stack([self.state.get(i, (self.zeros, self.zeros))[1] for i in self.holder])
        logits, h, c = self.call([tokens[:, None], h, c])
        h, c = np.asarray(h), np.asarray(c)
        for s, i in enumerate(self.holder):
            self.state[i] = (h[s], c[s])
        return np.asarray(logits)


def schedule(slots, steps, seed):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, VOCAB, size=(steps, slots)).astype(np.int32)
    new = rng.random((steps, slots)) < NEW_STREAM_RATE
    new[0] = True
    ids = np.cumsum(new.reshape(-1)).reshape(steps, slots) + 1000  # fresh id per new stream
    return tokens, new, ids


def time_streams(servers, variants, slots, steps, reps, args_at):
    """Times ``servers[key](*args_at(t))`` for t < steps, every variant once per rep in an order
    that rotates rep by rep. Returns {key: row} with the median stream-steps/s (slots x steps
    / s) over reps, the median and p90 step latency (ms) and every rep's rate."""
    keys = list(variants)
    latencies = {key: [] for key in keys}
    rates = {key: [] for key in keys}
    for rep in range(reps):
        for key in keys[rep % len(keys):] + keys[:rep % len(keys)]:
            step, lat = servers[key], []
            start = time.perf_counter()
            for t in range(steps):
                t0 = time.perf_counter()
                step(*args_at(t))
                lat.append((time.perf_counter() - t0) * 1e3)
            rates[key].append(slots * steps / (time.perf_counter() - start))
            latencies[key].extend(lat)
        print(f"  rep {rep + 1}/{reps}: " + ", ".join(
            f"{k} {rates[k][-1]:,.0f}/s" for k in keys), flush=True)
    rows = {}
    for key in keys:
        lat = sorted(latencies[key])
        rows[key] = dict(label=variants[key], stream_steps_per_s=statistics.median(rates[key]),
                         latency_median_ms=statistics.median(lat),
                         latency_p90_ms=lat[int(0.9 * (len(lat) - 1))], rates=rates[key])
    return rows


def write_report(stem, lines, payload):
    """Prints the markdown `lines` and writes them to <stem>.md, `payload` to <stem>.json."""
    text = "\n".join(lines) + "\n"
    print(text)
    with open(stem + ".md", "w") as f:
        f.write(text)
    with open(stem + ".json", "w") as f:
        json.dump(payload, f, indent=1)
    print(f"wrote {stem}.md and .json")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--slots", type=int, default=256)
    p.add_argument("--steps", type=int, default=200, help="steps timed per rep")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--units", type=int, default=UNITS, help="LSTM units")
    p.add_argument("--embed", type=int, default=EMBED, help="embedding size")
    p.add_argument("--quick", action="store_true", help="slots 16, steps 20, reps 2 (tests)")
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    args = p.parse_args(argv)
    if args.quick:
        args.slots, args.steps, args.reps = 16, 20, 2

    import tensorflow as tf
    import keras
    import resetlstm

    machine = common.machine_info()
    cpu = machine["cpu"]
    print(f"serving bench on {cpu['model']} ({machine['cores_available']} cores, "
          f"{', '.join(cpu['flags_simd'])}); TensorFlow {tf.__version__}, Keras "
          f"{keras.__version__}; {args.slots} slots, {args.steps} steps x {args.reps} reps",
          flush=True)
    ours_model, usual_model = build(keras, resetlstm, args.embed, args.units)
    compiled = tf.function(lambda x: usual_model(x, training=False), reduce_retracing=True)
    variants = {
        "resetlstm": "resetlstm.StreamingModel.step",
        "usual_tf_function": "keras LSTM in tf.function + gather/scatter",
        "usual_predict": "keras LSTM predict_on_batch + gather/scatter",
        "usual_eager": "keras LSTM eager call + gather/scatter",
    }

    def make_server(key):
        if key == "resetlstm":
            server = resetlstm.StreamingModel(ours_model, args.slots)
            return lambda tokens, new, ids: np.asarray(server.step(tokens, new))
        call = {"usual_tf_function": compiled,
                "usual_predict": usual_model.predict_on_batch,
                "usual_eager": lambda x: usual_model(x, training=False)}[key]
        return UsualServer(call, args.slots, args.units).step

    # correctness: every variant gives the same logits on the same schedule
    tokens, new, ids = schedule(args.slots, 12, seed=1)
    outs = {}
    for key in variants:
        step = make_server(key)
        outs[key] = np.stack([step(tokens[t], new[t], ids[t]) for t in range(12)])
    for key in variants:
        err = float(np.abs(outs[key] - outs["resetlstm"]).max())
        print(f"  check {key}: max |logits - resetlstm| = {err:.2e}", flush=True)
        if err > 1e-4:
            raise SystemExit(f"{key} disagrees with resetlstm by {err}")

    servers = {key: make_server(key) for key in variants}
    tokens, new, ids = schedule(args.slots, args.steps, seed=2)
    for step in servers.values():  # warm-up (traces, allocations)
        for t in range(3):
            step(tokens[t], new[t], ids[t])
    keys = list(variants)
    rows = time_streams(servers, variants, args.slots, args.steps, args.reps,
                        lambda t: (tokens[t], new[t], ids[t]))
    base = rows["resetlstm"]["stream_steps_per_s"]
    for key in keys:
        rows[key]["resetlstm_speedup"] = base / rows[key]["stream_steps_per_s"]

    kind = common.host_kind(cpu, machine["cores_available"])
    os.makedirs(args.out, exist_ok=True)
    size = "" if (args.embed, args.units) == (64, 256) else f"-e{args.embed}-h{args.units}"
    stem = os.path.join(args.out, f"serving-cpu-{kind}{size}{'-quick' if args.quick else ''}")
    lines = [f"# Streaming inference, {args.slots} slots, CPU",
             "",
             f"{cpu['model']} (family {cpu.get('family')}, model {cpu.get('model_number')}; "
             f"{', '.join(cpu['flags_simd'])}), {machine['cores_available']} cores; "
             f"TensorFlow {tf.__version__}, Keras {keras.__version__}. Model Embedding({VOCAB}, "
             f"{args.embed}) -> LSTM({args.units}) -> Dense({VOCAB}); {args.steps} steps x "
             f"{args.reps} reps, ~{100 * NEW_STREAM_RATE:.0f} % of slots start a new stream per step. "
             "Medians.",
             "",
             "| variant | stream-steps/s | step latency median (ms) | p90 (ms) | resetlstm is |",
             "|---|---:|---:|---:|---:|"]
    for key in keys:
        r = rows[key]
        lines.append(f"| {r['label']} | {r['stream_steps_per_s']:,.0f} | "
                     f"{r['latency_median_ms']:.2f} | {r['latency_p90_ms']:.2f} | "
                     f"{r['resetlstm_speedup']:.2f}x |")
    write_report(stem, lines, dict(
        machine=machine, slots=args.slots, steps=args.steps, reps=args.reps,
        versions=dict(tensorflow=tf.__version__, keras=keras.__version__,
                      resetlstm=resetlstm.__version__),
        results=rows))


if __name__ == "__main__":
    main()
