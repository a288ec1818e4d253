"""Minimal reproductions, with Keras and TensorFlow only (no resetlstm), of the two Keras 3 `fit`
limitations under tf.distribute that docs/keras.md "Training on several machines" works around:

1. MirroredStrategy (2 logical CPUs): `fit` on a model with a bool input fails with
   "Value for attr 'T' of bool is not in the list of allowed values ... AddN". Before the first
   step `fit` averages the first batch across replicas to get a template for building the model
   (keras/src/backend/tensorflow/trainer.py, `_maybe_symbolic_build`: strategy.reduce("MEAN",
   ...)), and AddN has no bool kernel. This happens before any layer is called, so no layer can
   change it; data given as 0/1 numbers (`PackedDocuments.distribute` does) passes, and a
   `keras.Input(dtype="bool")` casts them back to bool inside the model.
2. MultiWorkerMirroredStrategy (2 worker processes on 127.0.0.1): `fit` on a one-Dense model fails
   with "Attempt to convert a value (PerReplica...) ... to a Tensor": the same reduce is given
   the (x, y) structure, which the collective reduce cannot take (keras-team/keras#20329 reports
   it for dict inputs). So multi-worker training runs a `strategy.run` training loop instead.

Run: python tools/keras_strategy_repro.py    (prints one line per case, ~15 s)
"""
import json
import os
import socket
import subprocess
import sys

CASE_MIRRORED_BOOL = """
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    x, flag = keras.Input((3,)), keras.Input((1,), dtype="bool")
    y = keras.layers.Dense(1)(x) * keras.ops.cast(flag, "float32")
    model = keras.Model([x, flag], y)
    model.compile("sgd", "mse")
x, flag, y = np.ones((8, 3), "float32"), np.ones((8, 1), bool), np.ones((8, 1), "float32")
for name, f in (("bool", flag), ("int32 0/1", flag.astype("int32"))):
    try:
        model.fit([x, f], y, batch_size=8, epochs=1, verbose=0)
        print(f"MirroredStrategy, fit, {name} input: OK")
    except Exception as e:
        print(f"MirroredStrategy, fit, {name} input: FAILS: {type(e).__name__}: "
              f"{str(e).splitlines()[0][:150]}")
"""

CASE_MULTIWORKER = """
import json, os
import numpy as np, tensorflow as tf, keras
strategy = tf.distribute.MultiWorkerMirroredStrategy()
with strategy.scope():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse")
data = tf.data.Dataset.from_tensor_slices((np.ones((8, 3), "float32"),
                                           np.ones((8, 2), "float32"))).batch(4)
task = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
try:
    model.fit(data, epochs=1, verbose=0)
    print(f"MultiWorkerMirroredStrategy worker {task}, fit, one Dense layer: OK")
except Exception as e:
    print(f"MultiWorkerMirroredStrategy worker {task}, fit, one Dense layer: FAILS: "
          f"{type(e).__name__}: {str(e).splitlines()[0][:150]}")
"""


def run(code, env=None, timeout=120):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)


def main():
    import keras
    import tensorflow as tf

    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}")
    p = run(CASE_MIRRORED_BOOL)
    print(p.communicate(timeout=120)[0], end="")
    socks = [socket.socket() for _ in range(2)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    workers = [run(CASE_MULTIWORKER, {"TF_CONFIG": json.dumps(
        {"cluster": cluster, "task": {"type": "worker", "index": i}})}) for i in range(2)]
    try:
        for w in workers:
            print(w.communicate(timeout=120)[0], end="")
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()


if __name__ == "__main__":
    main()
