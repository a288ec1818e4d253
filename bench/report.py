"""Markdown table and PNG plot from the benchmark's JSON (bench/run.py writes all three).

    python bench/report.py bench/results/cpu-amd-epyc-2c.json    # re-render .md and .png from a JSON
"""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import fmt_ms, shape_str  # noqa: E402

MODES = (("fwd", "fwd"), ("fwdbwd", "fwd+bwd"))


def _median(entry, mode):
    if not entry or entry.get("status") != "ok" or mode not in entry:
        return None
    return entry[mode]["median_ms"]


def _status_note(entry):
    if entry is None:
        return "not run"
    st = entry.get("status", "?")
    return "" if st == "ok" else st.split(":")[0].replace("_", " ")


def _fmt_ratio(x):
    return "–" if x is None else f"{x:.2f}×"


def _fmt_pct(x):
    return "–" if x is None else f"{x:.0f} %"


def _fmt_mb(b):
    if b is None:
        return "–"
    mb = b / 2**20
    return f"{mb:.0f}" if mb >= 100 else f"{mb:.1f}" if mb >= 1 else f"{mb:.3g}"


def shape_table(res, shape):
    B, T, I, H = (shape[k] for k in "BTIH")
    mm = shape.get("matmul", {})
    lim = shape.get("limit_ms", {})
    lines = [f"### (B, T, I, H) = {shape_str(B, T, I, H)}", ""]
    if mm:
        lines.append(f"matmul {mm['n']}×{mm['n']}×{mm['n']}: {mm['gflops']:.0f} GFLOP/s (median of "
                     f"{len(mm['times_ms'])}) → limit {fmt_ms(lim.get('fwd'))} ms fwd, "
                     f"{fmt_ms(lim.get('fwdbwd'))} ms fwd+bwd "
                     f"(LSTM FLOPs {shape['flops']['fwd'] / 1e9:.2f} / {shape['flops']['fwdbwd'] / 1e9:.2f} GFLOP)")
        lines.append("")
    lines.append("| variant | fwd ms | fwd+bwd ms | resetlstm speedup fwd | resetlstm speedup fwd+bwd "
                 "| % of limit fwd | % of limit fwd+bwd | saved for backward MB |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in res["variant_order"]:
        meta = res["variants"][name]
        e = shape["results"].get(name)
        if e is None:
            continue
        note = _status_note(e)
        cells = [meta["label"] + (f" ({note})" if note else "")]
        cells += [fmt_ms(_median(e, m)) for m, _ in MODES]
        sp = e.get("speedup") or {}
        cells += [_fmt_ratio(sp.get(m)) for m, _ in MODES]
        pct = e.get("pct_of_limit") or {}
        cells += [_fmt_pct(pct.get(m)) for m, _ in MODES]
        sb = _fmt_mb(e.get("saved_bytes"))
        if e.get("saved_bytes") is not None and meta.get("saved_tag"):
            sb += f" ({meta['saved_tag']})"
        if meta.get("saved_tag") == "analytic" and e.get("saved_bytes_runtime") is not None:
            sb += f" / {_fmt_mb(e['saved_bytes_runtime'])} (runtime)"
        cells.append(sb)
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def sweep_table(res):
    sw = res.get("sweep")
    if not sw or not sw.get("points"):
        return []
    names = [n for n in res["variant_order"] if n in sw["variants"]]
    lines = [f"### Batch sweep: T = {sw['T']}, I = H = {sw['H']}, fwd+bwd, median of {sw['reps']} reps",
             "", "Throughput in tokens/s (B·T / median time); in parentheses the speedup of resetlstm.", "",
             "| B | " + " | ".join(res["variants"][n]["label"] for n in names) + " | matmul limit |",
             "|---:|" + "---:|" * (len(names) + 1)]
    for p in sw["points"]:
        cells = [str(p["B"])]
        for n in names:
            e = p["results"].get(n)
            ms = _median(e, "fwdbwd")
            if ms is None:
                cells.append(_status_note(e) or "–")
                continue
            tok = p["B"] * p["T"] / (ms / 1e3)
            sp = (e.get("speedup") or {}).get("fwdbwd")
            cells.append(f"{tok / 1e3:.1f} k" + (f" ({sp:.2f}×)" if sp is not None else ""))
        lim = p.get("limit_ms", {}).get("fwdbwd")
        cells.append(f"{p['B'] * p['T'] / (lim / 1e3) / 1e3:.1f} k" if lim else "–")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def markdown(res):
    m = res["machine"]
    cpu = m["cpu"]
    v = res["versions"]
    s = res["settings"]
    out = [f"# resetlstm benchmark — {res['name']}", ""]
    if res.get("quick"):
        out += ["**--quick smoke run: tiny shapes, 1-2 reps; the numbers mean nothing.**", ""]
    out += [
        f"- machine: {cpu.get('model')} ({', '.join(cpu.get('flags_simd', []))}), "
        f"{m['cores_available']} cores available, {m.get('mem_total_gib')} GiB; host {m['hostname']}",
        f"- threads: TF intra-op {s['threads']}, torch.set_num_threads({s['threads']}); float32; no GPU",
        f"- versions: TensorFlow {v.get('tensorflow')}, Keras {v.get('keras')}, torch {v.get('torch') or 'not installed'}"
        f", numpy {v.get('numpy')}, resetlstm {v.get('resetlstm')}",
        f"- resetlstm.build_info(): `{json.dumps(res.get('resetlstm_build_info'))}`",
        f"- timing: median of {s['reps']} reps after {s['warmup']} warm-up calls (the first one traces); variants"
        f" interleaved rep by rep in one process (torch: in a subprocess right after the TF variants of the same"
        f" shape); load average at start {m.get('loadavg_at_start')}, at end {res.get('loadavg_at_end')}",
        f"- run took {res.get('total_s', 0):.0f} s; command: `{res.get('command')}`",
        "",
        "Speedup = peer's median time / resetlstm's median time (>1: resetlstm faster). The naive reset loop"
        " runs with 2 % resets and is compared with resetlstm with 2 % resets; every other peer runs without"
        " resets and is compared with resetlstm without resets.",
        "",
        f"Limit = the LSTM's matmul FLOPs (fwd 2·B·T·(I+H)·4H, fwd+bwd 3×) / the GFLOP/s of one float32"
        f" tf.matmul of {s['matmul_n']}×{s['matmul_n']} by {s['matmul_n']}×{s['matmul_n']}, timed in the same"
        f" rep loop as each shape. % of limit = limit time / variant time.",
        "",
    ]
    for sh in res["shapes"]:
        out += shape_table(res, sh)
    out += sweep_table(res)
    out += ["### What 'saved for backward' means per variant", ""]
    for name in res["variant_order"]:
        meta = res["variants"][name]
        out.append(f"- **{meta['label']}**: {meta['description']} — saved: {meta['saved_method']}")
    out.append("")
    checks = [c for sh in res["shapes"] for c in sh.get("checks", [])]
    if checks:
        bad = [c for c in checks if not c["ok"]]
        out.append(f"Correctness checks (once per shape, outside the timing): {len(checks) - len(bad)}/"
                   f"{len(checks)} passed" + ("" if not bad else " — FAILED: " +
                                             "; ".join(f"{c['shape']} {c['what']}: {c['err']:.2e}" for c in bad)))
        worst = {}
        for c in checks:
            worst[c["kind"]] = max(worst.get(c["kind"], 0.0), c["err"])
        out.append("(worst: " + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()) + ")")
        out.append("")
    if res.get("notes"):
        out += ["### Notes", ""] + [f"- {n}" for n in res["notes"]] + [""]
    return "\n".join(out)


