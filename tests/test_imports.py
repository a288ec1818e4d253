"""What each import loads, in one environment with every framework installed: ``import
resetlstm`` (and ``resetlstm.data``, ``resetlstm._native``) loads no framework, each front end only
its own (``resetlstm.torch`` torch, ``resetlstm.jax`` JAX, ``resetlstm.keras`` what Keras itself
loads for its backend, ``resetlstm.tf`` what TensorFlow loads), and what it costs on top of the
framework's own import. And: files saved before the front ends became folders still load, and
the layers and the op get registered whichever of resetlstm and the framework is imported first.

Each case runs in a fresh interpreter. Where a framework is not installed (the wheel check's
``resetlstm[torch]`` / ``resetlstm[jax]`` environments) its cases skip.
"""
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

import resetlstm

FRAMEWORKS = ("tensorflow", "keras", "torch", "jax", "flax")
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")

# Imports `first` (a framework, or nothing), then `module`; prints what each took and which
# frameworks the process holds after each.
PROBE = """
import json, sys, time
FRAMEWORKS = {frameworks!r}
def loaded():
    return sorted(name for name in FRAMEWORKS if name in sys.modules)
report = {{}}
for key, name in (("first", {first!r}), ("module", {module!r})):
    if name is None:
        report[key] = {{"seconds": 0.0, "loaded": loaded()}}
        continue
    start = time.perf_counter()
    __import__(name)
    report[key] = {{"seconds": time.perf_counter() - start, "loaded": loaded()}}
print("REPORT " + json.dumps(report))
"""


def run_python(script, env_extra=None, timeout=300):
    env = dict(os.environ)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(resetlstm.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([package_root, env.get("PYTHONPATH", "")])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.update(env_extra or {})
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-5000:]}"
    return proc.stdout


def probe(module, first=None, env_extra=None):
    out = run_python(PROBE.format(frameworks=FRAMEWORKS, first=first, module=module), env_extra)
    line = [l for l in out.splitlines() if l.startswith("REPORT ")][-1]
    return json.loads(line[len("REPORT "):])


def needs(*packages):
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}, not installed here")


# The regression this guards against (the Keras layer imported by the package, and with it
# TensorFlow) cost 4-6 s on a 2-core machine; a front end's own work is well under a second.
MAX_OWN_SECONDS = 2.0


@pytest.mark.parametrize("module", ["resetlstm", "resetlstm.data", "resetlstm._native"])
def test_framework_free_imports_load_no_framework(module):
    report = probe(module)
    assert report["module"]["loaded"] == [], report
    print(f"import {module}: {report['module']['seconds']:.2f} s")
    assert report["module"]["seconds"] < MAX_OWN_SECONDS, report


@pytest.mark.parametrize("module, framework, expected", [
    ("resetlstm.torch", "torch", ["torch"]),
    ("resetlstm.jax", "jax", ["jax"]),
])
def test_front_end_loads_only_its_framework(module, framework, expected):
    needs(framework)
    alone = probe(module)
    assert alone["module"]["loaded"] == expected, alone
    after = probe(module, first=framework)  # the front end's own cost, the framework loaded
    assert after["module"]["loaded"] == expected, after
    print(f"import {framework}: {after['first']['seconds']:.2f} s, then import {module}: "
          f"{after['module']['seconds']:.2f} s (alone: {alone['module']['seconds']:.2f} s)")
    assert after["module"]["seconds"] < MAX_OWN_SECONDS, after


@pytest.mark.parametrize("backend", ["tensorflow", "torch", "jax"])
def test_keras_layers_load_what_keras_loads(backend):
    needs("keras", backend)
    env = {"KERAS_BACKEND": backend}
    keras_alone = probe("keras", env_extra=env)["module"]["loaded"]
    report = probe("resetlstm.keras", first="keras", env_extra=env)
    assert report["module"]["loaded"] == keras_alone, (report, keras_alone)
    print(f"KERAS_BACKEND={backend}: import keras {report['first']['seconds']:.2f} s "
          f"(loads {keras_alone}), then import resetlstm.keras "
          f"{report['module']['seconds']:.2f} s")
    assert report["module"]["seconds"] < MAX_OWN_SECONDS, report


def test_tf_front_end_loads_what_tensorflow_loads():
    needs("tensorflow")
    tf_alone = probe("tensorflow")["module"]["loaded"]
    report = probe("resetlstm.tf", first="tensorflow")
    assert report["module"]["loaded"] == tf_alone, (report, tf_alone)
    print(f"import tensorflow {report['first']['seconds']:.2f} s (loads {tf_alone}), then "
          f"import resetlstm.tf {report['module']['seconds']:.2f} s")
    assert report["module"]["seconds"] < MAX_OWN_SECONDS, report


# A model saved by resetlstm 0.1.0 before the front ends became folders (the layers lived in
# resetlstm.layers then; the file names that module): Bidirectional(ResetLSTM(5)) and
# ResetLSTM(4), both over a resets input.
LOAD_OLD_FILE = """
    import numpy as np
    {imports}
    path = {path!r}
    model = keras.models.load_model(path)
    kinds = [type(layer).__module__ + "." + type(layer).__name__ for layer in model.layers]
    assert kinds[-2:] == ["resetlstm.keras.layers.Bidirectional",
                          "resetlstm.keras.layers.ResetLSTM"], kinds
    bi, top = model.layers[-2], model.layers[-1]
    # the same weights in stock Keras layers: without resets the model is stock Keras
    x_in = keras.Input((None, 6))
    stock_bi = keras.layers.Bidirectional(keras.layers.LSTM(5, return_sequences=True))
    stock_top = keras.layers.LSTM(4, return_sequences=True)
    stock = keras.Model(x_in, stock_top(stock_bi(x_in)))
    stock_bi.set_weights(bi.get_weights())
    stock_top.set_weights(top.get_weights())
    x = np.random.default_rng(0).normal(size=(3, 9, 6)).astype("float32")
    no_resets = np.zeros((3, 9), bool)
    err = np.max(np.abs(np.asarray(model([x, no_resets])) - np.asarray(stock(x))))
    assert err < 1e-5, err
    # a reset at step 4 of every row: the steps from 4 on are the stock model on x[:, 4:]
    # (the backward direction of steps 0-3 starts over at step 3 too: compare the tail only)
    resets = no_resets.copy()
    resets[:, 4] = True
    err = np.max(np.abs(np.asarray(model([x, resets]))[:, 4:] - np.asarray(stock(x[:, 4:]))))
    assert err < 1e-5, err
    print("OK", kinds[-2:])
"""


