"""Stateful training of resetlstm.torch.ResetLSTM on packed documents with PyTorch
DistributedDataParallel: every process owns whole streams and carries their LSTM state from
batch to batch; DDP averages the gradients.

    torchrun --nproc_per_node 2 examples/train_ddp.py --out DIR     # 2 processes (gloo, CPU)
    python examples/train_ddp.py --out DIR                          # one process, global batch

The documents are packed into B streams (resetlstm.data.pack_documents, a reset at each
document start); with R processes, rank r owns streams [r*B/R, (r+1)*B/R) of every batch (the
rule of PackedDocuments.replica_streams) and keeps their (h, c) between batches, detached
(truncated backpropagation through time). Each process averages its loss over its own rows, so
DDP's average of the gradients is the gradient of the loss averaged over the global batch: R
processes end with the weights one process gets on the whole batch. Writes DIR/rank<r>.pt with
the final weights and the state of the rank's streams.
"""
import argparse
import gc
import os

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

import resetlstm.torch as rt
from resetlstm.data import pack_documents


class LanguageModel(nn.Module):
    def __init__(self, vocab=32, embed=8, hidden=16):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.lstm = rt.ResetLSTM(embed, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, tokens, resets, state):
        y, state = self.lstm(self.embed(tokens), state, resets=resets)
        return self.head(y), state


def data(batch_size=8, seq_len=12):
    rng = np.random.default_rng(0)
    docs = [rng.integers(1, 32, size=n) for n in rng.integers(3, 40, size=80)]
    return pack_documents(docs, batch_size=batch_size, seq_len=seq_len, dtype=np.int64)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="directory for rank<r>.pt")
    parser.add_argument("--steps", type=int, default=6, help="batches to train on")
    args = parser.parse_args(argv)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    torch.manual_seed(0)  # the same initial weights in every process
    model = LanguageModel()
    if world > 1:
        dist.init_process_group("gloo", rank=rank, world_size=world)
        model = nn.parallel.DistributedDataParallel(model)
    packed = data()
    streams = list(packed.replica_streams(rank, world))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    state = None
    for k in range(min(args.steps, packed.num_batches)):
        (tokens, resets), targets, weights = packed.batch(k)
        tokens, resets, targets, weights = (torch.from_numpy(a[streams])
                                            for a in (tokens, resets, targets, weights))
        logits, state = model(tokens, resets, state)
        state = tuple(s.detach() for s in state)  # carried to the next batch, not through it
        losses = nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        loss = (losses * weights).sum() / weights.numel()  # mean over this process's rows
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    module = model.module if world > 1 else model
    torch.save({"weights": module.state_dict(), "streams": streams, "state": state},
               os.path.join(args.out, f"rank{rank}.pt"))
    if world > 1:
        # Free DDP (and its Reducer) while the process group is still registered, then destroy
        # the group. In the other order the Reducer holds the group's last reference, and its
        # destructor joins gloo's worker threads without releasing the GIL, while a worker may
        # still be freeing a finished allreduce whose thread-local state needs the GIL: a
        # deadlock at exit in torch 2.13 (2 of about 70 runs hung here).
        del model, module
        gc.collect()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
