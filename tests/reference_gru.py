"""Independent float64 numpy reference for the reset-GRU, both forms of Keras (forward and
hand-written BPTT). Never calls the op.

Keras layout: kernel [I, 3H], recurrent_kernel [H, 3H], gates z, r, h (the candidate n);
bias [2, 3H] (input row, recurrent row) with reset_after=True, [3H] with reset_after=False.
Per row b, step t (h_{-1} = h0, y_{-1} = 0; m the recurrent dropout mask, or 1)::

    h_in = 0 if resets[b, t] else h_{t-1}             # before step t, even at a masked step
    xz = x[b, t] @ kernel + b_in                      # [3H]
    reset_after=True:   hz = (m * h_in) @ recurrent_kernel + b_rec
                        z = sigmoid(xz_z + hz_z); r = sigmoid(xz_r + hz_r)
                        n = tanh(xz_n + r * hz_n)
    reset_after=False:  hz_zr = (m * h_in) @ recurrent_kernel[:, :2H]
                        z = sigmoid(xz_z + hz_zr_z); r = sigmoid(xz_r + hz_zr_r)
                        n = tanh(xz_n + (r * (m * h_in)) @ recurrent_kernel[:, 2H:])
    h_new = z * h_in + (1 - z) * n
    if mask[b, t]: h_t, y_t = h_new, h_new    else: h_t, y_t = h_in, y_{t-1}
    outputs[b, t] = y_t ;  h_T = h_{T-1}

Batch-major arrays in and out.
"""
import numpy as np

from reference import _f64, _flags, central_differences, sigmoid

__all__ = ["gru_reference_forward", "gru_reference_backward", "gru_finite_differences"]


def _biases(bias, H, reset_after):
    b = _f64(bias)
    if reset_after:
        assert b.shape == (2, 3 * H), b.shape
        return b[0], b[1]
    assert b.shape == (3 * H,), b.shape
    return b, np.zeros(3 * H)


def gru_reference_forward(inputs, kernel, recurrent_kernel, bias, resets=None, h0=None,
                          mask=None, dropout=None, reset_after=True, return_cache=False):
    """Returns (outputs [B, T, H], h_T [B, H])."""
    x, K, R = _f64(inputs), _f64(kernel), _f64(recurrent_kernel)
    B, T, I = x.shape
    H = R.shape[0]
    assert K.shape == (I, 3 * H) and R.shape == (H, 3 * H)
    b_in, b_rec = _biases(bias, H, reset_after)
    r_flags, m_flags = _flags(resets, B, T), _flags(mask, B, T)
    drop = np.ones((B, H)) if dropout is None else _f64(dropout)
    h = np.zeros((B, H)) if h0 is None else _f64(h0).copy()
    y = np.zeros((B, H))
    outputs = np.zeros((B, T, H))
    cache = []
    for t in range(T):
        reset = np.zeros((B, 1), bool) if r_flags is None else r_flags[:, t][:, None] > 0
        mt = np.ones((B, 1)) if m_flags is None else m_flags[:, t][:, None]
        h_in = np.where(reset, 0.0, h)
        hd = drop * h_in
        xz = x[:, t] @ K + b_in
        if reset_after:
            hz = hd @ R + b_rec
            z = sigmoid(xz[:, :H] + hz[:, :H])
            r = sigmoid(xz[:, H:2 * H] + hz[:, H:2 * H])
            n = np.tanh(xz[:, 2 * H:] + r * hz[:, 2 * H:])
            extra = hz[:, 2 * H:]
        else:
            hz = hd @ R[:, :2 * H]
            z = sigmoid(xz[:, :H] + hz[:, :H])
            r = sigmoid(xz[:, H:2 * H] + hz[:, H:])
            extra = r * hd  # what the candidate's matmul reads
            n = np.tanh(xz[:, 2 * H:] + extra @ R[:, 2 * H:])
        h_new = z * h_in + (1.0 - z) * n
        h = mt * h_new + (1.0 - mt) * h_in
        y = mt * h_new + (1.0 - mt) * y
        outputs[:, t] = y
        if return_cache:
            cache.append(dict(reset=reset, m=mt, h_in=h_in, hd=hd, z=z, r=r, n=n, extra=extra))
    if return_cache:
        return outputs, h, cache
    return outputs, h


