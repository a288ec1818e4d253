"""`import resetlstm` works on a machine without TensorFlow (the GPU test machine): _native and
data are usable, the TF API raises a clear ImportError."""
import os
import subprocess
import sys
import textwrap

import resetlstm

SCRIPT = textwrap.dedent(
    """
    import importlib.abc, sys
    class Block(importlib.abc.MetaPathFinder):  # pretend tensorflow/keras are not installed
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in ("tensorflow", "keras"):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    sys.meta_path.insert(0, Block())
    import numpy as np
    import resetlstm
    from resetlstm import _native
    x = np.zeros((2, 3, 4), np.float32)
    out = _native.forward(x, np.zeros((4, 8), np.float32), np.zeros((2, 8), np.float32),
                          np.zeros(8, np.float32))
    assert out[0].shape == (2, 3, 2)
    assert resetlstm.data.pack_documents([np.arange(5)], batch_size=1, seq_len=2).inputs.size
    try:
        resetlstm.reset_lstm
    except ImportError as e:
        assert "tensorflow" in str(e), e
        print("OK")
    """
)


def test_import_without_tensorflow():
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(resetlstm.__file__)))
    env = dict(os.environ, PYTHONPATH=package_parent)
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("OK")