def plot(res, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sw = res.get("sweep")
    fig, ax = plt.subplots(figsize=(8, 5.2))
    if sw and sw.get("points"):
        names = [n for n in res["variant_order"] if n in sw["variants"]]
        for n in names:
            xs, ys = [], []
            for p in sw["points"]:
                ms = _median(p["results"].get(n), "fwdbwd")
                if ms is not None:
                    xs.append(p["B"])
                    ys.append(p["B"] * p["T"] / (ms / 1e3))
            if xs:
                meta = res["variants"][n]
                ax.plot(xs, ys, marker="o", label=meta["label"], color=meta.get("color"))
        xs = [p["B"] for p in sw["points"] if p.get("limit_ms")]
        ys = [p["B"] * p["T"] / (p["limit_ms"]["fwdbwd"] / 1e3) for p in sw["points"] if p.get("limit_ms")]
        if xs:
            ax.plot(xs, ys, ls="--", color="gray",
                    label=f"matmul limit ({res['settings']['matmul_n']}³ tf.matmul GFLOP/s)")
        ax.set_title(f"LSTM fwd+bwd throughput, T={sw['T']}, I=H={sw['H']}, float32, "
                     f"{res['settings']['threads']} threads\n{res['machine']['cpu'].get('model')}"
                     + ("  [--quick: meaningless]" if res.get("quick") else ""), fontsize=10)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    if sw and sw.get("points"):
        ax.set_xticks([p["B"] for p in sw["points"]])
        ax.set_xticklabels([str(p["B"]) for p in sw["points"]])
    ax.set_xlabel("batch size B")
    ax.set_ylabel("tokens/s  (B·T / time of fwd+bwd), log scale")
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    path = sys.argv[1]
    res = json.load(open(path))
    base = os.path.splitext(path)[0]
    open(base + ".md", "w").write(markdown(res))
    plot(res, base + ".png")
    print(f"wrote {base}.md {base}.png")


if __name__ == "__main__":
    main()
