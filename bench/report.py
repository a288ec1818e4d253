"""Markdown table and PNG plot from the benchmark's JSON (bench/run.py writes all three).

    python bench/report.py bench/results/cpu-amd-epyc-2c.json    # re-render .md and .png from a JSON
    python bench/report.py --merge OUT.json PART1.json PART2.json # one result from part runs
"""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import fmt_ms, microarchitecture, shape_str  # noqa: E402
import isa_cap  # noqa: E402

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
    lines = [f"### (B, T, I, H) = {shape_str(B, T, I, H)}"
             + (f", median of {shape['reps']} reps" if "reps" in shape else ""), ""]
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


def sweep_series(res):
    """The batch-sweep series of a result, as a list (schema 2: res["sweep"] is already a list of series
    with "modes"; schema 1 files have one dict, fwd+bwd only, or None)."""
    sw = res.get("sweep")
    if not sw:
        return []
    if isinstance(sw, dict):
        sw = [dict(sw, id="main", modes=[sw.get("mode", "fwdbwd")], linestyle="-")]
    return [s for s in sw if s.get("points")]


def _series_title(sw):
    return f"T = {sw['T']}, I = {sw['I']}, H = {sw['H']}" if sw["I"] != sw["H"] else \
        f"T = {sw['T']}, I = H = {sw['H']}"


SUMMARY_PEERS = ("torch", "keras")


def sweep_summary(sw):
    """Per mode: is resetlstm (no resets) faster than every peer (torch, keras) at every B of the series?

    Returns {mode: {"all_faster": bool, "peers": [...], "not_faster": [{"B": B, "slower_than": [...]}],
    "not_compared": [B, ...], "peers_unavailable": [...]}}. A peer that is unavailable at every point
    (torch not installed) is left out and listed; a point where a timing is missing is "not compared" and
    makes all_faster False.
    """
    out = {}
    for mode in sw.get("modes", ["fwdbwd"]):
        unavailable = [p for p in SUMMARY_PEERS if p in sw["variants"] and all(
            str((pt["results"].get(p) or {}).get("status", "")).startswith("unavailable") for pt in sw["points"])]
        peers = [p for p in SUMMARY_PEERS if p in sw["variants"] and p not in unavailable]
        not_faster, not_compared = [], []
        for pt in sw["points"]:
            base = _median(pt["results"].get("resetlstm"), mode)
            peer_ms = {p: _median(pt["results"].get(p), mode) for p in peers}
            if base is None or any(v is None for v in peer_ms.values()):
                not_compared.append(pt["B"])
                continue
            slower = [p for p, v in peer_ms.items() if not v > base]
            if slower:
                not_faster.append({"B": pt["B"], "slower_than": slower})
        out[mode] = {"all_faster": bool(peers) and not not_faster and not not_compared, "peers": peers,
                     "not_faster": not_faster, "not_compared": not_compared, "peers_unavailable": unavailable}
    return out


def _summary_line(mode_label, s):
    peers = " and ".join(s["peers"]) or "(no peer)"
    line = f"- {mode_label}: resetlstm faster than {peers} at every B: **{'yes' if s['all_faster'] else 'no'}**"
    if s["not_faster"]:
        line += " (not at B = " + ", ".join(f"{x['B']} (vs {', '.join(x['slower_than'])})"
                                            for x in s["not_faster"]) + ")"
    if s["not_compared"]:
        line += "; not compared at B = " + ", ".join(str(b) for b in s["not_compared"]) + " (a timing missing)"
    if s["peers_unavailable"]:
        line += f"; {', '.join(s['peers_unavailable'])} not run"
    return line


