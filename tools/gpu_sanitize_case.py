"""A small forward + backward through resetlstm._native.forward_cuda / backward_cuda for every
dtype (float32, float64, float16, bfloat16 where the GPU takes it) and flag combination (resets,
mask, initial state, recurrent dropout, both layouts), odd sizes: the workload tools/gpu-check runs
under compute-sanitizer memcheck and racecheck. Exits non-zero if any call raises."""
import itertools
import sys

import torch

from resetlstm import _native as nat


def main():
    dev = torch.device("cuda")
    dtypes = [torch.float32, torch.float64, torch.float16]
    if torch.cuda.get_device_capability()[0] >= 8:
        dtypes.append(torch.bfloat16)
    B, T, I, H = 5, 7, 3, 6
    g = torch.Generator(device=dev).manual_seed(0)
    runs = 0
    for dtype, time_major, resets, mask, state, dropout in itertools.product(
            dtypes, [False, True], *[[False, True]] * 4):
        def rnd(*shape):
            return torch.randn(*shape, generator=g, device=dev).to(dtype)
        seq = (T, B) if time_major else (B, T)
        x, k, rk, b = rnd(*seq, I), rnd(I, 4 * H) * 0.3, rnd(H, 4 * H) * 0.3, rnd(4 * H) * 0.1
        r = (torch.rand(*seq, generator=g, device=dev) < 0.2) if resets else None
        m = (torch.rand(*seq, generator=g, device=dev) < 0.8) if mask else None
        h0, c0 = (rnd(B, H), rnd(B, H)) if state else (None, None)
        drop = (torch.rand(B, H, generator=g, device=dev) < 0.7).to(dtype) / 0.7 if dropout \
            else None
        y, h, c, gates, cells = nat.forward_cuda(x, k, rk, b, resets=r, mask=m, h0=h0, c0=c0,
                                                 time_major=time_major,
                                                 recurrent_dropout_mask=drop)
        nat.forward_cuda(x, k, rk, b, resets=r, mask=m, h0=h0, c0=c0, time_major=time_major,
                         training=False, recurrent_dropout_mask=drop)
        nat.backward_cuda(x, k, rk, b, r, m, h0, c0, y, gates, cells, torch.ones_like(y),
                          torch.ones_like(h), None, time_major=time_major,
                          recurrent_dropout_mask=drop)
        runs += 1
    torch.cuda.synchronize()
    print(f"{runs} forward/inference/backward triples ran: "
          f"{', '.join(str(d).replace('torch.', '') for d in dtypes)}")


if __name__ == "__main__":
    sys.exit(main())
