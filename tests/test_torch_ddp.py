"""resetlstm.torch.ResetLSTM under torch DistributedDataParallel (examples/train_ddp.py): 2
processes (gloo, CPU, 127.0.0.1) end with the weights of one process trained on the global
batch, and each rank holds exactly the state of its own streams."""
import os
import socket
import subprocess
import sys
import time

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch.distributed")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "train_ddp.py")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one_on_the_global_batch(tmp_path):
    import resetlstm

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(resetlstm.__file__))),
         os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1",
               KERAS_BACKEND="torch")  # where Keras is installed, keep TensorFlow out of them
    single, multi = tmp_path / "single", tmp_path / "multi"
    single.mkdir(), multi.mkdir()
    port = str(free_port())
    # The ranks write to files, not pipes: a rank blocked on a full pipe that nobody reads yet
    # would stall the other rank's collectives too.
    logs = [multi / f"rank{r}.log" for r in range(2)]
    procs = []
    for r, log in enumerate(logs):
        with open(log, "w") as out:  # the child keeps its own copy of the descriptor
            procs.append(subprocess.Popen(
                [sys.executable, EXAMPLE, "--out", str(multi)],
                env=dict(env, RANK=str(r), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                         MASTER_PORT=port), stdout=out, stderr=subprocess.STDOUT))
    try:
        one = subprocess.run([sys.executable, EXAMPLE, "--out", str(single)], env=env,
                             capture_output=True, text=True, timeout=300)
        assert one.returncode == 0, one.stderr[-3000:]
        deadline = time.monotonic() + 300
        for p in procs:
            try:
                p.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
    finally:
        hung = [p.poll() is None for p in procs]
        for p in procs:
            p.kill()
            p.wait()
    report = "\n".join(f"rank {r}, " + ("still running after 300 s, killed" if h else
                                         f"exit status {p.returncode}")
                        + f":\n{log.read_text()[-3000:]}"
                        for r, (p, h, log) in enumerate(zip(procs, hung, logs)))
    assert all(p.returncode == 0 for p in procs), report

    reference = torch.load(single / "rank0.pt")
    assert reference["streams"] == list(range(8))
    for rank in range(2):
        got = torch.load(multi / f"rank{rank}.pt")
        assert got["streams"] == list(range(4 * rank, 4 * rank + 4))
        for name, value in reference["weights"].items():
            torch.testing.assert_close(got["weights"][name], value, rtol=1e-5, atol=1e-6)
        for mine, whole in zip(got["state"], reference["state"]):
            torch.testing.assert_close(mine, whole[:, got["streams"]], rtol=1e-5, atol=1e-6)
    # and training moved the weights (the comparison above is not of two untouched models)
    torch.manual_seed(0)
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    try:
        import train_ddp
    finally:
        sys.path.pop(0)
    initial = train_ddp.LanguageModel().state_dict()
    assert all(not torch.equal(initial[n], v) for n, v in reference["weights"].items())