def sweep_table(res):
    lines = []
    for sw in sweep_series(res):
        names = [n for n in res["variant_order"] if n in sw["variants"]]
        modes = [(m, lab) for m, lab in MODES if m in sw.get("modes", ["fwdbwd"])]
        for mode, mlabel in modes:
            lines += [f"### Batch sweep: {_series_title(sw)}, {mlabel}, median of {sw['reps']} reps", "",
                      "Throughput in tokens/s (B·T / median time); in parentheses the speedup of resetlstm.", "",
                      "| B | " + " | ".join(res["variants"][n]["label"] for n in names) + " | matmul limit |",
                      "|---:|" + "---:|" * (len(names) + 1)]
            for p in sw["points"]:
                cells = [str(p["B"])]
                for n in names:
                    e = p["results"].get(n)
                    ms = _median(e, mode)
                    if ms is None:
                        cells.append(_status_note(e) or "–")
                        continue
                    tok = p["B"] * p["T"] / (ms / 1e3)
                    sp = (e.get("speedup") or {}).get(mode)
                    cells.append(f"{tok / 1e3:.1f} k" + (f" ({sp:.2f}×)" if sp is not None else ""))
                lim = p.get("limit_ms", {}).get(mode)
                cells.append(f"{p['B'] * p['T'] / (lim / 1e3) / 1e3:.1f} k" if lim else "–")
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
        summ = sweep_summary(sw)
        lines += [f"Summary, {_series_title(sw)}:", ""]
        lines += [_summary_line(mlabel, summ[m]) for m, mlabel in modes]
        lines.append("")
    return lines


