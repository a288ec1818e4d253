"""Runs Keras' own LSTM and GRU tests against resetlstm.ResetLSTM and resetlstm.ResetGRU.

The tests are the ones shipped inside the installed `keras` package (keras/src/layers/rnn/
lstm_test.py, gru_test.py, bidirectional_test.py, rnn_test.py and core/masking_test.py); nothing
of them is copied here. A pytest plugin (this module) replaces `keras.src.layers.LSTM` and
`keras.src.layers.GRU`, the names those tests build their layers from, with `resetlstm.ResetLSTM`
and `resetlstm.ResetGRU` before they run.

    python tools/keras_rnn_tests.py [extra pytest args]
    KERAS_BACKEND=torch python tools/keras_rnn_tests.py     # on another Keras backend

Exit status is pytest's. `--collect-only -q` lists the cases.
"""
import os
import sys

TEST_FILES = (
    "layers/rnn/lstm_test.py",
    "layers/rnn/gru_test.py",
    "layers/rnn/bidirectional_test.py",
    "layers/rnn/rnn_test.py",
    "layers/core/masking_test.py",
)


def pytest_configure(config):
    """Plugin hook: swap keras.layers.LSTM and GRU (as the tests see them) for resetlstm's."""
    import keras.src.layers as keras_layers
    import resetlstm

    keras_layers.LSTM = resetlstm.ResetLSTM
    keras_layers.GRU = resetlstm.ResetGRU
    print(f"\n[keras_rnn_tests] keras.src.layers.LSTM -> {resetlstm.ResetLSTM!r}")
    print(f"[keras_rnn_tests] keras.src.layers.GRU -> {resetlstm.ResetGRU!r}")


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
    print(f"keras {keras.__version__}: running {len(files)} test files against ResetLSTM and "
          "ResetGRU")
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, here)
    return pytest.main(["-p", "keras_rnn_tests", "-c", os.devnull, "--rootdir", src,
                        "-p", "no:cacheprovider", *files, *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
