"""Independent float64 numpy reference for the reset-LSTM (forward and hand-written BPTT).

Never calls the op.  Semantics (per row b, t = 0..T-1; h_{-1}=h0, c_{-1}=c0, y_{-1}=0)::

    h_in, c_in = (0, 0) if resets[b, t] else (h_{t-1}, c_{t-1})   # reset before step t, even at
                                                                   # a masked step (a select: no
                                                                   # NaN/Inf crosses a reset)
    z = x[b, t] @ kernel + (m[b] * h_in) @ recurrent_kernel + bias   # m: recurrent dropout, or 1
    i, f, g, o = sigmoid(z_i), sigmoid(z_f), tanh(z_g), sigmoid(z_o)
    c_new = f * c_in + i * g ;  h_new = o * tanh(c_new)
    if mask[b, t]: h_t, c_t, y_t = h_new, c_new, h_new
    else:          h_t, c_t, y_t = h_in,  c_in,  y_{t-1}
    outputs[b, t] = y_t ;  (h_T, c_T) = (h_{T-1}, c_{T-1})

All functions take and return batch-major arrays ([B, T, ...]); use `to_batch_major` /
`to_time_major` for the time-major layout.
"""
import numpy as np

__all__ = [
    "sigmoid",
    "reference_forward",
    "reference_backward",
    "reference_forward_backward",
    "reference_cell",
    "finite_difference_gradients",
    "to_time_major",
    "to_batch_major",
]


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _f64(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


def _flags(a, B, T):
    """resets/mask given as bool or 0/1 numbers -> float64 [B, T] of 0.0/1.0 (None -> None)."""
    if a is None:
        return None
    a = np.asarray(a)
    assert a.shape == (B, T), (a.shape, (B, T))
    return (a != 0).astype(np.float64)


def to_time_major(a):
    """[B, T, ...] -> [T, B, ...] (None passes through)."""
    return None if a is None else np.swapaxes(np.asarray(a), 0, 1)


def to_batch_major(a):
    """[T, B, ...] -> [B, T, ...] (None passes through)."""
    return None if a is None else np.swapaxes(np.asarray(a), 0, 1)


def reference_forward(inputs, kernel, recurrent_kernel, bias, resets=None, h0=None, c0=None,
                      mask=None, return_cache=False, dropout=None):
    """Batch-major float64 forward.  Returns (outputs [B,T,H], h_T [B,H], c_T [B,H]).
    dropout: optional [B,H] recurrent dropout mask (multiplies h_in in the recurrent matmul)."""
    x = _f64(inputs)
    K = _f64(kernel)
    R = _f64(recurrent_kernel)
    b = _f64(bias)
    B, T, I = x.shape
    H = R.shape[0]
    assert K.shape == (I, 4 * H) and R.shape == (H, 4 * H) and b.shape == (4 * H,)
    r = _flags(resets, B, T)
    m = _flags(mask, B, T)
    drop = np.ones((B, H)) if dropout is None else _f64(dropout)
    assert drop.shape == (B, H), (drop.shape, (B, H))
    h = np.zeros((B, H)) if h0 is None else _f64(h0).copy()
    c = np.zeros((B, H)) if c0 is None else _f64(c0).copy()
    y = np.zeros((B, H))
    outputs = np.zeros((B, T, H))
    cache = []
    for t in range(T):
        reset = np.zeros((B, 1), bool) if r is None else r[:, t][:, None] > 0
        mt = np.ones((B, 1)) if m is None else m[:, t][:, None]
        h_in, c_in = np.where(reset, 0.0, h), np.where(reset, 0.0, c)
        z = x[:, t] @ K + (drop * h_in) @ R + b
        i = sigmoid(z[:, :H])
        f = sigmoid(z[:, H:2 * H])
        g = np.tanh(z[:, 2 * H:3 * H])
        o = sigmoid(z[:, 3 * H:])
        c_new = f * c_in + i * g
        tc = np.tanh(c_new)
        h_new = o * tc
        h = mt * h_new + (1.0 - mt) * h_in
        c = mt * c_new + (1.0 - mt) * c_in
        y = mt * h_new + (1.0 - mt) * y
        outputs[:, t] = y
        if return_cache:
            cache.append(dict(reset=reset, m=mt, h_in=h_in, c_in=c_in, i=i, f=f, g=g, o=o, tc=tc,
                              drop=drop))
    if return_cache:
        return outputs, h, c, cache
    return outputs, h, c


def reference_backward(inputs, kernel, recurrent_kernel, bias, resets=None, h0=None, c0=None,
                       mask=None, d_outputs=None, d_h=None, d_c=None, dropout=None):
    """Hand-written BPTT of  sum(outputs*d_outputs) + sum(h_T*d_h) + sum(c_T*d_c).

    Returns dict with keys inputs, kernel, recurrent_kernel, bias, h0, c0 (float64; h0/c0
    gradients are returned even if h0/c0 were None, i.e. w.r.t. the zero initial state).
    """
    x = _f64(inputs)
    K = _f64(kernel)
    R = _f64(recurrent_kernel)
    B, T, I = x.shape
    H = R.shape[0]
    _, _, _, cache = reference_forward(inputs, kernel, recurrent_kernel, bias, resets, h0, c0,
                                       mask, return_cache=True, dropout=dropout)
    dY = np.zeros((B, T, H)) if d_outputs is None else _f64(d_outputs)
    dh = np.zeros((B, H)) if d_h is None else _f64(d_h).copy()   # dL/dh_t (state carry)
    dc = np.zeros((B, H)) if d_c is None else _f64(d_c).copy()   # dL/dc_t
    dy_carry = np.zeros((B, H))                                    # dL/dy_t from later outputs
    dx = np.zeros_like(x)
    dK = np.zeros_like(K)
    dR = np.zeros_like(R)
    db = np.zeros(4 * H)
    for t in reversed(range(T)):
        s = cache[t]
        m, reset = s["m"], s["reset"]
        i, f, g, o, tc = s["i"], s["f"], s["g"], s["o"], s["tc"]
        dy = dY[:, t] + dy_carry
        dh_new = m * (dh + dy)
        dc_new = m * dc
        dh_in = (1.0 - m) * dh
        dc_in = (1.0 - m) * dc
        dy_carry = (1.0 - m) * dy
        # h_new = o * tanh(c_new)
        do = dh_new * tc
        dc_new = dc_new + dh_new * o * (1.0 - tc * tc)
        # c_new = f * c_in + i * g
        df = dc_new * s["c_in"]
        di = dc_new * g
        dg = dc_new * i
        dc_in = dc_in + dc_new * f
        dz = np.concatenate([di * i * (1.0 - i), df * f * (1.0 - f), dg * (1.0 - g * g),
                             do * o * (1.0 - o)], axis=1)
        dx[:, t] = dz @ K.T
        dK += x[:, t].T @ dz
        dR += (s["drop"] * s["h_in"]).T @ dz
        db += dz.sum(axis=0)
        dh_in = dh_in + s["drop"] * (dz @ R.T)
        dh = np.where(reset, 0.0, dh_in)
        dc = np.where(reset, 0.0, dc_in)
    return dict(inputs=dx, kernel=dK, recurrent_kernel=dR, bias=db, h0=dh, c0=dc)


def reference_forward_backward(inputs, kernel, recurrent_kernel, bias, resets=None, h0=None,
                               c0=None, mask=None, d_outputs=None, d_h=None, d_c=None,
                               dropout=None):
    out = reference_forward(inputs, kernel, recurrent_kernel, bias, resets, h0, c0, mask,
                            dropout=dropout)
    grads = reference_backward(inputs, kernel, recurrent_kernel, bias, resets, h0, c0, mask,
                               d_outputs, d_h, d_c, dropout=dropout)
    return out, grads


def reference_cell(x_t, h, c, kernel, recurrent_kernel, bias, reset=None):
    """One step: x_t [B,I], h, c [B,H], reset [B] or None -> (h_new, c_new)."""
    x_t = _f64(x_t)
    resets = None if reset is None else np.asarray(reset).reshape(-1, 1)
    _, h1, c1 = reference_forward(x_t[:, None, :], kernel, recurrent_kernel, bias, resets, h, c)
    return h1, c1


def finite_difference_gradients(inputs, kernel, recurrent_kernel, bias, resets=None, h0=None,
                                c0=None, mask=None, d_outputs=None, d_h=None, d_c=None, eps=1e-6,
                                dropout=None):
    """Central finite differences of the float64 reference loss (a check of the BPTT above)."""
    B, T, I = np.shape(inputs)
    H = np.shape(recurrent_kernel)[0]
    args = dict(inputs=_f64(inputs).copy(), kernel=_f64(kernel).copy(),
                recurrent_kernel=_f64(recurrent_kernel).copy(), bias=_f64(bias).copy(),
                h0=np.zeros((B, H)) if h0 is None else _f64(h0).copy(),
                c0=np.zeros((B, H)) if c0 is None else _f64(c0).copy())
    dY = np.zeros((B, T, H)) if d_outputs is None else _f64(d_outputs)
    dh = np.zeros((B, H)) if d_h is None else _f64(d_h)
    dc = np.zeros((B, H)) if d_c is None else _f64(d_c)

    def loss():
        y, hT, cT = reference_forward(args["inputs"], args["kernel"], args["recurrent_kernel"],
                                      args["bias"], resets, args["h0"], args["c0"], mask,
                                      dropout=dropout)
        return np.sum(y * dY) + np.sum(hT * dh) + np.sum(cT * dc)

    return central_differences(loss, args, eps)


def central_differences(loss, args, eps):
    """d loss / d args[name] for every name, by central differences: loss() reads the float64
    arrays of `args`, which are perturbed in place one element at a time (and restored)."""
    grads = {}
    for name, a in args.items():
        g = np.zeros_like(a)
        flat, gflat = a.reshape(-1), g.reshape(-1)
        for k in range(flat.size):
            old = flat[k]
            flat[k] = old + eps
            lp = loss()
            flat[k] = old - eps
            lm = loss()
            flat[k] = old
            gflat[k] = (lp - lm) / (2 * eps)
        grads[name] = g
    return grads
