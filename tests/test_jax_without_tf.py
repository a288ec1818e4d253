"""`import resetlstm.jax` and a forward/backward work in a process where TensorFlow and Keras
cannot be imported; without the JAX binding (resetlstm._jax_ffi) the import says how to get it."""
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("jax")

BLOCK = textwrap.dedent(
    """
    import importlib.abc, sys
    BLOCKED = {blocked!r}
    class Block(importlib.abc.MetaPathFinder):  # pretend these are not installed
        def find_spec(self, name, path, target=None):
            if name in BLOCKED or name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
    sys.meta_path.insert(0, Block())
    """
)

WITHOUT_TF = BLOCK.format(blocked=("tensorflow", "keras")) + textwrap.dedent(
    """
    import numpy as np, jax, jax.numpy as jnp
    import resetlstm.jax as rj
    x = np.ones((2, 3, 4), np.float32)
    k, r = np.full((4, 8), 0.1, np.float32), np.full((2, 8), 0.1, np.float32)
    b = np.zeros(8, np.float32)
    resets = np.array([[0, 1, 0], [0, 0, 1]], bool)
    y, h, c = rj.reset_lstm(x, k, r, b, resets=resets)
    g = jax.grad(lambda x: jnp.sum(rj.reset_lstm(x, k, r, b, resets=resets)[0]))(x)
    assert y.shape == (2, 3, 2) and g.shape == x.shape and float(jnp.abs(g).sum()) > 0
    assert not any(m.split(".")[0] in ("tensorflow", "keras") for m in sys.modules)
    print("OK")
    """
)

WITHOUT_BINDING = BLOCK.format(blocked=("resetlstm._jax_ffi",)) + textwrap.dedent(
    """
    try:
        import resetlstm.jax
    except ImportError as e:
        assert 'pip install "resetlstm[jax]"' in str(e), e
        print("OK")
    """
)


@pytest.mark.parametrize("script", [WITHOUT_TF, WITHOUT_BINDING],
                         ids=["without_tensorflow", "without_binding"])
def test_import(script):
    import resetlstm

    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(resetlstm.__file__)))
    env = dict(os.environ, PYTHONPATH=package_parent)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("OK")
