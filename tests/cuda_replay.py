"""The CUDA path's launch sequence, replayed in numpy on the CPU.

No machine of this project's CI has a GPU, so csrc/kernels/lstm_cuda_forward.cu and
lstm_cuda_backward.cu are mirrored here kernel by kernel: each __global__ kernel is one function
over all its (b, j) threads at once, each cuBLAS call one matmul with the same operands, strides,
transposes and beta, in the same order. Comparing this replay with the CPU kernels
(resetlstm._native.forward/backward) checks the CUDA algorithm's indexing, reset and mask
handling, recurrent dropout placement and initial/final state handling; the CUDA code itself is
checked by tests/test_gpu.py on a machine with a GPU. Keep the two in step: a change to a .cu file
changes the function of the same name here.

Half storage types (``storage="bfloat16"`` or ``"float16"``): the arrays come in as float32
holding half-representable values and the replay computes in float32, rounding to the storage
type exactly where the CUDA kernels store a half value (saved activations, outputs, the recurrent
GEMM's input, dz, the gradients) and nowhere else (z, the running h, c, dh, dc stay float32).
Pure numpy, so it also runs on the GPU machine, which has no ml_dtypes.
"""
import numpy as np


def round_bf16(a):
    """float32 -> the nearest bfloat16 (ties to even), as float32; NaN stays NaN."""
    a = np.ascontiguousarray(a, np.float32)
    u = a.view(np.uint32).astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000).astype(np.uint32)
    return np.where(np.isnan(a), a, rounded.view(np.float32))


def storage_rounding(storage):
    """The function that stores a computed value in `storage` (None: the arrays' own dtype,
    nothing to round)."""
    if storage is None:
        return lambda a: a
    if storage == "bfloat16":
        return round_bf16
    if storage == "float16":
        return lambda a: np.asarray(a, np.float32).astype(np.float16).astype(np.float32)
    raise ValueError(f"storage must be None, 'bfloat16' or 'float16', got {storage!r}")


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


class Rows:
    """RowIndex: row (b, t) of a [B,T,*] array, b*T + t, or t*B + b when time-major."""

    def __init__(self, B, T, time_major):
        self.B, self.T, self.time_major = B, T, time_major

    def __call__(self, b, t):
        b = np.asarray(b)
        return t * self.B + b if self.time_major else b * self.T + t

    def step(self, t):
        """The rows of step t for b = 0..B-1 (what a GEMM with ldz = batch_stride * 4H reads)."""
        return self(np.arange(self.B), t)


def _dims(inputs, recurrent_kernel, time_major):
    """(B, T, I, H, Rows) of a call."""
    T, B, I = inputs.shape if time_major else (inputs.shape[1], inputs.shape[0], inputs.shape[2])
    return B, T, I, recurrent_kernel.shape[0], Rows(B, T, time_major)


def _flag(a, rows):
    return np.zeros(len(rows), bool) if a is None else a.reshape(-1)[rows]