@pytest.mark.parametrize("order", ["keras first", "resetlstm first"])
def test_keras_file_saved_before_the_move_loads(order):
    needs("keras", "tensorflow")
    imports = ("import keras\nimport resetlstm" if order == "keras first"
               else "import resetlstm\nimport keras")
    script = LOAD_OLD_FILE.format(imports=imports.replace("\n", "\n    "),
                                  path=os.path.join(DATA, "saved-before-folders.keras"))
    assert "OK" in run_python(script)


SAVE_OP_MODEL = """
    import sys
    import numpy as np
    import tensorflow as tf
    import resetlstm.tf as rtf

    rng = np.random.default_rng(1)
    kernel, recurrent, bias = (rng.normal(size=s).astype("float32") * 0.3
                               for s in ((3, 16), (4, 16), (16,)))

    class Model(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.float32),
                                      tf.TensorSpec([None, None], tf.bool)])
        def run(self, x, resets):
            return rtf.reset_lstm(x, kernel, recurrent, bias, resets=resets)[0]

    x = rng.normal(size=(2, 5, 3)).astype("float32")
    resets = np.zeros((2, 5), bool)
    resets[1, 2] = True
    np.savez(sys.argv[1] + "/data.npz", x=x, resets=resets,
             expected=Model().run(x, resets).numpy())
    tf.saved_model.save(Model(), sys.argv[1] + "/model")
"""

LOAD_OP_MODEL = """
    import sys
    import numpy as np
    import resetlstm          # before TensorFlow: the op is registered when TF is imported
    assert "tensorflow" not in sys.modules
    import tensorflow as tf

    data = np.load(sys.argv[1] + "/data.npz")
    loaded = tf.saved_model.load(sys.argv[1] + "/model")
    got = loaded.run(data["x"], data["resets"]).numpy()
    assert np.array_equal(got, data["expected"]), np.max(np.abs(got - data["expected"]))
    print("OK")
"""


def test_savedmodel_with_the_op_loads_when_resetlstm_is_imported_first(tmp_path):
    needs("tensorflow")
    for script in (SAVE_OP_MODEL, LOAD_OP_MODEL):
        env = dict(os.environ)
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(resetlstm.__file__)))
        env["PYTHONPATH"] = os.pathsep.join([package_root, env.get("PYTHONPATH", "")])
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script), str(tmp_path)],
                              env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-5000:]
    assert "OK" in proc.stdout


def test_lazy_names_resolve_to_the_front_ends():
    needs("keras", "tensorflow")
    out = run_python("""
        import resetlstm, resetlstm.keras, resetlstm.tf
        assert resetlstm.ResetLSTM is resetlstm.keras.ResetLSTM
        assert resetlstm.Bidirectional is resetlstm.keras.Bidirectional
        for name in ("reset_lstm", "reset_lstm_cell", "build_info", "StreamingModel",
                     "export_portable", "export_litert", "export_onnx", "portable_reset_lstm"):
            assert getattr(resetlstm, name) is getattr(resetlstm.tf, name), name
        try:
            resetlstm.no_such_name
        except AttributeError as e:
            assert "no_such_name" in str(e)
        print("OK")
    """)
    assert "OK" in out


def test_after_import_runs_callbacks_once_in_either_order(tmp_path):
    """The hook itself, on a module of this test: registered before and after the import."""
    (tmp_path / "late_module.py").write_text("VALUE = 41\n")
    out = run_python(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from resetlstm._after_import import after_import
        calls = []
        after_import("late_module", lambda: calls.append(sys.modules["late_module"].VALUE))
        assert calls == []                      # not imported yet: waits
        import late_module
        assert calls == [41], calls             # ran once, after the module executed
        import late_module                      # a second import runs nothing again
        after_import("late_module", lambda: calls.append("now"))
        assert calls == [41, "now"], calls      # already imported: runs at once
        assert late_module.__loader__.__class__.__name__ != "_NotifyingLoader"
        print("OK")
    """)
    assert "OK" in out


def test_after_import_survives_a_failing_callback_and_a_failing_import(tmp_path):
    (tmp_path / "broken_once.py").write_text(
        "import os\nif not os.environ.get('FIXED'):\n    raise RuntimeError('broken')\nX = 1\n")
    out = run_python(f"""
        import os, sys, warnings
        sys.path.insert(0, {str(tmp_path)!r})
        from resetlstm._after_import import after_import
        calls = []
        after_import("broken_once", lambda: calls.append("ran"))
        try:
            import broken_once
        except RuntimeError:
            pass
        assert calls == []                      # the import failed: nothing ran ...
        os.environ["FIXED"] = "1"
        import broken_once                      # ... and the next attempt is still watched
        assert calls == ["ran"], calls
        def fails():
            raise ValueError("nope")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            after_import("broken_once", fails)  # a failing callback warns, never raises
        assert any("could not register" in str(w.message) for w in caught), caught
        print("OK")
    """)
    assert "OK" in out
