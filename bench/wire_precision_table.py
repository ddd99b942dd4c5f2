#!/usr/bin/python3
"""The markdown table of bench/wire-precision.sh: per input and wire pair, the latent and standard models' bytes per
token per MoE layer on the Orleans sockets (dispatch = requests, combine = responses), the cluster's relative error
against the in-process fp32 forward, the numpy model's error for the same quantization, and their ratio."""
import json
import sys


def main(run_path, numpy_path):
    run = json.load(open(run_path))
    numpy = {(r["model"], r["input"], r["wire"]): r for r in map(json.loads, open(numpy_path))}
    rows = [r for r in run["results"] if r["request"] != "stack"]
    by = {(r["model"], r["input"], r["wire"]): r for r in rows}
    std_bf16 = {k[1]: r for k, r in by.items() if k[0] == "standard" and k[2] == "bf16/bf16"}
    lat_bf16 = {k[1]: r for k, r in by.items() if k[0] == "latent" and k[2] == "bf16/bf16"}
    print("| input | wire (dispatch/combine) | latent B/token (dispatch + combine) | latent dispatch ÷ bf16 dispatch "
          "| latent error | numpy | ratio | standard B/token | standard error | numpy | ratio | standard bf16 ÷ latent |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    worst = 0.0
    for (model, kind, wire), lat in sorted(by.items(), key=lambda kv: (kv[0][1], list(by).index(kv[0]))):
        if model != "latent":
            continue
        std = by.get(("standard", kind, wire))
        b = lat["bytes_per_token_per_layer"]
        cells = [kind, wire, "%s (%s + %s)" % (f"{b['socket_measured']:,.0f}", f"{b['socket_dispatch_measured']:,.0f}", f"{b['socket_combine_measured']:,.0f}"),
                 "%.3f" % (b["socket_dispatch_measured"] / lat_bf16[kind]["bytes_per_token_per_layer"]["socket_dispatch_measured"])]
        for r, m in ((lat, "latent"), (std, "standard")):
            if r is None:
                cells += ["-"] * (4 if m == "standard" else 3)
                continue
            if m == "standard":
                cells.append(f"{r['bytes_per_token_per_layer']['socket_measured']:,.0f}")
            err = r["relative_error_vs_in_process"]
            n = numpy.get((m, kind, wire))
            cells.append("%.2e" % err)
            if n is None:
                cells += ["-", "-"]
            elif n["relative_error"] == 0:
                cells += ["0", "exact"]
            else:
                ratio = err / n["relative_error"]
                worst = max(worst, abs(ratio - 1))
                cells += ["%.2e" % n["relative_error"], "%.4f" % ratio]
        cells.append("%.2f" % (std_bf16[kind]["bytes_per_token_per_layer"]["socket_measured"] / b["socket_measured"]))
        print("| " + " | ".join(cells) + " |")
    print()
    print("largest |cluster error / numpy error - 1|: %.4f" % worst)


if __name__ == "__main__":
    main(*sys.argv[1:3])
