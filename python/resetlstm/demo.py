"""The demo behind ``python -m resetlstm``: a character-level language model on the Python
standard library's own source files, trained statefully on packed document streams, with either
cell (``--cell lstm``, the default, or ``--cell gru``).

Every ``.py`` file is one document. The files are laid end to end into ``--batch-size`` streams
(``resetlstm.data.pack_documents``) with a reset at the first character of every file, and a
stateful ``ResetLSTM`` (``ResetGRU``) reads each stream batch after batch, so the state carries the whole file's
context across batches but never leaks from one file into the next.

``--compare`` trains the same model with ``keras.layers.LSTM`` (``GRU``) the usual way: every file cut into
``--seq-len`` windows, the last window of each file padded, each window an independent sequence
starting from a zero state (not stateful), windows shuffled. Both runs see every training character
the same number of times and are scored on the same held-out files and the same target characters.
"""
from __future__ import annotations

import argparse
import math
import os
import sysconfig
import time

import numpy as np

VOCAB = 256  # bytes: lossless for any file; bits per character = bits per UTF-8 byte
LN2 = math.log(2.0)

QUICK = dict(train_chars=30_000, val_chars=6_000, max_doc_chars=2_000, batch_size=16,
             seq_len=32, units=32, embed=16, epochs=1, sample_chars=60)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m resetlstm",
        description="Character-level LSTM (or GRU) language model on the Python standard "
                    "library's .py files, trained statefully with resetlstm.ResetLSTM "
                    "(ResetGRU) on packed document streams (resets at file boundaries).")
    p.add_argument("--corpus", default=None,
                   help="directory searched for .py files (default: this Python's stdlib)")
    p.add_argument("--train-chars", type=int, default=2_000_000,
                   help="training characters (whole files, in a seeded random order)")
    p.add_argument("--val-chars", type=int, default=100_000,
                   help="held-out characters (other files) for validation bits per character")
    p.add_argument("--max-doc-chars", type=int, default=2_000,
                   help="keep only the first N characters of each file (cut at a line end), so "
                        "that no single file is much longer than a stream")
    p.add_argument("--batch-size", type=int, default=256, help="streams (batch rows)")
    p.add_argument("--seq-len", type=int, default=32, help="time steps per batch")
    p.add_argument("--cell", default="lstm", choices=("lstm", "gru"),
                   help="the recurrent cell: ResetLSTM (against keras.layers.LSTM with "
                        "--compare) or ResetGRU (against keras.layers.GRU)")
    p.add_argument("--units", type=int, default=256, help="recurrent units")
    p.add_argument("--embed", type=int, default=64, help="character embedding size")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate")
    p.add_argument("--compare", action="store_true",
                   help="also train keras.layers.LSTM (GRU) the usual way and print both side "
                        "by side")
    p.add_argument("--sample-chars", type=int, default=300, help="characters to generate")
    p.add_argument("--prompt", default="def ", help="start of the generated sample")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype-policy", default="float32",
                   choices=("float32", "mixed_float16", "mixed_bfloat16"),
                   help="Keras dtype policy of the models (mixed: float32 weights, the LSTM and "
                        "embedding compute in the half type, logits in float32)")
    p.add_argument("--quick", action="store_true",
                   help="a tiny run in seconds (for tests): " +
                        ", ".join(f"{k}={v}" for k, v in QUICK.items()))
    p.add_argument("--save", default=None, metavar="PATH",
                   help="save the trained model (.keras) for `python -m resetlstm serve-demo "
                        "--model PATH`")
    p.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2),
                   help="Keras progress output (1: progress bar)")
    args = p.parse_args(argv)
    if args.quick:
        for k, v in QUICK.items():
            if getattr(args, k) == p.get_default(k):
                setattr(args, k, v)
    check_positive(p, args, ("train_chars", "val_chars", "max_doc_chars", "batch_size",
                             "seq_len", "units", "embed", "epochs"))
    return args


def check_positive(parser, args, names):
    """parser.error (exit 2) naming the first of `names` whose value is below 1."""
    for name in names:
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, "
                         f"received {getattr(args, name)}")


def log(msg):
    print(msg, flush=True)


# ----------------------------------------------------------------------------- corpus

def python_files(root):
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "dist-packages",
                                                              "__pycache__"))
        paths.extend(os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(".py"))
    return paths


def read_document(path, max_chars):
    try:
        with open(path, "rb") as f:
            data = f.read(max_chars + 1)
    except OSError:
        return None
    if len(data) > max_chars:  # keep whole lines
        cut = data.rfind(b"\n", 0, max_chars)
        data = data[:cut + 1] if cut > 0 else data[:max_chars]
    return np.frombuffer(data, dtype=np.uint8).astype(np.int32) if len(data) > 1 else None