def bf16_table(res, sh):
    variants = res.get("bf16_variants", {})
    B, T, I, H = (sh[k] for k in "BTIH")
    lines = [f"### bfloat16: (B, T, I, H) = {shape_str(B, T, I, H)}, median of "
             f"{sh.get('reps', res['settings']['reps'])} reps", "",
             "vs resetlstm fp32 = resetlstm float32's median time / the variant's (throughput relative to "
             "resetlstm float32, >1: faster); bf16 speedup = the same implementation's float32 time / its "
             "bfloat16 time.", "",
             "| variant | output dtype | fwd ms | fwd+bwd ms | vs resetlstm fp32 fwd | vs resetlstm fp32 fwd+bwd "
             "| bf16 speedup fwd | bf16 speedup fwd+bwd |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, meta in variants.items():
        e = sh["results"].get(name)
        if e is None:
            continue
        note = _status_note(e)
        dt = e.get("output_dtype") or ("bfloat16" if name.endswith("bf16") else "float32")
        cells = [meta["label"] + (f" ({note})" if note else ""), dt]
        cells += [fmt_ms(_median(e, m)) for m, _ in MODES]
        cells += [_fmt_ratio((e.get("vs_resetlstm_fp32") or {}).get(m)) for m, _ in MODES]
        cells += [_fmt_ratio((e.get("bf16_speedup") or {}).get(m)) if meta.get("fp32") else "" for m, _ in MODES]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for peer, sp in (sh.get("resetlstm_bf16_speedup_over") or {}).items():
        lab = variants.get(peer, {}).get("label", peer)
        lines.append(f"- resetlstm bfloat16 speedup over {lab}: " +
                     ", ".join(f"{ml} {_fmt_ratio(sp.get(m))}" for m, ml in MODES))
    checks = sh.get("checks", [])
    if checks:
        lines.append("- checks (outside the timing): " + "; ".join(
            f"{c['what']}: {c['err']:.1e} (tol {c['tol']:g}, "
            f"{'informational, ' if c.get('informational') else ''}{'ok' if c['ok'] else 'FAILED'})"
            for c in checks))
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
    if res.get("isa_cap"):
        out += [isa_cap.describe(res["isa_cap"]), ""]
    out += [
        f"- machine: {cpu.get('model')}"
        + (f" ({cpu.get('vendor')} family {cpu.get('family')} model {cpu.get('model_number')}"
           + (f", {microarchitecture(cpu)}" if microarchitecture(cpu) else "") + ")"
           if cpu.get("family") else "")
        + f", flags {', '.join(cpu.get('flags_simd', []))}; "
        f"{m['cores_available']} cores available, {m.get('mem_total_gib')} GiB; host {m['hostname']}",
        f"- threads: TF intra-op {s['threads']}, torch.set_num_threads({s['threads']}); float32"
        + (" (bfloat16 in its own section)" if res.get("bf16") else "") + "; no GPU",
        f"- versions: TensorFlow {v.get('tensorflow')}, Keras {v.get('keras')}, torch {v.get('torch') or 'not installed'}"
        f", numpy {v.get('numpy')}, resetlstm {v.get('resetlstm')}",
        f"- resetlstm.build_info(): `{json.dumps(res.get('resetlstm_build_info'))}`",
        f"- timing: median of {s['reps']} reps x {s.get('burst', 1)} back-to-back calls after {s['warmup']}"
        f" warm-up calls (the first one traces); variants interleaved rep by rep in one process (torch: in a"
        f" subprocess right after the TF variants of the same shape, timed the same way); load average at"
        f" start {m.get('loadavg_at_start')}, at end {res.get('loadavg_at_end')}",
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
    if res.get("bf16"):
        out += ["## bfloat16", "",
                f"Each implementation in float32 and in bfloat16, interleaved rep by rep as in the main table"
                f" (torch: float32 and autocast bfloat16 interleaved in one subprocess). resetlstm.build_info()"
                f" as above. Check: resetlstm bfloat16's forward against resetlstm float32's, max abs"
                f" difference ≤ {res['settings'].get('bf16_tol', 3e-2):g} (all rows); keras' and torch's"
                f" bfloat16-vs-float32 differences are recorded for comparison only.", ""]
        for sh in res["bf16"]:
            out += bf16_table(res, sh)
        for name, meta in res.get("bf16_variants", {}).items():
            out.append(f"- **{meta['label']}**: {meta['description']}")
        out.append("")
    out += ["### What 'saved for backward' means per variant", ""]
    for name in res["variant_order"]:
        meta = res["variants"][name]
        out.append(f"- **{meta['label']}**: {meta['description']} — saved: {meta['saved_method']}")
    out.append("")
    checks = [c for sh in res["shapes"] + (res.get("bf16") or []) for c in sh.get("checks", [])
              if not c.get("informational")]
    if checks:
        bad = [c for c in checks if not c["ok"]]
        out.append(f"Correctness checks (once per shape, outside the timing; informational ones not counted): "
                   f"{len(checks) - len(bad)}/"
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
    """Throughput (tokens/s) vs batch size: one subplot per mode (fwd, fwd+bwd); colour = variant, line
    style = sweep series (solid T=50 I=H=256, dashed I=H=128); gray = the matmul limit of each series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    series = sweep_series(res)
    modes = [(m, lab) for m, lab in MODES if any(m in sw.get("modes", ["fwdbwd"]) for sw in series)] \
        or [("fwdbwd", "fwd+bwd")]
    ncol = 4 if len(modes) > 1 else 2
    fig, axes = plt.subplots(1, len(modes), figsize=(6.2 * len(modes) if len(modes) > 1 else 8, 5.4),
                             squeeze=False)
    styles = ["-", "--", ":", "-."]
    used_variants = []
    for ax, (mode, mlabel) in zip(axes[0], modes):
        for si, sw in enumerate(series):
            if mode not in sw.get("modes", ["fwdbwd"]):
                continue
            ls = sw.get("linestyle") or styles[si % len(styles)]
            for n in [n for n in res["variant_order"] if n in sw["variants"]]:
                xs, ys = [], []
                for p in sw["points"]:
                    ms = _median(p["results"].get(n), mode)
                    if ms is not None:
                        xs.append(p["B"])
                        ys.append(p["B"] * p["T"] / (ms / 1e3))
                if xs:
                    ax.plot(xs, ys, marker="o", ms=4, ls=ls, color=res["variants"][n].get("color"))
                    if n not in used_variants:
                        used_variants.append(n)
            pts = [p for p in sw["points"] if (p.get("limit_ms") or {}).get(mode)]
            if pts:
                ax.plot([p["B"] for p in pts], [p["B"] * p["T"] / (p["limit_ms"][mode] / 1e3) for p in pts],
                        ls=ls, color="gray", lw=1.2)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        bs = sorted({p["B"] for sw in series for p in sw["points"]})
        if bs:
            ax.set_xticks(bs)
            ax.set_xticklabels([str(b) for b in bs], fontsize=8)
            ax.minorticks_off()
            ax.set_yscale("log")
        ax.set_title(mlabel, fontsize=10)
        ax.set_xlabel("batch size B")
        ax.set_ylabel(f"tokens/s  (B·T / time of {mlabel}), log scale")
        ax.grid(True, which="both", alpha=0.3)
    handles = [Line2D([], [], color=res["variants"][n].get("color"), marker="o", ms=4,
                      label=res["variants"][n]["label"]) for n in res["variant_order"] if n in used_variants]
    if series:
        handles.append(Line2D([], [], color="gray", label=f"matmul limit ({res['settings']['matmul_n']}³ "
                                                          "tf.matmul GFLOP/s)"))
    for si, sw in enumerate(series):
        handles.append(Line2D([], [], color="black", ls=sw.get("linestyle") or styles[si % len(styles)],
                              label=_series_title(sw)))
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(ncol, len(handles)), fontsize=8, frameon=False)
    fig.suptitle(f"LSTM throughput vs batch size, float32, {res['settings']['threads']} threads — "
                 f"{res['machine']['cpu'].get('model')}" + ("  [--quick: meaningless]" if res.get("quick") else "")
                 + (f"  [capped to {res['isa_cap']['isa'].upper()}]" if res.get("isa_cap") else ""),
                 fontsize=10)
    rows = -(-len(handles) // ncol) if handles else 0
    fig.tight_layout(rect=(0, 0.035 * rows + 0.01, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def merge(parts):
    """One result from the JSONs of several runs of the same build on the same machine, each an
    exclusive run of one part (`--shapes ... --sweep-batches '' ...`): main-table shapes, sweep
    series and bfloat16 shapes are taken from whichever part ran them (a later part's entry
    replaces an earlier one's), settings and versions from the first; notes list every part."""
    res = json.loads(json.dumps(parts[0]))
    res["shapes"], res["sweep"], res["bf16"] = [], [], []
    for part in parts:
        same_cpu = all(part["machine"]["cpu"].get(k) == parts[0]["machine"]["cpu"].get(k)
                       for k in ("vendor", "family", "model_number", "model", "flags_simd"))
        if (part.get("isa_cap") or {}).get("isa") != (parts[0].get("isa_cap") or {}).get("isa") or not same_cpu:
            raise ValueError(f"{part['name']}: another machine or ISA cap than {parts[0]['name']}")
        for key in ("shapes", "bf16"):
            for sh in part[key]:
                sh.setdefault("reps", part["settings"]["reps"])  # parts may differ in --reps
                res[key] = [x for x in res[key] if [x[k] for k in "BTIH"] != [sh[k] for k in "BTIH"]]
                res[key].append(sh)
        for sw in part["sweep"]:
            res["sweep"] = [x for x in res["sweep"] if x["id"] != sw["id"]] + [sw]
    res["total_s"] = sum(p.get("total_s", 0) for p in parts)
    res["command"] = " + ".join(p["command"] for p in parts)
    merged = (f"merged from {len(parts)} exclusive runs, one part each (started "
              + ", ".join(p["started"] for p in parts) + ")")
    res["notes"] = list(dict.fromkeys([merged] + [n for p in parts for n in p.get("notes", [])]))
    return res


def main():
    """report.py RESULT.json: re-renders RESULT.md and .png. report.py --merge OUT.json A.json B.json ...:
    merges part runs into OUT.json and renders it."""
    if sys.argv[1] == "--merge":
        path = sys.argv[2]
        res = merge([json.load(open(p)) for p in sys.argv[3:]])
        res["name"] = os.path.splitext(os.path.basename(path))[0]
        with open(path, "w") as f:
            json.dump(res, f, indent=1, default=str)
    else:
        path = sys.argv[1]
        res = json.load(open(path))
    base = os.path.splitext(path)[0]
    open(base + ".md", "w").write(markdown(res))
    plot(res, base + ".png")
    print(f"wrote {base}.md {base}.png")


if __name__ == "__main__":
    main()
