"""The CUDA path's launch sequence, replayed in numpy on the CPU.

No machine of this project's CI has a GPU, so csrc/kernels/recurrence_cuda_forward.cu and
recurrence_cuda_backward.cu are mirrored here kernel by kernel, for every cell (the cells' gate
math of lstm_cell.h and gru_cell.h is mirrored in LSTM, GRU below): each __global__ kernel is one
function over all its (b, j) threads at once, each cuBLAS call one matmul with the same operands,
column blocks, transposes and beta, in the same order. Comparing this replay with the CPU kernels
(resetlstm._native) checks the CUDA algorithm's indexing, reset and mask handling, recurrent
dropout placement, the two-stage GRU's second GEMM and initial/final state handling; the CUDA
code itself is checked by tests/test_gpu.py on a machine with a GPU. Keep the two in step: a
change to a .cu file changes the function of the same name here.

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


# ---- the cells (lstm_cell.h, gru_cell.h) --------------------------------------------------------

class LSTM:
    gates, saved, bias_rows, cell_state = 4, 4, 1, True
    sums_projections, two_stage, direct_grad, split_input_grad = True, False, False, False

    @staticmethod
    def forward(x, hh, b, b_rec, h_prev, c_prev):
        """(saved list, h, c) of a step; x, hh, b: per-gate lists of [B, H] arrays."""
        i = sigmoid(x[0] + hh[0] + b[0])
        f = sigmoid(x[1] + hh[1] + b[1])
        g = np.tanh(x[2] + hh[2] + b[2])
        o = sigmoid(x[3] + hh[3] + b[3])
        c = f * c_prev + i * g
        return [i, f, g, o], o * np.tanh(c), c

    @staticmethod
    def backward(saved, h_prev, c_prev, c, dh, dc):
        """(d_rec list, d_in_last, dh_direct, dc_prev)."""
        i, f, g, o = saved
        tc = np.tanh(c)
        dc_total = dc + dh * o * (1 - tc * tc)
        d_rec = [dc_total * g * i * (1 - i), dc_total * c_prev * f * (1 - f),
                 dc_total * i * (1 - g * g), dh * tc * o * (1 - o)]
        return d_rec, None, np.zeros_like(dh), dc_total * f


class GRU:
    """reset_after=True (GRU) or False (GRU_BEFORE)."""
    gates, cell_state, sums_projections, direct_grad = 3, False, False, True

    def __init__(self, reset_after):
        self.reset_after = reset_after
        self.saved = 4 if reset_after else 3
        self.bias_rows = 2 if reset_after else 1
        self.two_stage = not reset_after
        self.split_input_grad = reset_after

    def forward(self, x, hh, b, b_rec, h_prev, c_prev):
        if self.reset_after:
            z = sigmoid((x[0] + b[0]) + (hh[0] + b_rec[0]))
            r = sigmoid((x[1] + b[1]) + (hh[1] + b_rec[1]))
            hn = hh[2] + b_rec[2]
            n = np.tanh((x[2] + b[2]) + r * hn)
            saved = [z, r, n, hn]
        else:
            z = sigmoid((x[0] + b[0]) + hh[0])
            r = sigmoid((x[1] + b[1]) + hh[1])
            n = np.tanh((x[2] + b[2]) + hh[2])
            saved = [z, r, n]
        return saved, z * h_prev + (1 - z) * n, None

    @staticmethod
    def stage_operand(x_r, hh_r, b_r, g):
        return sigmoid((x_r + b_r) + hh_r) * g

    def backward(self, saved, h_prev, c_prev, c, dh, dc):
        z, r, n = saved[:3]
        dn = dh * (1 - z)
        d_z = dh * (h_prev - n)
        da_n = dn * (1 - n * n)
        if self.reset_after:
            d_rec = [d_z * z * (1 - z), (da_n * saved[3]) * r * (1 - r), da_n * r]
            return d_rec, da_n, dh * z, None
        return [d_z * z * (1 - z), np.zeros_like(dh), da_n], None, dh * z, None

    @staticmethod
    def stage_backward(saved, g, m, d_op, direct):
        """(reset gate gradient, direct + r * m * d_op)."""
        r = saved[1]
        return (d_op * g) * r * (1 - r), direct + d_op * r * m


CELLS = {"lstm": LSTM, "gru": GRU(True), "gru_reset_before": GRU(False)}


def _split(a, n, H):
    return [a[:, k * H:(k + 1) * H] for k in range(n)]


def _dims(inputs, recurrent_kernel, time_major):
    """(B, T, I, H, Rows) of a call."""
    T, B, I = inputs.shape if time_major else (inputs.shape[1], inputs.shape[0], inputs.shape[2])
    return B, T, I, recurrent_kernel.shape[0], Rows(B, T, time_major)


def _flag(a, rows):
    return np.zeros(len(rows), bool) if a is None else a.reshape(-1)[rows]


def forward(inputs, kernel, rk, bias, resets=None, mask=None, h0=None, c0=None, dropout=None,
            time_major=False, training=True, storage=None, cell="lstm"):
    """recurrence_cuda_forward.cu: cell_forward<Cell, T>(). Arrays in the given layout; returns
    (outputs, h, c, gates, cells) like _native.forward (c, cells empty for the GRU)."""
    C = CELLS[cell]
    dtype = inputs.dtype
    q = storage_rounding(storage)
    B, T, I, H, row = _dims(inputs, rk, time_major)
    G, S = C.gates, C.saved
    GH = G * H
    first = (G - 1) * H if C.two_stage else GH
    bias = bias.reshape(-1)
    b_in, b_rec = _split(bias[None, :GH], G, H), (_split(bias[None, GH:], G, H)
                                                  if C.bias_rows > 1 else None)
    # z = inputs @ kernel over all B*T rows (beta 0)
    z = inputs.reshape(B * T, I) @ kernel
    gates = np.zeros((B * T, S * H), dtype)
    outputs = np.zeros((B * T, H), dtype)
    cells = np.zeros((B * T, H), dtype)
    h = np.zeros((B, H), dtype)
    c = np.zeros((B, H), dtype)
    if B * H == 0:
        return _finish_forward(C, outputs, h, c, gates, cells, B, T, H, time_major, training)
    b_all = np.arange(B)
    # init_state_kernel
    reset0 = (_flag(resets, row(b_all, 0)) if T > 0 else np.zeros(B, bool))[:, None]
    h = np.where(reset0, 0, h0) if h0 is not None else np.zeros((B, H), dtype)
    c = np.where(reset0, 0, c0) if c0 is not None else np.zeros((B, H), dtype)
    h_gemm = q(dropout * h if dropout is not None else h)  # gemm_input()
    zr = np.zeros((B, GH), dtype)
    for t in range(T):
        r = row.step(t)
        if C.sums_projections:  # gemm: z[:, t] += (m *) h @ recurrent_kernel   (beta 1)
            z[r] += h_gemm @ rk
        else:  # gemm: zr[:, first-stage gates] = (m *) h @ rk[:, first-stage gates]   (beta 0)
            zr[:, :first] = h_gemm @ rk[:, :first]
        if C.two_stage:  # second_stage_input_kernel, then gemm into zr[:, last gate]
            gated = q(C.stage_operand(z[r][:, H:2 * H], zr[:, H:2 * H], b_in[1], h_gemm))
            zr[:, first:] = gated @ rk[:, first:]
        # forward_step_kernel
        active = np.ones(B, bool) if mask is None else mask.reshape(-1)[r]
        reset_next = (_flag(resets, row(b_all, t + 1)) if t + 1 < T
                      else np.zeros(B, bool))[:, None]
        x = _split(z[r], G, H)
        hh = [np.zeros_like(x[0])] * G if C.sums_projections else _split(zr, G, H)
        saved, hn, cn = C.forward(x, hh, b_in, b_rec, h, c)
        a = active[:, None]
        if training:  # masked steps: the first G hold x W + h R, the rest zero
            masked = np.concatenate([x[k] + hh[k] for k in range(G)]
                                    + [np.zeros((B, H), dtype)] * (S - G), axis=1)
            gates[r] = q(np.where(a, np.concatenate(saved, axis=1), masked))
            if C.cell_state:
                cells[r] = q(np.where(a, cn, c))
        prev = outputs[row(b_all, t - 1)] if t > 0 else np.zeros((B, H), dtype)
        outputs[r] = np.where(a, q(hn), prev)
        h = np.where(reset_next, 0, np.where(a, hn, h))
        if C.cell_state:
            c = np.where(reset_next, 0, np.where(a, cn, c))
        h_gemm = q(dropout * h if dropout is not None else h)
    # store_final_state_kernel (half types)
    return _finish_forward(C, outputs, q(h), q(c), gates, cells, B, T, H, time_major, training)


def _finish_forward(C, outputs, h, c, gates, cells, B, T, H, time_major, training):
    shape = (T, B) if time_major else (B, T)
    empty = np.zeros(0, outputs.dtype)
    gates = gates.reshape(shape + (C.saved * H,)) if training else empty
    cells = cells.reshape(shape + (H,)) if training and C.cell_state else empty
    return (outputs.reshape(shape + (H,)), h, c if C.cell_state else empty, gates, cells)


def backward(inputs, kernel, rk, resets, mask, h0, c0, outputs, gates, cells, d_outputs, d_h,
             d_c, dropout=None, time_major=False, storage=None, cell="lstm"):
    """recurrence_cuda_backward.cu: cell_backward<Cell, T>(). Returns (dx, dK, dR, db, dh0, dc0)
    like _native.backward (dc0 empty for the GRU)."""
    C = CELLS[cell]
    dtype = inputs.dtype
    q = storage_rounding(storage)
    B, T, I, H, row = _dims(inputs, rk, time_major)
    G, S = C.gates, C.saved
    GH = G * H
    first = (G - 1) * H if C.two_stage else GH
    BT, BH = B * T, B * H
    b_all = np.arange(B)
    flat = lambda a, w: None if a is None else a.reshape(BT, w)  # noqa: E731
    gates, outputs, dy = flat(gates, S * H), flat(outputs, H), flat(d_outputs, H)
    cells = flat(cells, H) if C.cell_state else None
    dz = np.zeros((BT, GH), dtype)
    dz_x = np.zeros((BT, GH), dtype) if C.split_input_grad else dz
    h_in = np.zeros((BT, H), dtype)
    gated_in = np.zeros((BT, H), dtype)
    dh = np.zeros((B, H), dtype)
    dc = np.zeros((B, H), dtype)
    if BH > 0:
        # init_grad_kernel
        dh = d_h.copy() if d_h is not None else np.zeros((B, H), dtype)
        dc = d_c.copy() if (C.cell_state and d_c is not None) else np.zeros((B, H), dtype)
        dy_carry = np.zeros((B, H), dtype)
        # rebuild_recurrent_inputs_kernel: each thread walks its (b, j) through time
        if T > 0:
            reset0 = _flag(resets, row(b_all, 0))[:, None]
            cur = np.where(reset0, 0, h0) if h0 is not None else np.zeros((B, H), dtype)
            for t in range(T):
                r = row(b_all, t)
                h_in[r] = cur
                if t + 1 == T:
                    break
                active = np.ones(B, bool) if mask is None else mask.reshape(-1)[r]
                reset = _flag(resets, row(b_all, t + 1))[:, None]
                cur = np.where(reset, 0, np.where(active[:, None], outputs[r], cur))
        h_op = h_in  # what the recurrent GEMM read: m * h_in with dropout
        if dropout is not None:
            m_rows = np.tile(dropout, (T, 1)) if time_major else np.repeat(dropout, T, axis=0)
            h_op = q(h_in * m_rows)
        accumulate = C.direct_grad or mask is not None or dropout is not None
        direct = np.zeros((B, H), dtype)
        for t in range(T - 1, -1, -1):
            r = row(b_all, t)
            # backward_step_kernel
            reset_next = (_flag(resets, row(b_all, t + 1)) if t + 1 < T
                          else np.zeros(B, bool))[:, None]
            reset = _flag(resets, r)[:, None]
            dh_next = dh.copy()
            active = np.ones(B, bool) if mask is None else mask.reshape(-1)[r]
            a = active[:, None]
            dh_t = np.where(reset_next, 0, dh_next)
            if dy is not None:
                dh_t = dh_t + dy[r]
            if mask is not None:
                dh_t = dh_t + dy_carry
            if C.cell_state:
                c_prev = cells[row(b_all, t - 1)] if t > 0 else \
                    (c0 if c0 is not None else np.zeros((B, H), dtype))
                c_in, c_t = np.where(reset, 0, c_prev), cells[r]
            else:
                c_in = c_t = None
            saved = _split(gates[r], S, H)
            d_rec, d_in, dh_direct, dc_in = C.backward(saved, h_in[r], c_in, c_t, dh_t, dc)
            dz[r] = np.where(a, q(np.concatenate(d_rec, axis=1)), 0)
            if C.split_input_grad:
                dz_x[r] = np.where(a, q(np.concatenate(d_rec[:-1] + [d_in], axis=1)), 0)
            if C.cell_state:
                dc = np.where(reset, 0, np.where(a, dc_in, dc))
            if dropout is not None:
                direct = np.where(a, dh_direct, direct)
                dh = np.where(a, 0, np.where(reset_next, 0, dh_next))
            elif accumulate:
                dh = np.where(a, dh_direct, np.where(reset_next, 0, dh_next))
            if mask is not None:
                if dy is not None:
                    dy_carry = np.where(a, 0, dy_carry + dy[r])
                else:
                    dy_carry = np.where(a, 0, dy_carry)
            if C.two_stage:  # gemm d_op = dz[:, t, last] @ rk[:, last]^T, then the reset gate
                d_op = dz[r][:, first:] @ rk[:, first:].T
                m = dropout if dropout is not None else np.ones((B, H), dtype)
                g = h_op[r]
                target = direct if dropout is not None else dh
                da_r, updated = C.stage_backward(saved, g, m, d_op, target)
                dzr = dz[r]
                dzr[:, H:2 * H] = np.where(a, q(da_r), dzr[:, H:2 * H])
                dz[r] = dzr
                updated = np.where(a, updated, target)
                if dropout is not None:
                    direct = updated
                else:
                    dh = updated
                gated_in[r] = np.where(a, q(saved[1] * g), 0)
            # gemm: dh (+)= dz[:, t, first-stage] @ recurrent_kernel[:, first-stage]^T
            dh = dz[r][:, :first] @ rk[:, :first].T + (dh if accumulate else 0)
            if dropout is not None:  # apply_dropout_kernel
                dh = np.where(a, dropout * dh + direct, dh)
        # finish_dh0_kernel
        if T > 0:
            reset0 = _flag(resets, row(b_all, 0))[:, None]
            dh = np.where(reset0, 0, dh)
    else:
        h_op = h_in
    x = inputs.reshape(BT, I)
    d_kernel = q(x.T @ dz_x)
    d_rk = np.concatenate([h_op.T @ dz[:, :first]]
                          + ([gated_in.T @ dz[:, first:]] if C.two_stage else []), axis=1)
    d_inputs = q(dz_x @ kernel.T).reshape(inputs.shape)
    d_bias = dz_x.sum(axis=0)  # column_sums in acc_t
    if C.bias_rows > 1:  # [2, G*H]: the input row, the recurrent row
        d_bias = np.stack([d_bias, dz.sum(axis=0)])
    empty = np.zeros(0, dtype)
    return (d_inputs, d_kernel, q(d_rk), q(d_bias), q(dh),
            q(dc) if C.cell_state else empty)


def forward_backward(p, time_major=False, storage=None, cell="lstm"):
    """forward() then backward() on a conftest.make_problem dict (batch-major arrays; `time_major`
    runs the time-major layout): ((outputs, h, c, gates, cells), (dx, dK, dR, db, dh0, dc0)) in
    the layout run."""
    tm = (lambda a: None if a is None else np.ascontiguousarray(np.swapaxes(a, 0, 1))) \
        if time_major else (lambda a: a)
    x, r, m, dy = tm(p["inputs"]), tm(p["resets"]), tm(p["mask"]), tm(p["d_outputs"])
    fwd = forward(x, p["kernel"], p["recurrent_kernel"], p["bias"], resets=r, mask=m, h0=p["h0"],
                  c0=p.get("c0"), dropout=p.get("dropout"), time_major=time_major,
                  storage=storage, cell=cell)
    bwd = backward(x, p["kernel"], p["recurrent_kernel"], r, m, p["h0"], p.get("c0"), fwd[0],
                   fwd[3], fwd[4], dy, p["d_h"], p.get("d_c"), dropout=p.get("dropout"),
                   time_major=time_major, storage=storage, cell=cell)
    return fwd, bwd
