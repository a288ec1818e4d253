"""The demo (`python -m resetlstm`), run in-process on a tiny corpus."""
import math
import sysconfig

import numpy as np
import pytest

from resetlstm import demo
from resetlstm.data import pack_documents


def test_quick_demo_with_compare(capsys):
    results = demo.main(["--quick", "--compare", "--verbose", "0", "--seed", "1"])
    out = capsys.readouterr().out
    for key in ("resetlstm", "keras"):
        r = results[key]
        assert r["steps"] > 10 and r["chars_per_s"] > 0 and r["padding"] < 0.2
        # trained: better than uniform over 256 bytes (8 bits/char) and than the start (~5.5 nats)
        assert math.isfinite(r["val_bpc"]) and r["val_bpc"] < 7.0
        assert r["loss"] < 5.0
    # both runs are scored on the same held-out next-character predictions
    assert results["resetlstm"]["val_targets"] == results["keras"]["val_targets"] > 0
    assert results["sample"].startswith("def ") and len(results["sample"]) > 20
    for text in ("[1/4]", "[4/4]", "chars/s", "bits/char", "resetlstm.ResetLSTM",
                 "keras.layers.LSTM", "sample:"):
        assert text in out


def test_quick_demo_trains_the_gru_too(capsys):
    results = demo.main(["--quick", "--cell", "gru", "--compare", "--verbose", "0"])
    out = capsys.readouterr().out
    for key in ("resetlstm", "keras"):
        assert math.isfinite(results[key]["val_bpc"]) and results[key]["val_bpc"] < 7.0
        assert results[key]["loss"] < 5.0
    assert results["resetlstm"]["val_targets"] == results["keras"]["val_targets"] > 0
    for text in ("character-level GRU", "-> GRU(32)", "training resetlstm.ResetGRU",
                 "keras.layers.GRU the usual way", "ResetGRU vs keras.layers.GRU"):
        assert text in out, text


def test_windows_score_the_same_targets_as_packed_streams():
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 256, size=n).astype(np.int32) for n in (1, 5, 32, 33, 70)]
    x, y, w = demo.windows(docs, seq_len=8)
    packed = pack_documents(docs, batch_size=3, seq_len=8)
    assert w.sum() == packed.num_targets == sum(len(d) - 1 for d in docs)
    # every weighted target is the next character of the same document
    row = 0
    for d in docs:
        for s in range(0, len(d), 8):
            n = len(d[s + 1:s + 9])
            np.testing.assert_array_equal(x[row, :len(d[s:s + 8])], d[s:s + 8])
            np.testing.assert_array_equal(y[row, :n], d[s + 1:s + 1 + n])
            assert w[row, :n].all() and not w[row, n:].any()
            row += 1
    assert row == len(x)


def test_corpus_is_whole_files_in_seeded_order():
    root = sysconfig.get_paths()["stdlib"]
    train, val = demo.load_corpus(root, 20_000, 5_000, 1_500, seed=3)
    again, _ = demo.load_corpus(root, 20_000, 5_000, 1_500, seed=3)
    assert [len(d) for d in train] == [len(d) for d in again]
    assert sum(map(len, train)) >= 20_000 and sum(map(len, val)) >= 5_000
    for d in train + val:
        assert 1 < len(d) <= 1_500 and d.dtype == np.int32 and d.max() < 256


def test_arguments():
    args = demo.parse_args(["--quick", "--units", "8"])
    assert args.units == 8 and args.batch_size == demo.QUICK["batch_size"]  # --quick fills defaults
    assert demo.parse_args([]).batch_size == 256
    with pytest.raises(SystemExit):
        demo.parse_args(["--seq-len", "0"])
    assert demo.parse_args([]).cell == "lstm" and demo.parse_args(["--cell", "gru"]).cell == "gru"
    with pytest.raises(SystemExit):
        demo.parse_args(["--cell", "rnn"])


def test_serve_demo_quick(capsys):
    from resetlstm import serve_demo

    result = serve_demo.main(["--quick"])
    out = capsys.readouterr().out
    assert result["streams"] == 30
    # every stream got exactly its length in characters (prompt included), through 8 slots
    assert [t[0] for t in result["texts"]] == list(range(30))
    assert all(asked == served for _, _, asked, served, _ in result["texts"])
    assert result["stream_steps"] == sum(t[3] for t in result["texts"])
    assert result["steps"] < result["stream_steps"]  # slots were shared by the streams
    for text in ("[1/3]", "[3/3]", "stream-steps/s", "latency median", "stream 0: prompt"):
        assert text in out


def test_serve_demo_arguments():
    from resetlstm import serve_demo

    with pytest.raises(SystemExit):
        serve_demo.parse_args(["--slots", "0"])
    with pytest.raises(SystemExit):
        serve_demo.parse_args(["--min-len", "50", "--max-len", "10"])


def test_demo_without_tensorflow_says_what_to_install():
    import os
    import subprocess
    import sys

    import resetlstm

    code = ("import sys, runpy\n"
            "sys.modules['tensorflow'] = sys.modules['keras'] = None  # as if not installed\n"
            "sys.argv = ['resetlstm', '--quick']\n"
            "runpy.run_module('resetlstm', run_name='__main__')\n")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(resetlstm.__file__)))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1
    assert 'pip install "resetlstm[tensorflow]"' in proc.stderr, proc.stderr