def load_corpus(root, train_chars, val_chars, max_doc_chars, seed):
    """Whole files (their first max_doc_chars) in a seeded random order: held-out files until
    val_chars, then training files until train_chars (fewer if the corpus runs out)."""
    paths = python_files(root)
    order = np.random.default_rng(seed).permutation(len(paths))
    val, train, n_val, n_train = [], [], 0, 0
    for i in order:
        if n_train >= train_chars:
            break
        doc = read_document(paths[i], max_doc_chars)
        if doc is None:
            continue
        if n_val < val_chars:
            val.append(doc)
            n_val += len(doc)
        else:
            train.append(doc)
            n_train += len(doc)
    if not train:
        raise SystemExit(f"not enough .py files under {root} for {val_chars} held-out and some "
                         "training characters; pass --corpus DIR or smaller --val-chars")
    return train, val


def windows(docs, seq_len):
    """The usual way: every document cut into seq_len windows, the last one padded (weight 0
    on padding and on the last character, which has no next character in its document)."""
    xs, ys, ws = [], [], []
    for d in docs:
        for s in range(0, len(d), seq_len):
            x = np.zeros(seq_len, np.int32)
            y = np.zeros(seq_len, np.int32)
            w = np.zeros(seq_len, np.float32)
            piece = d[s:s + seq_len]
            x[:len(piece)] = piece
            target = d[s + 1:s + seq_len + 1]
            y[:len(target)] = target
            w[:len(target)] = 1.0
            xs.append(x)
            ys.append(y)
            ws.append(w)
    return np.stack(xs), np.stack(ys), np.stack(ws)


# ----------------------------------------------------------------------------- models

def names(args):
    """(resetlstm's layer, the stock Keras layer) for ``--cell``, by name."""
    return ("ResetGRU", "GRU") if args.cell == "gru" else ("ResetLSTM", "LSTM")


def build_model(args, batch_size=None, seq_len=None, stock=False):
    """tokens [B, T] (+ resets [B, T] for ResetLSTM / ResetGRU) -> logits [B, T, 256]."""
    import keras
    import resetlstm.keras

    ours, theirs = names(args)
    tokens = keras.Input(batch_shape=(batch_size, seq_len), dtype="int32", name="tokens")
    h = keras.layers.Embedding(VOCAB, args.embed, name="embed")(tokens)
    if stock:
        h = getattr(keras.layers, theirs)(args.units, return_sequences=True, name="rnn")(h)
        inputs = tokens
    else:
        resets = keras.Input(batch_shape=(batch_size, seq_len), dtype="bool", name="resets")
        h = getattr(resetlstm.keras, ours)(args.units, return_sequences=True, stateful=True,
                                           name="rnn")(h, resets=resets)
        inputs = [tokens, resets]
    logits = keras.layers.Dense(VOCAB, name="logits", dtype="float32")(h)  # float32 under any
    # dtype policy: the softmax cross-entropy wants full precision
    return keras.Model(inputs, logits, name=f"stock_{args.cell}_lm" if stock
                       else f"reset{args.cell}_lm")


def compile_model(model, args):
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(args.lr, clipnorm=1.0),
        # per target character: padding (weight 0) is not averaged in
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                        reduction="mean_with_sample_weight"),
        jit_compile=False)


def make_timer(batch_size, rows_per_epoch):
    import keras

    class Timer(keras.callbacks.Callback):
        """Wall time after the first batch (which traces the step function) and each batch's own
        loss (Keras logs the running mean of the epoch, weighted by batch rows)."""

        def on_train_begin(self, logs=None):
            self.start = time.perf_counter()
            self.after_first = None
            self.losses = []

        def on_epoch_begin(self, epoch, logs=None):
            self.rows = 0
            self.total = 0.0

        def on_train_batch_end(self, batch, logs=None):
            if self.after_first is None:
                self.after_first = time.perf_counter()
            n = min(batch_size, rows_per_epoch - batch * batch_size)
            total = float(logs["loss"]) * (self.rows + n)
            self.losses.append((total - self.total) / n)
            self.rows += n
            self.total = total

        def on_train_end(self, logs=None):
            self.end = time.perf_counter()

    return Timer()