def forward(inputs, kernel, rk, bias, resets=None, mask=None, h0=None, c0=None, dropout=None,
            time_major=False, training=True, storage=None):
    """lstm_cuda_forward.cu: forward<T>(). Arrays in the given layout; returns
    (outputs, h, c, gates, cells) like _native.forward."""
    dtype = inputs.dtype
    q = storage_rounding(storage)
    B, T, I, H, row = _dims(inputs, rk, time_major)
    # z = inputs @ kernel over all B*T rows (beta 0)
    z = inputs.reshape(B * T, I) @ kernel
    outputs = np.zeros((B * T, H), dtype)
    cells = np.zeros((B * T, H), dtype)
    h = np.zeros((B, H), dtype)
    c = np.zeros((B, H), dtype)
    if B * H == 0:
        return _finish_forward(outputs, h, c, z, cells, B, T, H, time_major, training)
    b_all = np.arange(B)
    # init_state_kernel
    reset0 = (_flag(resets, row(b_all, 0)) if T > 0 else np.zeros(B, bool))[:, None]
    h = np.where(reset0, 0, h0) if h0 is not None else np.zeros((B, H), dtype)
    c = np.where(reset0, 0, c0) if c0 is not None else np.zeros((B, H), dtype)
    h_gemm = q(dropout * h if dropout is not None else h)  # gemm_input()
    for t in range(T):
        r = row.step(t)
        # gemm: z[:, t] += (m *) h @ recurrent_kernel   (beta 1)
        z[r] += h_gemm @ rk
        # forward_step_kernel
        active = ~_flag(None, r) if mask is None else mask.reshape(-1)[r]
        reset_next = (_flag(resets, row(b_all, t + 1)) if t + 1 < T
                      else np.zeros(B, bool))[:, None]
        zz = z[r] + bias
        i, f = sigmoid(zz[:, :H]), sigmoid(zz[:, H:2 * H])
        g, o = np.tanh(zz[:, 2 * H:3 * H]), sigmoid(zz[:, 3 * H:])
        cn = f * c + i * g
        hn = o * np.tanh(cn)
        a = active[:, None]
        if training:  # the gates array (masked steps: x W + h R)
            z[r] = q(np.where(a, np.concatenate([i, f, g, o], axis=1), z[r]))
            cells[r] = q(np.where(a, cn, c))
        prev = outputs[row(b_all, t - 1)] if t > 0 else np.zeros((B, H), dtype)
        outputs[r] = np.where(a, q(hn), prev)
        h = np.where(reset_next, 0, np.where(a, hn, h))
        c = np.where(reset_next, 0, np.where(a, cn, c))
        h_gemm = q(dropout * h if dropout is not None else h)
    # store_final_state_kernel (half types)
    return _finish_forward(outputs, q(h), q(c), z, cells, B, T, H, time_major, training)


def _finish_forward(outputs, h, c, z, cells, B, T, H, time_major, training):
    shape = (T, B) if time_major else (B, T)
    gates = z.reshape(shape + (4 * H,)) if training else np.zeros(0, z.dtype)
    cells = cells.reshape(shape + (H,)) if training else np.zeros(0, z.dtype)
    return outputs.reshape(shape + (H,)), h, c, gates, cells