def gru_reference_backward(inputs, kernel, recurrent_kernel, bias, resets=None, h0=None,
                           mask=None, d_outputs=None, d_h=None, dropout=None, reset_after=True):
    """BPTT of sum(outputs * d_outputs) + sum(h_T * d_h). Returns a dict: inputs, kernel,
    recurrent_kernel, bias (shaped like `bias`), h0 (wrt the zero state when h0 is None)."""
    x, K, R = _f64(inputs), _f64(kernel), _f64(recurrent_kernel)
    B, T, I = x.shape
    H = R.shape[0]
    drop = np.ones((B, H)) if dropout is None else _f64(dropout)
    _, _, cache = gru_reference_forward(inputs, kernel, recurrent_kernel, bias, resets, h0, mask,
                                        dropout, reset_after, return_cache=True)
    dY = np.zeros((B, T, H)) if d_outputs is None else _f64(d_outputs)
    dh = np.zeros((B, H)) if d_h is None else _f64(d_h).copy()
    dy_carry = np.zeros((B, H))
    dx, dK, dR = np.zeros_like(x), np.zeros_like(K), np.zeros_like(R)
    db_in, db_rec = np.zeros(3 * H), np.zeros(3 * H)
    for t in reversed(range(T)):
        s = cache[t]
        m, z, r, n, h_in, hd = s["m"], s["z"], s["r"], s["n"], s["h_in"], s["hd"]
        dy = dY[:, t] + dy_carry
        dh_new = m * (dh + dy)
        dh_in = (1.0 - m) * dh
        dy_carry = (1.0 - m) * dy
        # h_new = z * h_in + (1 - z) * n
        d_z = dh_new * (h_in - n)
        d_n = dh_new * (1.0 - z)
        dh_in = dh_in + dh_new * z
        da_n = d_n * (1.0 - n * n)
        da_z = d_z * z * (1.0 - z)
        if reset_after:
            hz_n = s["extra"]
            da_r = (da_n * hz_n) * r * (1.0 - r)
            dxz = np.concatenate([da_z, da_r, da_n], axis=1)
            dhz = np.concatenate([da_z, da_r, da_n * r], axis=1)
            dR += hd.T @ dhz
            db_rec += dhz.sum(axis=0)
            dhd = dhz @ R.T
        else:
            u = s["extra"]  # r * hd
            d_u = da_n @ R[:, 2 * H:].T
            da_r = (d_u * hd) * r * (1.0 - r)
            dxz = np.concatenate([da_z, da_r, da_n], axis=1)
            dR[:, :2 * H] += hd.T @ np.concatenate([da_z, da_r], axis=1)
            dR[:, 2 * H:] += u.T @ da_n
            dhd = np.concatenate([da_z, da_r], axis=1) @ R[:, :2 * H].T + d_u * r
        dK += x[:, t].T @ dxz
        db_in += dxz.sum(axis=0)
        dx[:, t] = dxz @ K.T
        dh_in = dh_in + drop * dhd
        dh = np.where(s["reset"], 0.0, dh_in)
    d_bias = np.stack([db_in, db_rec]) if reset_after else db_in
    return dict(inputs=dx, kernel=dK, recurrent_kernel=dR, bias=d_bias, h0=dh)


def gru_finite_differences(inputs, kernel, recurrent_kernel, bias, resets=None, h0=None,
                           mask=None, d_outputs=None, d_h=None, dropout=None, reset_after=True,
                           eps=1e-6):
    """Central finite differences of the reference loss (a check of the BPTT above)."""
    B, T, I = np.shape(inputs)
    H = np.shape(recurrent_kernel)[0]
    args = dict(inputs=_f64(inputs).copy(), kernel=_f64(kernel).copy(),
                recurrent_kernel=_f64(recurrent_kernel).copy(), bias=_f64(bias).copy(),
                h0=np.zeros((B, H)) if h0 is None else _f64(h0).copy())
    dY = np.zeros((B, T, H)) if d_outputs is None else _f64(d_outputs)
    dh = np.zeros((B, H)) if d_h is None else _f64(d_h)

    def loss():
        y, hT = gru_reference_forward(args["inputs"], args["kernel"], args["recurrent_kernel"],
                                      args["bias"], resets, args["h0"], mask, dropout,
                                      reset_after)
        return np.sum(y * dY) + np.sum(hT * dh)

    return central_differences(loss, args, eps)
