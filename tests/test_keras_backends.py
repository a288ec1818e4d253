"""resetlstm.ResetLSTM and ResetGRU on each Keras 3 backend: tests/keras_backend_cases.py
(equality with keras.layers.LSTM and GRU on that backend, resets, stateful streams, Bidirectional, masking, fit,
mixed precision) in one process per backend, .keras files saved under one backend and loaded
under another, and a clear refusal on a backend the layer does not run on."""
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

import resetlstm

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(resetlstm.__file__)))
BACKEND_PACKAGES = {"tensorflow": "tensorflow", "torch": "torch", "jax": "jax"}


def run_python(args, backend, **env):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2", **env)
    env["PYTHONPATH"] = os.pathsep.join([PACKAGE_ROOT, HERE, env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True,
                          timeout=900)


@pytest.fixture(scope="module")
def tensorflow_model(tmp_path_factory):
    """A .keras file saved under the TensorFlow backend (this process's), with its outputs."""
    import keras

    where = tmp_path_factory.mktemp("xfer")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 10, 4)).astype("float32")
    resets = rng.random((3, 10)) < 0.2
    seq = keras.Input((10, 4))
    flags = keras.Input((10,), dtype="bool")
    h = resetlstm.Bidirectional(resetlstm.ResetLSTM(6, return_sequences=True))(seq, resets=flags)
    h = resetlstm.Bidirectional(resetlstm.ResetGRU(4, return_sequences=True, reset_after=False))(
        h, resets=flags)
    h = resetlstm.ResetGRU(5, return_sequences=True)(h, resets=flags)
    h = resetlstm.ResetLSTM(5, go_backwards=True)(h, resets=flags)
    model = keras.Model([seq, flags], keras.layers.Dense(2)(h))
    model.save(where / "tensorflow.keras")
    np.savez(where / "inputs.npz", x=x, resets=resets, tensorflow=np.asarray(model([x, resets])))
    return where


@pytest.mark.parametrize("backend", ["tensorflow", "torch", "jax"])
def test_layer_on_backend(backend, tensorflow_model):
    if importlib.util.find_spec(BACKEND_PACKAGES[backend]) is None:
        pytest.skip(f"{backend} is not installed")
    # JAX computes float64 only with x64 enabled (the cases compare float64 layers)
    proc = run_python(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                       os.path.join(HERE, "keras_backend_cases.py")], backend,
                      RESETLSTM_XFER=str(tensorflow_model), JAX_ENABLE_X64="1")
    tail = proc.stdout[-6000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, tail
    summary = proc.stdout.splitlines()[-1]
    assert " passed" in summary and "failed" not in summary and "error" not in summary, tail
    # what may skip: the refusal of the TF-only API on TF itself, nothing else
    assert "skipped" not in summary or (backend == "tensorflow" and "1 skipped" in summary), tail
    # and back: the file this backend saved loads here (TensorFlow) with the same outputs
    import keras

    data = np.load(tensorflow_model / "inputs.npz")
    model = keras.models.load_model(tensorflow_model / f"{backend}.keras")
    np.testing.assert_allclose(np.asarray(model([data["x"], data["resets"]])),
                               np.load(tensorflow_model / f"{backend}.npy"), atol=1e-5)


def test_unsupported_backend_is_refused_clearly():
    code = ("import resetlstm\n"
            "try:\n"
            "    resetlstm.ResetLSTM(4)\n"
            "except ValueError as e:\n"
            "    print(e)\n")
    proc = run_python(["-c", code], "numpy")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "runs on the Keras backends tensorflow, torch, jax" in proc.stdout, proc.stdout
    assert "'numpy'" in proc.stdout