def backward(inputs, kernel, rk, resets, mask, h0, c0, outputs, gates, cells, d_outputs, d_h,
             d_c, dropout=None, time_major=False, storage=None):
    """lstm_cuda_backward.cu: backward<T>(). Returns (dx, dK, dR, db, dh0, dc0) like
    _native.backward."""
    dtype = inputs.dtype
    q = storage_rounding(storage)
    B, T, I, H, row = _dims(inputs, rk, time_major)
    BT, BH = B * T, B * H
    b_all = np.arange(B)
    flat = lambda a, w: None if a is None else a.reshape(BT, w)  # noqa: E731
    gates, cells, outputs, dy = flat(gates, 4 * H), flat(cells, H), flat(outputs, H), \
        flat(d_outputs, H)
    dz = np.zeros((BT, 4 * H), dtype)
    h_in = np.zeros((BT, H), dtype)
    dh = np.zeros((B, H), dtype)
    dc = np.zeros((B, H), dtype)
    if BH > 0:
        # init_grad_kernel
        dh = d_h.copy() if d_h is not None else np.zeros((B, H), dtype)
        dc = d_c.copy() if d_c is not None else np.zeros((B, H), dtype)
        dy_carry = np.zeros((B, H), dtype)
        # rebuild_recurrent_inputs_kernel: each thread walks its (b, j) through time
        scaled_input = (lambda h: q(dropout * h)) if dropout is not None else (lambda h: h)
        if T > 0:
            reset0 = _flag(resets, row(b_all, 0))[:, None]
            cur = np.where(reset0, 0, h0) if h0 is not None else np.zeros((B, H), dtype)
            h_in[row(b_all, 0)] = scaled_input(cur)
            for t in range(T - 1):
                r, rn = row(b_all, t), row(b_all, t + 1)
                reset = _flag(resets, rn)[:, None]
                if mask is None:
                    nxt = outputs[r]
                else:
                    o = gates[r][:, 3 * H:]
                    nxt = np.where(mask.reshape(-1)[r][:, None], q(o * np.tanh(cells[r])), cur)
                cur = np.where(reset, 0, nxt)
                h_in[rn] = scaled_input(cur)
        for t in range(T - 1, -1, -1):
            r = row(b_all, t)
            # backward_step_kernel
            reset_next = (_flag(resets, row(b_all, t + 1)) if t + 1 < T
                          else np.zeros(B, bool))[:, None]
            reset = _flag(resets, r)[:, None]
            dh_next = dh.copy()
            if dropout is not None and t + 1 < T:
                next_active = np.ones(B, bool) if mask is None else \
                    mask.reshape(-1)[row(b_all, t + 1)]
                dh_next = np.where(next_active[:, None], dh_next * dropout, dh_next)
            active = np.ones(B, bool) if mask is None else mask.reshape(-1)[r]
            a = active[:, None]
            g = gates[r]
            i, f, gg, o = g[:, :H], g[:, H:2 * H], g[:, 2 * H:3 * H], g[:, 3 * H:]
            dh_t = np.where(reset_next, 0, dh_next)
            if dy is not None:
                dh_t = dh_t + dy[r]
            if mask is not None:
                dh_t = dh_t + dy_carry
            c_prev = cells[row(b_all, t - 1)] if t > 0 else \
                (c0 if c0 is not None else np.zeros((B, H), dtype))
            c_in = np.where(reset, 0, c_prev)
            # cell_backward (lstm_cell.h)
            tc = np.tanh(cells[r])
            dc_total = dc + dh_t * o * (1 - tc * tc)
            d_o = dh_t * tc
            dz_step = np.concatenate([dc_total * gg * i * (1 - i), dc_total * c_in * f * (1 - f),
                                      dc_total * i * (1 - gg * gg), d_o * o * (1 - o)], axis=1)
            dc_in = dc_total * f
            dz[r] = np.where(a, q(dz_step), 0)
            dc = np.where(reset, 0, np.where(a, dc_in, dc))
            if mask is not None:
                dh = np.where(a, 0, np.where(reset_next, 0, dh_next))
                if dy is not None:
                    dy_carry = np.where(a, 0, dy_carry + dy[r])
                else:
                    dy_carry = np.where(a, 0, dy_carry)
            # gemm: dh = dz[:, t] @ recurrent_kernel^T (+ dh with a mask: beta 1)
            dh = dz[r] @ rk.T + (dh if mask is not None else 0)
        # finish_dh0_kernel
        if T > 0:
            r0 = row(b_all, 0)
            reset0 = _flag(resets, r0)[:, None]
            active0 = (np.ones(B, bool) if mask is None else mask.reshape(-1)[r0])[:, None]
            scaled = dh * dropout if dropout is not None else dh
            dh = np.where(reset0, 0, np.where(active0, scaled, dh))
    x = inputs.reshape(BT, I)
    d_kernel = q(x.T @ dz)
    d_rk = q(h_in.T @ dz)
    d_inputs = q(dz @ kernel.T).reshape(inputs.shape)
    d_bias = q(dz.sum(axis=0))  # column_sums in acc_t
    return d_inputs, d_kernel, d_rk, d_bias, q(dh), q(dc)


def forward_backward(p, time_major=False, storage=None):
    """forward() then backward() on a conftest.make_problem dict (batch-major arrays; `time_major`
    runs the time-major layout): ((outputs, h, c, gates, cells), (dx, dK, dR, db, dh0, dc0)) in
    the layout run."""
    tm = (lambda a: None if a is None else np.ascontiguousarray(np.swapaxes(a, 0, 1))) \
        if time_major else (lambda a: a)
    x, r, m, dy = tm(p["inputs"]), tm(p["resets"]), tm(p["mask"]), tm(p["d_outputs"])
    fwd = forward(x, p["kernel"], p["recurrent_kernel"], p["bias"], resets=r, mask=m, h0=p["h0"],
                  c0=p["c0"], dropout=p.get("dropout"), time_major=time_major, storage=storage)
    bwd = backward(x, p["kernel"], p["recurrent_kernel"], r, m, p["h0"], p["c0"], fwd[0], fwd[3],
                   fwd[4], dy, p["d_h"], p["d_c"], dropout=p.get("dropout"),
                   time_major=time_major, storage=storage)
    return fwd, bwd