def train(model, fit_args, fit_kwargs, args, rows_per_epoch, chars_per_epoch):
    timer = make_timer(args.batch_size, rows_per_epoch)
    model.fit(*fit_args, epochs=args.epochs, verbose=args.verbose, callbacks=[timer], **fit_kwargs)
    steps = len(timer.losses)
    timed = max(timer.end - timer.after_first, 1e-9)
    chars = chars_per_epoch * args.epochs * (steps - 1) / steps
    tail = timer.losses[-max(1, steps // 10):]
    return dict(loss=float(np.mean(tail)), steps=steps, seconds=timer.end - timer.start,
                chars_per_s=chars / timed if steps > 1 else 0.0)


def bits_per_char(predict, batches):
    """Mean negative log2-likelihood of the weighted targets over (inputs, targets, weights)
    batches; returns (bits per character, number of targets)."""
    total, count = 0.0, 0.0
    for inputs, targets, weights in batches:
        logits = np.asarray(predict(inputs), np.float64)
        top = logits.max(axis=-1, keepdims=True)
        log_z = np.log(np.exp(logits - top).sum(axis=-1)) + top[..., 0]
        picked = np.take_along_axis(logits, targets[..., None].astype(np.int64), axis=-1)[..., 0]
        total += float(((log_z - picked) * weights).sum())
        count += float(weights.sum())
    return total / count / LN2, int(count)


# ----------------------------------------------------------------------------- the two runs

def run_resetlstm(args, train_docs, val_docs):
    from resetlstm.data import pack_documents

    packed = pack_documents(train_docs, args.batch_size, args.seq_len, dtype=np.int32)
    log(f"  packed {len(train_docs)} files into {args.batch_size} streams x "
        f"{packed.num_batches * args.seq_len} steps = {packed.num_batches} batches of "
        f"{args.seq_len}; padding {100 * packed.padding_fraction:.2f}%")
    model = build_model(args, args.batch_size, args.seq_len)
    compile_model(model, args)
    initial_weights = model.get_weights()
    # Every stream starts with a reset (its first document's first step), so a new epoch
    # needs no reset_state(): the resets in the data do it.
    result = train(model, (packed.dataset(),), dict(shuffle=False), args,
                   packed.num_batches * args.batch_size, packed.num_tokens)
    result.update(padding=packed.padding_fraction, batches_per_epoch=packed.num_batches,
                  how=f"{args.batch_size} packed streams, stateful, resets at file starts")

    # validation: a stateful copy reading the held-out files packed into fewer, longer batches
    val_streams = max(1, min(args.batch_size, len(val_docs) // 4))
    val_packed = pack_documents(val_docs, val_streams, 4 * args.seq_len, dtype=np.int32)
    evaluator = build_model(args, val_streams, None)
    evaluator.set_weights(model.get_weights())
    result["val_bpc"], result["val_targets"] = bits_per_char(
        evaluator.predict_on_batch, (val_packed.batch(k) for k in range(val_packed.num_batches)))
    return result, model, initial_weights


def run_stock(args, train_docs, val_docs, initial_weights):
    x, y, w = windows(train_docs, args.seq_len)
    n_chars = sum(map(len, train_docs))
    batches = -(-len(x) // args.batch_size)
    padding = 1 - n_chars / x.size
    log(f"  cut {len(train_docs)} files into {len(x)} windows of {args.seq_len} = {batches} "
        f"batches of {args.batch_size}; padding {100 * padding:.2f}%")
    model = build_model(args, stock=True)
    compile_model(model, args)
    model.set_weights(initial_weights)  # the same initial weights as the resetlstm run
    result = train(model, (x, y), dict(sample_weight=w, batch_size=args.batch_size, shuffle=True),
                   args, len(x), n_chars)
    result.update(padding=padding, batches_per_epoch=batches,
                  how=f"{args.seq_len}-char windows, padded, zero state per window")
    vx, vy, vw = windows(val_docs, args.seq_len)
    parts = (slice(s, s + args.batch_size) for s in range(0, len(vx), args.batch_size))
    result["val_bpc"], result["val_targets"] = bits_per_char(
        model.predict_on_batch, ((vx[p], vy[p], vw[p]) for p in parts))
    return result


def generate(args, trained):
    """Sample from a batch-1 stateful copy of the trained model, one character per call."""
    model = build_model(args, 1, None)
    model.set_weights(trained.get_weights())
    rng = np.random.default_rng(args.seed)
    prompt = np.frombuffer(args.prompt.encode("utf-8") or b"\n", dtype=np.uint8).astype(np.int32)
    resets = np.zeros((1, len(prompt)), bool)
    resets[0, 0] = True  # a new document
    logits = model.predict_on_batch([prompt[None], resets])[0, -1]
    out = list(prompt)
    no_reset = np.zeros((1, 1), bool)
    for _ in range(args.sample_chars):
        z = logits.astype(np.float64) / max(args.temperature, 1e-6)
        p = np.exp(z - z.max())
        nxt = int(rng.choice(VOCAB, p=p / p.sum()))
        out.append(nxt)
        logits = model.predict_on_batch([np.array([[nxt]], np.int32), no_reset])[0, -1]
    return bytes(out).decode("utf-8", errors="replace")


# ----------------------------------------------------------------------------- main

def main(argv=None):
    args = parse_args(argv)
    import keras

    previous_policy = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(args.dtype_policy)
    try:
        return run(args)
    finally:  # the policy is global Keras state: leave it as it was
        keras.mixed_precision.set_dtype_policy(previous_policy)


def run(args):
    t_start = time.perf_counter()
    ours_name, stock_name = names(args)
    log(f"resetlstm demo: character-level {stock_name} language model on Python's own source "
        "files")
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(args.seed)
    root = args.corpus or sysconfig.get_paths()["stdlib"]
    log(f"[1/4] reading .py files under {root}")
    train_docs, val_docs = load_corpus(root, args.train_chars, args.val_chars,
                                       args.max_doc_chars, args.seed)
    n_train, n_val = sum(map(len, train_docs)), sum(map(len, val_docs))
    if n_train < args.train_chars:
        log(f"  note: the corpus has only {n_train:,} training characters (asked for "
            f"{args.train_chars:,}); raise --max-doc-chars or pass --corpus DIR for more")
    threads = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()
    log(f"  {len(train_docs)} training files ({n_train:,} chars), {len(val_docs)} held-out files "
        f"({n_val:,} chars); {threads} threads, TensorFlow {tf.__version__}, "
        f"Keras {keras.__version__}")
    log(f"  model: Embedding({VOCAB}, {args.embed}) -> {stock_name}({args.units}) -> "
        f"Dense({VOCAB}); "
        f"batch {args.batch_size} x {args.seq_len} steps, Adam({args.lr}), {args.epochs} epoch(s), "
        f"dtype policy {args.dtype_policy}")

    log(f"[2/4] training resetlstm.{ours_name} (stateful, packed streams)")
    ours, model, weights0 = run_resetlstm(args, train_docs, val_docs)
    results = {"resetlstm": ours}
    if args.compare:
        log(f"[2b/4] training keras.layers.{stock_name} the usual way (windows, padded, not "
            "stateful)")
        results["keras"] = run_stock(args, train_docs, val_docs, weights0)

    if args.save:
        model.save(args.save)
        log(f"  saved the trained model to {args.save} (serve it: python -m resetlstm "
            f"serve-demo --model {args.save})")
    log(f"[3/4] sampling {args.sample_chars} characters (temperature {args.temperature}) from a "
        "batch-1 stateful copy, one character per step")
    sample = generate(args, model)
    results["sample"] = sample

    log("[4/4] results")
    rows = [("", f"resetlstm.{ours_name}", f"keras.layers.{stock_name}")]
    runs = [results["resetlstm"]] + ([results["keras"]] if args.compare else [])
    table = [
        ("training data", lambda r: r["how"]),
        ("padding", lambda r: f"{100 * r['padding']:.2f}%"),
        ("batches per epoch", lambda r: f"{r['batches_per_epoch']}"),
        ("train time", lambda r: f"{r['seconds']:.1f} s"),
        ("throughput", lambda r: f"{r['chars_per_s']:,.0f} chars/s"),
        ("train loss, last 10% steps",
         lambda r: f"{r['loss']:.3f} nats/char ({r['loss'] / LN2:.3f} bits/char)"),
        ("validation", lambda r: f"{r['val_bpc']:.3f} bits/char"),
    ]
    for name, fmt in table:
        rows.append((name,) + tuple(fmt(r) for r in runs))
    widths = [max(len(row[i]) for row in rows) for i in range(len(runs) + 1)]
    for row in rows:
        log("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    log(f"  (validation: {ours['val_targets']:,} next-character predictions on {len(val_docs)} "
        "held-out files; throughput counts real characters only, after the first batch)")
    if args.compare:
        k = results["keras"]
        log(f"  {ours_name} vs keras.layers.{stock_name}: "
            f"{ours['chars_per_s'] / k['chars_per_s']:.2f}x "
            f"throughput, {ours['val_bpc'] - k['val_bpc']:+.3f} validation bits/char")
    log("sample:\n" + "-" * 60 + "\n" + sample + "\n" + "-" * 60)
    log(f"done in {time.perf_counter() - t_start:.0f} s")
    return results


if __name__ == "__main__":  # pragma: no cover
    main()
