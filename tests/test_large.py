"""64-bit index arithmetic: a forward whose pre-activation array [B, T, 4H] has more than 2^31
elements (8.6 GB of float32 in the kernels' workspace), through _native; the last row, whose
elements all sit past index 2^31, matches the float64 reference. Needs ~13 GB of memory and
about a minute on 2 cores: runs with --slow only."""
import numpy as np
import pytest

from reference import reference_forward

B, T, I, H = 1 << 16, (1 << 12) + 1, 1, 2


@pytest.mark.slow
def test_forward_past_two_to_the_31_elements():
    from resetlstm import _native
    assert B * T * 4 * H > 2**31
    rng = np.random.default_rng(31)
    kernel = rng.uniform(-0.5, 0.5, (I, 4 * H)).astype(np.float32)
    recurrent_kernel = rng.uniform(-0.5, 0.5, (H, 4 * H)).astype(np.float32)
    bias = rng.uniform(-0.5, 0.5, 4 * H).astype(np.float32)
    inputs = np.empty((B, T, I), np.float32)
    for b0 in range(0, B, 4096):  # in pieces: no float64 temporary of the whole array
        inputs[b0:b0 + 4096] = rng.uniform(-1, 1, (min(4096, B - b0), T, I))
    resets = np.zeros((B, T), bool)
    resets[-1, T // 2] = True  # a reset far past index 2^31 of [B, T, 4H]
    outputs, h, c, _, _ = _native.forward(inputs, kernel, recurrent_kernel, bias, resets=resets,
                                          training=False)
    for b in (0, B // 2, B - 1):
        y, hT, cT = reference_forward(inputs[b:b + 1], kernel, recurrent_kernel, bias,
                                      resets[b:b + 1])
        np.testing.assert_allclose(outputs[b], y[0], atol=2e-5, err_msg=f"row {b}")
        np.testing.assert_allclose(h[b], hT[0], atol=2e-5)
        np.testing.assert_allclose(c[b], cT[0], atol=2e-5)
    print(f"forward over [{B}, {T}, {4 * H}] = {B * T * 4 * H:,} pre-activations "
          f"(2^31 = {2**31:,}): rows 0, {B // 2}, {B - 1} match the float64 reference")
