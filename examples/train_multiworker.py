"""Multi-worker training of a stateful ResetLSTM on packed document streams
(docs/keras.md, "Training on several machines").

Start one process per worker, each with the same cluster and its own index in TF_CONFIG:

    TF_CONFIG='{"cluster": {"worker": ["host0:12345", "host1:12345"]},
                "task": {"type": "worker", "index": 0}}' python examples/train_multiworker.py
    TF_CONFIG='{... "index": 1}}' python examples/train_multiworker.py     # on host1

Without TF_CONFIG it runs as a single worker. Every worker packs the same documents into
``--streams`` streams (pack_documents is deterministic) and reads only the streams it owns
(``PackedDocuments.distribute``: replica g owns streams [g*b, (g+1)*b), b = streams / replicas,
in every batch), so a stream's state stays on its worker from batch to batch. Keras 3's
``model.fit`` cannot run under MultiWorkerMirroredStrategy (tools/keras_strategy_repro.py), so the
training loop is the few lines of ``train`` below: ``strategy.run`` of a GradientTape step; the
optimizer sums the replicas' gradients.
"""
import argparse
import json
import os

import numpy as np
import tensorflow as tf
import keras

import resetlstm
from resetlstm.data import pack_documents


def documents(seed, count, vocab):
    """Token-id documents of 3..25 steps (stand-ins for real text)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab, size=int(n)) for n in rng.integers(3, 26, size=count)]


def make_model(batch, seq_len, vocab, units):
    """tokens, resets [batch, seq_len] -> next-token logits; batch = streams per replica."""
    tokens = keras.Input(batch_shape=(batch, seq_len), dtype="int32")
    resets = keras.Input(batch_shape=(batch, seq_len), dtype="bool")
    h = keras.layers.Embedding(vocab, 4)(tokens)
    h = resetlstm.ResetLSTM(units, return_sequences=True, stateful=True, name="lstm")(
        h, resets=resets)
    return keras.Model([tokens, resets], keras.layers.Dense(vocab)(h))


def train(strategy, model, optimizer, packed, epochs):
    """The training loop: mean cross-entropy over all streams * seq_len steps of the global
    batch (keras' default "sum_over_batch_size" with sample weights). Returns the step count."""
    xent = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
    steps_in_batch = packed.batch_size * packed.seq_len  # global

    def replica_step(inputs, targets, weights):
        with tf.GradientTape() as tape:
            logits = model(inputs, training=True)
            loss = tf.reduce_sum(xent(targets, logits) * weights) / steps_in_batch
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)  # sums the replicas' gradients
        return loss

    @tf.function
    def step(batch):
        losses = strategy.run(replica_step, args=batch)
        return strategy.reduce("SUM", losses, axis=None)

    steps = 0
    for epoch in range(epochs):
        # every stream starts with a reset, so a new epoch needs no reset_state()
        for batch in packed.distribute(strategy):
            loss = step(batch)
            steps += 1
        print(f"epoch {epoch + 1}: loss {float(loss):.4f} (last batch)", flush=True)
    return steps


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--streams", type=int, default=8, help="global batch: streams (rows)")
    p.add_argument("--seq-len", type=int, default=6)
    p.add_argument("--docs", type=int, default=14)
    p.add_argument("--vocab", type=int, default=11)
    p.add_argument("--units", type=int, default=5)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None,
                   help="directory for worker<index>.npz: final weights and stream states")
    args = p.parse_args(argv)

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {}).get("index", 0)
    replicas = strategy.num_replicas_in_sync
    packed = pack_documents(documents(args.seed, args.docs, args.vocab), args.streams,
                            args.seq_len, dtype=np.int32)
    streams = packed.replica_streams(task * len(strategy.extended.worker_devices), replicas)
    print(f"worker {task}: {replicas} replicas in sync, {packed.num_batches} batches of "
          f"{args.streams} streams x {args.seq_len} steps; this worker's first replica owns "
          f"streams {streams.start}..{streams.stop - 1}", flush=True)
    keras.utils.set_random_seed(args.seed)  # the same initial weights on every worker
    with strategy.scope():
        model = make_model(args.streams // replicas, args.seq_len, args.vocab, args.units)
        optimizer = keras.optimizers.SGD(args.lr)
        optimizer.build(model.trainable_variables)
    steps = train(strategy, model, optimizer, packed, args.epochs)
    if args.out:
        state = strategy.experimental_local_results(model.get_layer("lstm").states[0].value)
        np.savez(os.path.join(args.out, f"worker{task}.npz"), *model.get_weights(),
                 steps=steps, replicas=replicas, state_h=np.concatenate(
                     [s.numpy() for s in state]))
    print(f"worker {task}: done, {steps} steps", flush=True)


if __name__ == "__main__":
    main()
