"""Multi-worker training: two worker processes on this machine (tf.distribute
MultiWorkerMirroredStrategy over 127.0.0.1, CPU) run examples/train_multiworker.py (the recipe of
docs/keras.md) on a stateful ResetLSTM model over packed document streams, each worker feeding its own
streams (PackedDocuments.distribute), and must end with the weights, and per-stream states, of one
process training on the global batch with ``model.fit``.

Keras 3's ``model.fit`` cannot run under MultiWorkerMirroredStrategy at all (it fails for a
one-Dense model, see tools/keras_strategy_repro.py), so the example runs its own loop.
"""
import importlib.util
import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import resetlstm
from resetlstm.data import pack_documents

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "train_multiworker.py"
spec = importlib.util.spec_from_file_location("train_multiworker", EXAMPLE)
example = importlib.util.module_from_spec(spec)
spec.loader.exec_module(example)

# the example's defaults
B, T, VOCAB, UNITS, DOCS, EPOCHS, LR, SEED = 8, 6, 11, 5, 14, 2, 0.5, 0


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def run_workers(out, n=2, timeout=100):
    """Starts n workers with TF_CONFIG on 127.0.0.1 ports; kills them all on the way out."""
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(resetlstm.__file__)))
    ports = free_ports(n)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs, logs = [], []
    try:
        for i in range(n):
            env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
                       TF_CONFIG=json.dumps({"cluster": cluster,
                                             "task": {"type": "worker", "index": i}}),
                       PYTHONPATH=os.pathsep.join([package_root,
                                                   os.environ.get("PYTHONPATH", "")]))
            log = open(os.path.join(out, f"worker{i}.log"), "w")
            logs.append(log)
            procs.append(subprocess.Popen([sys.executable, str(EXAMPLE), "--out", str(out)],
                                          env=env, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + timeout
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
    failed = [(i, p.returncode) for i, p in enumerate(procs) if p.returncode != 0]
    if failed:
        text = "\n".join(f"--- worker {i} (exit {rc}):\n"
                         + open(os.path.join(out, f"worker{i}.log")).read()[-4000:]
                         for i, rc in failed)
        pytest.fail(f"workers failed or timed out after {timeout} s:\n{text}")


def documents(seed=SEED):
    # lengths 3..25 over streams of ~2-4 batches of T=6: documents span batches, so a stream's
    # state must follow it from batch to batch
    return example.documents(seed, DOCS, VOCAB)


def initial_weights():
    keras.utils.set_random_seed(SEED)  # as the example does before building
    return example.make_model(B, T, VOCAB, UNITS).get_weights()


def train_one_process(docs, weights, permute=False):
    """The reference: model.fit on the global batch (B rows = B streams) in this process.
    permute=True swaps the halves of the streams at every other batch (a wrong sharding:
    streams change rows, so rows carry foreign state) - the negative control."""
    model = example.make_model(B, T, VOCAB, UNITS)
    model.compile(keras.optimizers.SGD(LR),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.set_weights(weights)
    packed = pack_documents(docs, B, T, dtype=np.int32)
    data = packed.dataset()
    if permute:
        def swap(k, element):
            (x, r), y, w = element
            order = tf.where(k % 2 == 1, tf.roll(tf.range(B), B // 2, 0), tf.range(B))
            g = lambda a: tf.gather(a, order)  # noqa: E731
            return (g(x), g(r)), g(y), g(w)
        data = data.enumerate().map(swap)
    model.fit(data, epochs=EPOCHS, shuffle=False, verbose=0)
    return model, packed


def test_two_workers_equal_one_process_on_the_global_batch(tmp_path):
    docs = documents()
    initial = initial_weights()
    start = time.monotonic()
    run_workers(tmp_path)
    took = time.monotonic() - start

    reference, packed = train_one_process(docs, initial)
    assert packed.num_batches >= 3  # streams span several batches
    expected = reference.get_weights()
    expected_h = reference.get_layer("lstm").states[0].numpy()
    results = [np.load(tmp_path / f"worker{i}.npz") for i in range(2)]
    for i, r in enumerate(results):
        assert int(r["replicas"]) == 2
        assert int(r["steps"]) == EPOCHS * packed.num_batches
        got = [r[f"arr_{j}"] for j in range(len(expected))]
        for j, (g, e, w0) in enumerate(zip(got, expected, initial)):
            assert np.abs(e - w0).max() > 3e-4, f"weight {j} did not train"
            np.testing.assert_allclose(g, e, rtol=0, atol=1e-5,
                                       err_msg=f"worker {i} weight {j} vs one process")
        # the state this worker ends with is the one-process state of the streams it owns
        rows = packed.replica_streams(i, 2)
        np.testing.assert_allclose(r["state_h"], expected_h[rows.start:rows.stop], atol=1e-5,
                                   err_msg=f"worker {i} final state vs its streams")
    for j in range(len(expected)):  # both workers hold the same weights
        np.testing.assert_array_equal(results[0][f"arr_{j}"], results[1][f"arr_{j}"])

    # negative control: the same training with streams moving between rows differs clearly
    wrong, _ = train_one_process(docs, initial, permute=True)
    off = max(np.abs(a - b).max() for a, b in zip(wrong.get_weights(), expected))
    print(f"two workers: {took:.1f} s; wrong sharding is off by {off:.2e}")
    assert off > 2e-4  # 20x the tolerance the workers are held to


def test_distribute_sharding_rule_and_errors():
    docs = documents(1)
    packed = pack_documents(docs, B, T, dtype=np.int32)
    assert list(packed.replica_streams(1, 4)) == [2, 3]
    with pytest.raises(ValueError, match=r"batch_size \(streams\) = 8 must be a multiple of the "
                                         r"number of replicas \(3\)"):
        packed.replica_streams(0, 3)
    with pytest.raises(ValueError, match=r"`replica_id` must be in \[0, 2\), received 2"):
        packed.replica_streams(2, 2)

    # a one-replica strategy sees the plain batches, resets as 0/1 int32 by default
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    elements = list(packed.distribute(strategy))
    assert len(elements) == packed.num_batches
    for k, ((x, r), y, w) in enumerate(elements):
        (x0, r0), y0, w0 = packed.batch(k)
        assert r.dtype == tf.int32
        np.testing.assert_array_equal(x.numpy(), x0)
        np.testing.assert_array_equal(r.numpy(), r0.astype(np.int32))
        np.testing.assert_array_equal(y.numpy(), y0)
        np.testing.assert_array_equal(w.numpy(), w0)


MIRRORED = """
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import resetlstm
    from resetlstm.data import pack_documents

    B, T = 8, 6
    rng = np.random.default_rng(3)
    docs = [rng.integers(0, 11, size=int(k)) for k in rng.integers(3, 26, size=14)]
    packed = pack_documents(docs, B, T, dtype=np.int32)

    def make(batch):
        tokens = keras.Input(batch_shape=(batch, T), dtype="int32")
        resets = keras.Input(batch_shape=(batch, T), dtype="bool")   # bool, as without a strategy
        h = keras.layers.Embedding(11, 4)(tokens)
        h = resetlstm.ResetLSTM(5, return_sequences=True, stateful=True, name="lstm")(
            h, resets=resets)
        model = keras.Model([tokens, resets], keras.layers.Dense(11)(h))
        model.compile(keras.optimizers.SGD(0.5),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model

    keras.utils.set_random_seed(7)
    single = make(B)
    initial = single.get_weights()
    single.fit(packed.dataset(), epochs=2, shuffle=False, verbose=0)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored = make(B // 2)
    mirrored.set_weights(initial)
    mirrored.fit(packed.distribute(strategy), epochs=2, verbose=0)
    assert int(mirrored.optimizer.iterations.numpy()) == 2 * packed.num_batches
    for a, b, w0 in zip(single.get_weights(), mirrored.get_weights(), initial):
        assert np.abs(a - w0).max() > 3e-4   # trained (30x the tolerance)
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)
    layer, ref = mirrored.get_layer("lstm"), single.get_layer("lstm")
    h_ref = ref.states[0].numpy()
    for g in range(2):   # replica g holds the state of streams [4g, 4g + 4)
        local = strategy.experimental_local_results(layer.states[0].value)[g].numpy()
        np.testing.assert_allclose(local, h_ref[4 * g:4 * g + 4], atol=1e-5)

    # reset_state(rows) takes global stream indices under the strategy
    layer.reset_state([1, 6])
    ref.reset_state([1, 6])
    h_ref = ref.states[0].numpy()
    assert not h_ref[1].any() and not h_ref[6].any() and h_ref[0].any()
    for g in range(2):
        local = strategy.experimental_local_results(layer.states[0].value)[g].numpy()
        np.testing.assert_allclose(local, h_ref[4 * g:4 * g + 4], atol=1e-5)
    try:
        layer.reset_state([8])
        raise AssertionError("no error")
    except ValueError as e:
        assert "must be in [-8, 8)" in str(e), e
    layer.reset_state()
    assert not any(v.numpy().any() for v in
                   strategy.experimental_local_results(layer.states[0].value))
    print("OK")
"""


def test_mirrored_stateful_fit_with_bool_resets_input_equals_one_device():
    from test_layer import run_python

    assert "OK" in run_python(MIRRORED)
