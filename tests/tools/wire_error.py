#!/usr/bin/python3
"""Independent numpy model of one MoE layer request whose routed rows and partial sums cross a quantizing wire.

Pure Python 3 + numpy (run with /usr/bin/python3).  It reuses only the other independent tools of tests/tools
(independent_moe.py: routing, relu2, safetensors, BF16; mx_reference.py: the block-scaled wire types written from
docs/MICROSCALING.md) and shares no code or numerics with the C# engine: everything is float64 from the stored
(BF16-decoded) weights, except the wire itself.  Emulated data flow of MoeModel.ForwardLayer on the cluster (the
mixer of one MoE layer: no RMSNorm, no residual), for x [T, d]:
  1. router, unquantized: logits = W_g x, top-K and weights (routed_scaling_factor included) as independent_moe.route;
     z = W_down x (latent, width l) or z = x (standard, width d).
  2. shards: S contiguous expert ranges, the first N mod S one expert larger.  Per shard ONE message: the rows z[t] of
     every token with at least one expert in the shard, in token order, each once, with that token's (expert, weight)
     pairs of the shard; the [rows, width] matrix goes through the DISPATCH wire as one block (NVFP4: one fp32 scale
     for the whole message; MX: one scale per 32 elements of a row).
  3. shard: p[r] = sum over the row's pairs of w * W2_e relu(W1_e zq[r])^2 on the decoded rows zq; the [rows, width]
     partials go through the COMBINE wire as one block.
  4. router: u[t] = sum over the shards t touched of the decoded partials; y = W_up u (latent) + S2 relu(S1 x)^2,
     the shared expert on the unquantized x.
Wires: fp32 = identity; otherwise float64 -> float32 (what the cluster holds) -> bf16 (round to nearest even, as
independent_moe.f32_to_bf16_bits) / fp16 (IEEE binary16, numpy astype) / mx_reference.encode + decode.

    wire_error.py --model DIR --input IN.safetensors --layer N --shards S --wire-dispatch X --wire-combine Y
                  [--cluster-output OUT.safetensors]
prints one JSON line (relative_error = |y_q - y_exact| / |y_exact|, y_exact with no wire; message and byte counts;
cluster_* when --cluster-output is given).   wire_error.py selftest   runs checks that can fail.
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import independent_moe as im  # noqa: E402
import mx_reference as mx  # noqa: E402

ALIASES = {"f32": "fp32", "f16": "fp16", "mxfp8": "mxfp8-e4m3", "mxfp6": "mxfp6-e2m3", "mxfp4-e2m1": "mxfp4"}
WIRES = ["fp32", "bf16", "fp16"] + list(mx.FORMATS)


class WireError(ValueError):
    """A value the cluster would refuse to send (ForwardOverflowException there), or a bad argument."""


def wire_name(text):
    name = ALIASES.get(text.strip().lower(), text.strip().lower())
    if name not in WIRES:
        raise WireError("wire %r is not one of %s" % (text, ", ".join(WIRES)))
    return name


def payload_bytes(wire, rows, width):
    if wire in mx.FORMATS:
        return mx.message_bytes(wire, rows, width)
    return rows * width * (4 if wire == "fp32" else 2)


def cross(values, wire):
    """One ActivationBlock [rows, width] through the wire: (decoded float64 values, payload bytes)."""
    rows, width = values.shape
    nbytes = payload_bytes(wire, rows, width)
    if wire == "fp32":
        return values, nbytes
    v32 = values.astype(np.float32)
    if wire == "bf16":
        out = im.bf16_bits_to_f32(im.f32_to_bf16_bits(v32)).astype(np.float64)
    elif wire == "fp16":
        with np.errstate(over="ignore"):
            out = v32.astype(np.float16).astype(np.float64)
    else:
        enc = mx.encode(v32, wire)
        if len(enc) != nbytes:
            raise AssertionError("%s message of %d x %d: %d bytes, expected %d" % (wire, rows, width, len(enc), nbytes))
        out = mx.decode(enc, rows, width, wire).astype(np.float64)
    if not np.all(np.isfinite(out)):
        raise WireError("values up to %.3g do not fit the %s wire (the cluster refuses them)" % (np.max(np.abs(values)), wire))
    return out, nbytes


def shard_ranges(n, shards):
    """[first, end) of each shard, as the cluster's routing table: contiguous, the first n mod S one larger."""
    if not 1 <= shards <= n:
        raise WireError("shards must be 1..%d" % n)
    sizes = [n // shards + (1 if s < n % shards else 0) for s in range(shards)]
    ends = np.cumsum(sizes)
    return [(int(e - c), int(e)) for c, e in zip(sizes, ends)]


def plan(x, P, rc, shards):
    """Routing and the shard messages: [(tokens [rows], {expert: (row indices, weights)})] for each non-empty shard."""
    n = len(P["up"])
    ranges = shard_ranges(n, shards)
    choices = [im.route(P["gate"] @ xt, P["bias"], rc)[:2] for xt in x]
    messages = []
    for first, end in ranges:
        tokens, by_expert = [], {}
        for t, (chosen, w) in enumerate(choices):
            mine = [(e, wi) for e, wi in zip(chosen, w) if first <= e < end]
            if not mine:
                continue
            for e, wi in mine:
                by_expert.setdefault(e, ([], []))
                by_expert[e][0].append(len(tokens))
                by_expert[e][1].append(wi)
            tokens.append(t)
        if tokens:
            messages.append((np.array(tokens), {e: (np.array(r), np.array(w)) for e, (r, w) in by_expert.items()}))
    return choices, messages


def forward(x, P, messages, dispatch="fp32", combine="fp32", shared=None):
    """y [T, d] of the layer with the given wire pair, and (dispatch bytes, combine bytes, routed rows).
    shared: S2 relu(S1 x)^2 when already computed (it does not depend on the wire)."""
    z = x @ P["fc1"].T if P.get("fc1") is not None else x
    u = np.zeros_like(z)
    dbytes = cbytes = rows_sent = 0
    for tokens, by_expert in messages:
        zq, nb = cross(z[tokens], dispatch)
        dbytes += nb
        rows_sent += len(tokens)
        partials = np.zeros_like(zq)
        for e in sorted(by_expert):
            idx, w = by_expert[e]
            h = im.relu2(zq[idx] @ P["up"][e].T)
            partials[idx] += w[:, None] * (h @ P["down"][e].T)
        pq, nb = cross(partials, combine)
        cbytes += nb
        u[tokens] += pq
    y = u @ P["fc2"].T if P.get("fc2") is not None else u
    if shared is None:
        shared = im.relu2(x @ P["sh_up"].T) @ P["sh_down"].T
    return y + shared, (dbytes, cbytes, rows_sent)


def rel(a, b, ref):
    return float(np.linalg.norm(a - b) / np.linalg.norm(ref))


def evaluate(x, P, rc, shards, dispatch, combine, cluster=None, full=False):
    """The JSON result (and, when full, y_q too) of one wire pair on one input."""
    dispatch, combine = wire_name(dispatch), wire_name(combine)
    _, messages = plan(x, P, rc, shards)
    shared = im.relu2(x @ P["sh_up"].T) @ P["sh_down"].T
    y_exact, _ = forward(x, P, messages, shared=shared)
    y_q, (db, cb, rows) = forward(x, P, messages, dispatch, combine, shared)
    out = {"wire": "%s/%s" % (dispatch, combine), "tokens": int(x.shape[0]), "relative_error": rel(y_q, y_exact, y_exact),
           "messages": len(messages), "routed_rows": rows, "dispatch_payload_bytes": db, "combine_payload_bytes": cb}
    if cluster is not None:
        if cluster.shape != y_exact.shape:
            raise WireError("cluster output is %s, expected %s" % (list(cluster.shape), list(y_exact.shape)))
        out["cluster_relative_error"] = rel(cluster, y_exact, y_exact)
        out["cluster_vs_emulation"] = rel(cluster, y_q, y_exact)
    return (out, y_q) if full else out


def evaluate_many(x, P, rc, shards, pairs, clusters):
    """One JSON result per (dispatch, combine) pair, the exact forward and the grouping computed once."""
    _, messages = plan(x, P, rc, shards)
    shared = im.relu2(x @ P["sh_up"].T) @ P["sh_down"].T
    y_exact, _ = forward(x, P, messages, shared=shared)
    results = []
    for (dispatch, combine), cluster in zip(pairs, clusters):
        dispatch, combine = wire_name(dispatch), wire_name(combine)
        y_q, (db, cb, rows) = forward(x, P, messages, dispatch, combine, shared)
        out = {"wire": "%s/%s" % (dispatch, combine), "tokens": int(x.shape[0]), "relative_error": rel(y_q, y_exact, y_exact),
               "messages": len(messages), "routed_rows": rows, "dispatch_payload_bytes": db, "combine_payload_bytes": cb}
        if cluster is not None:
            out["cluster_relative_error"] = rel(cluster, y_exact, y_exact)
            out["cluster_vs_emulation"] = rel(cluster, y_q, y_exact)
        results.append(out)
    return results


def load_layer(mdir, layer):
    """config and the tensors of one layer only (a large checkpoint is not read whole); BF16 as exact float32."""
    with open(os.path.join(mdir, "config.json")) as f:
        cfg = json.load(f)
    pattern = cfg.get("hybrid_override_pattern", "")
    if not (0 <= layer < len(pattern) and pattern[layer] == "E"):
        raise WireError("layer %d is not an MoE layer (pattern %r)" % (layer, pattern))
    if cfg.get("mlp_hidden_act", "relu2") != "relu2":
        raise WireError("only relu2 experts are modelled")
    prefix = "backbone.layers.%d." % layer
    idx = os.path.join(mdir, "model.safetensors.index.json")
    if os.path.exists(idx):
        with open(idx) as f:
            files = sorted({fn for k, fn in json.load(f)["weight_map"].items() if k.startswith(prefix)})
    else:
        files = ["model.safetensors"]
    tensors = {}
    for fn in files:
        with open(os.path.join(mdir, fn), "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n).decode("utf-8"))
            for name, info in header.items():
                if name == "__metadata__" or not name.startswith(prefix):
                    continue
                st, size = im.DTYPE_INFO[info["dtype"]]
                shape = tuple(int(s) for s in info["shape"])
                b, e = info["data_offsets"]
                count = int(np.prod(shape, dtype=np.int64))
                if e - b != count * size:
                    raise WireError("bad data_offsets for " + name)
                f.seek(8 + n + b)
                stored = np.frombuffer(f.read(e - b), dtype=st, count=count).reshape(shape)
                # BF16 stays float32 (exact; numpy widens it to float64 in each product): half the memory
                tensors[name] = im.bf16_bits_to_f32(stored) if info["dtype"] == "BF16" else im.decode(stored, info["dtype"])
    return cfg, im.params_from_tensors(cfg, tensors, layer)


def read_hidden(path):
    t, _ = im.read_safetensors(path)
    if "hidden_states" not in t or t["hidden_states"].ndim != 2:
        raise WireError("%s has no 2-D hidden_states" % path)
    return t["hidden_states"]


# --- self test ---

def random_layer(rng, d=64, l=48, n=8, k=2, m=32, ms=48, rsf=2.5):
    """cfg, tensors W (float32, as written) and P (BF16-decoded float64) of one random LatentMoE layer (l None: standard)."""
    inner = l or d
    W = {"norm": np.ones(d, np.float32), "gate": im.uniform_std(rng, (n, d), d).astype(np.float32),
         "bias": rng.uniform(-0.05, 0.05, n).astype(np.float32),
         "up": [im.uniform_std(rng, (m, inner), inner).astype(np.float32) for _ in range(n)],
         "down": [im.uniform_std(rng, (inner, m), m).astype(np.float32) for _ in range(n)],
         "sh_up": im.uniform_std(rng, (ms, d), d).astype(np.float32), "sh_down": im.uniform_std(rng, (d, ms), ms).astype(np.float32)}
    if l:
        W["fc1"] = im.uniform_std(rng, (l, d), d).astype(np.float32)
        W["fc2"] = im.uniform_std(rng, (d, l), l).astype(np.float32)
    cfg = {"hidden_size": d, "moe_latent_size": l, "n_routed_experts": n, "num_experts_per_tok": k,
           "moe_intermediate_size": m, "moe_shared_expert_intermediate_size": ms, "n_group": 1, "topk_group": 1,
           "norm_topk_prob": True, "routed_scaling_factor": rsf, "mlp_hidden_act": "relu2",
           "layer_norm_epsilon": 1e-5, "num_hidden_layers": 2, "hybrid_override_pattern": "ME"}
    items = im.build_tensor_list(cfg, {1: W}, [1], l is not None)
    return cfg, items, im.params_from_tensors(cfg, im.quantized_tensors(items), 1)


def _check(cond, what):
    if not cond:
        raise AssertionError("selftest failed: " + what)


def selftest():
    rng = np.random.default_rng(20240611)
    # wire helpers: names, bytes, rounding of known values
    _check(wire_name(" MXFP8 ") == "mxfp8-e4m3" and wire_name("f16") == "fp16" and wire_name("mxfp4-e2m1") == "mxfp4", "aliases")
    _check(payload_bytes("bf16", 3, 10) == 60 and payload_bytes("fp32", 3, 10) == 120 and payload_bytes("mxfp4", 2, 1024) == 1088, "bytes")
    _check(payload_bytes("nvfp4", 3, 1024) == 4 + 3 * 576, "nvfp4 bytes: one fp32 scale per message")
    v = np.array([[1.00390625, 1.01171875, 1 + 2.0 ** -11, 70000.0 / 2]])
    _check(cross(v, "bf16")[0].tolist() == [[1.0, 1.015625, 1.0, 35072.0]], "bf16 ties to even")
    _check(cross(v, "fp16")[0].tolist() == [[1.00390625, 1.01171875, 1.0, 35008.0]], "fp16 rounding")
    try:
        cross(np.array([[70000.0]]), "fp16")
        _check(False, "fp16 overflow refused")
    except WireError:
        pass
    # grouping: one message per touched shard, each token once per shard, shard sizes as the cluster's table
    _check(shard_ranges(10, 4) == [(0, 3), (3, 6), (6, 8), (8, 10)], "shard ranges with a remainder")
    cfg, items, P = random_layer(rng)
    rc = im.route_cfg(cfg)
    x = im.quantize(rng.standard_normal((24, 64)).astype(np.float32), "F32")
    for S in (1, 2, 3, 4, 8):
        choices, messages = plan(x, P, rc, S)
        bounds = np.array([e for _, e in shard_ranges(8, S)])
        touched = [len({int(np.searchsorted(bounds, e, side="right")) for e in ch}) for ch, _ in choices]
        r = evaluate(x, P, rc, S, "bf16", "mxfp8")
        _check(r["routed_rows"] == sum(touched), "routed rows = sum of distinct shards touched (S=%d)" % S)
        _check(r["messages"] == len({int(np.searchsorted(bounds, e, side="right")) for ch, _ in choices for e in ch}), "messages")
        _check(r["dispatch_payload_bytes"] == 2 * 48 * r["routed_rows"], "bf16 dispatch bytes")
        _check(r["combine_payload_bytes"] == r["routed_rows"] * mx.row_bytes("mxfp8-e4m3", 48), "mxfp8 combine bytes")
        _check(all(len(set(tok.tolist())) == len(tok) and np.all(np.diff(tok) > 0) for tok, _ in messages), "token order")
        # with no wire the grouped forward is the per-token independent mixer
        y, _ = forward(x, P, messages)
        _check(rel(y, im.mixer(x, P, rc), y) < 1e-13, "grouped forward = independent_moe.mixer (S=%d)" % S)
    _check(evaluate(x, P, rc, 8, "fp32", "fp32")["routed_rows"] == 24 * 2, "S = N: K rows per token")
    _check(evaluate(x, P, rc, 1, "fp32", "fp32")["routed_rows"] == 24, "S = 1: one row per token")
    # errors: fp32 exact, bf16 in range, order fp32 < fp16 < bf16 < mxfp8-e4m3 < mxfp4; each direction matters
    errs = {w: evaluate(x, P, rc, 4, w, w)["relative_error"] for w in WIRES}
    _check(errs["fp32"] < 1e-12, "fp32/fp32 error %g" % errs["fp32"])
    _check(1e-4 < errs["bf16"] < 1e-2, "bf16/bf16 error %g" % errs["bf16"])
    order = ["fp32", "fp16", "bf16", "mxfp8-e4m3", "mxfp4"]
    _check(all(errs[a] < errs[b] for a, b in zip(order, order[1:])), "error order %r" % {w: errs[w] for w in order})
    d_only = evaluate(x, P, rc, 4, "mxfp4", "fp32")["relative_error"]
    c_only = evaluate(x, P, rc, 4, "fp32", "mxfp4")["relative_error"]
    _check(0 < d_only < errs["mxfp4"] * 1.5 and 0 < c_only < errs["mxfp4"] * 1.5, "one-direction errors")
    _, _, Ps = random_layer(rng, l=None)
    es = evaluate(x, Ps, rc, 4, "bf16", "bf16")
    _check(1e-4 < es["relative_error"] < 1e-2 and es["dispatch_payload_bytes"] == 2 * 64 * es["routed_rows"], "standard MoE")
    # CLI end to end on files: the layer loader, aliases, and a "cluster output" equal to the emulation
    with tempfile.TemporaryDirectory() as td:
        im.write_model(os.path.join(td, "m"), cfg, items, 2)
        im.write_safetensors(os.path.join(td, "x.safetensors"), [("hidden_states", "F32", x)])
        _, yq = run_cli(os.path.join(td, "m"), os.path.join(td, "x.safetensors"), 1, 3, "mxfp6", "nvfp4")
        im.write_safetensors(os.path.join(td, "y.safetensors"), [("hidden_states", "F64", yq)])
        r, _ = run_cli(os.path.join(td, "m"), os.path.join(td, "x.safetensors"), 1, 3, "mxfp6", "nvfp4",
                             os.path.join(td, "y.safetensors"))
        _check(r["wire"] == "mxfp6-e2m3/nvfp4" and r["cluster_vs_emulation"] == 0.0, "CLI round trip %r" % r)
        _check(r["cluster_relative_error"] == r["relative_error"] == evaluate(x, P, rc, 3, "mxfp6-e2m3", "nvfp4")["relative_error"],
               "CLI = in-memory")
    print("selftest ok: " + json.dumps({w: float("%.3g" % e) for w, e in errs.items()}))


# --- CLI ---

def run_cli(model, inp, layer, shards, dispatch, combine, cluster_path=None):
    """(JSON result, y_q) for one layer request read from files."""
    cfg, P = load_layer(model, layer)
    x = read_hidden(inp)
    if x.shape[1] != cfg["hidden_size"]:
        raise WireError("input is %d wide, the model's d is %d" % (x.shape[1], cfg["hidden_size"]))
    cluster = read_hidden(cluster_path) if cluster_path else None
    return evaluate(x, P, im.route_cfg(cfg), shards, dispatch, combine, cluster, full=True)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["selftest"]:
        selftest()
        return 0
    if argv and argv[0] == "sweep":
        return sweep_cli(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for opt in ("--model", "--input", "--wire-dispatch", "--wire-combine"):
        ap.add_argument(opt, required=True)
    ap.add_argument("--layer", type=int, required=True)
    ap.add_argument("--shards", type=int, required=True)
    ap.add_argument("--cluster-output")
    a = ap.parse_args(argv)
    try:
        started = time.perf_counter()
        out, _ = run_cli(a.model, a.input, a.layer, a.shards, a.wire_dispatch, a.wire_combine, a.cluster_output)
    except (WireError, mx.MxError) as ex:
        print("wire_error: " + str(ex), file=sys.stderr)
        return 2
    print(json.dumps(out))
    print("wire_error: %.1f s" % (time.perf_counter() - started), file=sys.stderr)
    return 0


def sweep_cli(argv):
    """`sweep --model DIR --layer N --shards S --dump DIR --id ID --input-kind KIND --pairs d/c,...`: the files
    `moecluster run --dump` writes (ID-KIND-input.safetensors, ID-KIND-D_C-output.safetensors); one JSON line per pair."""
    ap = argparse.ArgumentParser(prog="wire_error.py sweep")
    for opt in ("--model", "--dump", "--id", "--input-kind", "--pairs"):
        ap.add_argument(opt, required=True)
    ap.add_argument("--layer", type=int, required=True)
    ap.add_argument("--shards", type=int, required=True)
    a = ap.parse_args(argv)
    try:
        cfg, P = load_layer(a.model, a.layer)
        x = read_hidden(os.path.join(a.dump, "%s-%s-input.safetensors" % (a.id, a.input_kind)))
        pairs, clusters = [], []
        for item in a.pairs.split(","):
            d, _, c = item.strip().partition("/")
            d, c = wire_name(d), wire_name(c or d)
            pairs.append((d, c))
            path = os.path.join(a.dump, "%s-%s-%s_%s-output.safetensors" % (a.id, a.input_kind, d, c))
            clusters.append(read_hidden(path) if os.path.exists(path) else None)
        for out in evaluate_many(x, P, im.route_cfg(cfg), a.shards, pairs, clusters):
            out["model"], out["input"] = a.id, a.input_kind
            print(json.dumps(out), flush=True)
    except (WireError, mx.MxError) as ex:
        print("wire_error: " + str(ex), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
