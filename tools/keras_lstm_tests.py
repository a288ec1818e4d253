"""Runs Keras' own LSTM tests against resetlstm.ResetLSTM.

The tests are the ones shipped inside the installed `keras` package (keras/src/layers/rnn/
lstm_test.py, bidirectional_test.py, rnn_test.py and core/masking_test.py); nothing of them is
copied here. A pytest plugin (this module) replaces `keras.src.layers.LSTM`, the name those tests
build their LSTMs from, with `resetlstm.ResetLSTM` before they run.

    python tools/keras_lstm_tests.py [extra pytest args]
    KERAS_BACKEND=torch python tools/keras_lstm_tests.py     # on another Keras backend

Exit status is pytest's. `--collect-only -q` lists the cases.
"""
import os
import sys

TEST_FILES = (
    "layers/rnn/lstm_test.py",
    "layers/rnn/bidirectional_test.py",
    "layers/rnn/rnn_test.py",
    "layers/core/masking_test.py",
)


def pytest_configure(config):
    """Plugin hook: swap keras.layers.LSTM (as the tests see it) for ResetLSTM."""
    import keras.src.layers as keras_layers
    import resetlstm

    keras_layers.LSTM = resetlstm.ResetLSTM
    print(f"\n[keras_lstm_tests] keras.src.layers.LSTM -> {resetlstm.ResetLSTM!r}")


def main(argv):
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import pytest

    src = os.path.dirname(os.path.abspath(keras.src.__file__))
    files = [os.path.join(src, f) for f in TEST_FILES]
    missing = [f for f in files if not os.path.exists(f)]
    if missing:
        print(f"keras {keras.__version__} does not ship its tests: {missing}", file=sys.stderr)
        return 2
    print(f"keras {keras.__version__}: running {len(files)} test files against ResetLSTM")
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, here)
    return pytest.main(["-p", "keras_lstm_tests", "-c", os.devnull, "--rootdir", src,
                        "-p", "no:cacheprovider", *files, *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
