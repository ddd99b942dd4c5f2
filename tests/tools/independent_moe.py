#!/usr/bin/python3
"""Independent reference implementation of the Nemotron-3 (NemotronH) MoE mixer.

Pure Python 3 + numpy (run with /usr/bin/python3).  It writes a random Hugging Face
style checkpoint (config.json + hand-written safetensors), a random input and the
expected outputs computed in float64 from the weights exactly as stored (BF16
decoded), so that the C# `moecluster forward` command can be checked against a
checkpoint it did not write itself.

Math, per token x in R^d (all float64):
    s    = sigmoid(W_g x)              (or softmax over all N when scoring_func == "softmax")
    I    = TopK_K(s + b)               b = e_score_correction_bias, selection only;
                                       group-limited when n_group > 1 (group score = sum of the
                                       group's top-2 values of s+b, keep topk_group groups, pick
                                       the top K experts among the kept groups only).
                                       Ties: larger value first, then lower index.
    w_i  = s_i / (sum_{j in I} s_j + 1e-20) if norm_topk_prob else s_i;  w_i *= routed_scaling_factor
    z    = W_down x                    (latent only; standard: z = x)
    u    = sum_{i in I} w_i W2_i relu(W1_i z)^2
    y    = W_up u + S2 relu(S1 x)^2    (standard: W_up = identity)
Block: out = x + mixer(RMSNorm(x)), RMSNorm(x) = x / sqrt(mean(x^2) + eps) * norm.weight.

Outputs in DIR:
    DIR/model/               config.json + model.safetensors (or shards + index)
    DIR/input.safetensors    "hidden_states" [T, d] in the input dtype
    DIR/expected.safetensors F64: "layer_<N>" = mixer(input) of backbone layer N (no norm, no
                             residual), "stack" = all MoE blocks in order applied to the input.
stdout: one JSON line {"d","latent","experts","top_k","moe_layers","tokens"}
        ("latent" is the latent width l, or null for a standard MoE).
Diagnostics go to stderr.
"""

import argparse
import json
import math
import os
import sys
import tempfile

import numpy as np

# --------------------------------------------------------------------------------------
# BF16 / dtype helpers
# --------------------------------------------------------------------------------------

DTYPE_INFO = {
    # name: (numpy storage dtype, itemsize)
    "F64": (np.dtype("<f8"), 8),
    "F32": (np.dtype("<f4"), 4),
    "F16": (np.dtype("<f2"), 2),
    "BF16": (np.dtype("<u2"), 2),
}


def f32_to_bf16_bits(a):
    """float32 -> bf16 bit patterns (uint16), round-to-nearest-even, NaN stays NaN (quieted)."""
    a = np.ascontiguousarray(np.asarray(a, dtype=np.float32))
    u = a.view(np.uint32).astype(np.uint64)
    lsb = (u >> np.uint64(16)) & np.uint64(1)
    rounded = ((u + np.uint64(0x7FFF) + lsb) >> np.uint64(16)) & np.uint64(0xFFFF)
    nan_bits = ((u >> np.uint64(16)) | np.uint64(0x0040)) & np.uint64(0xFFFF)
    out = np.where(np.isnan(a), nan_bits, rounded)
    return out.astype(np.uint16)


def bf16_bits_to_f32(bits):
    bits = np.ascontiguousarray(np.asarray(bits, dtype=np.uint16))
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def encode(arr, dtype):
    """Return the little-endian storage array for a logical array in the given safetensors dtype."""
    if dtype == "BF16":
        return f32_to_bf16_bits(np.asarray(arr, dtype=np.float32)).astype("<u2")
    st, _ = DTYPE_INFO[dtype]
    return np.ascontiguousarray(np.asarray(arr).astype(st))


def decode(stored, dtype):
    """Storage array -> float64 values."""
    if dtype == "BF16":
        return bf16_bits_to_f32(stored).astype(np.float64)
    return np.asarray(stored).astype(np.float64)


def quantize(arr, dtype):
    """Round a float array to the given dtype and return the decoded float64 values."""
    return decode(encode(arr, dtype), dtype)


# --------------------------------------------------------------------------------------
# safetensors writer / reader (by hand)
# --------------------------------------------------------------------------------------

def write_safetensors(path, items, metadata=None):
    """items: list of (name, dtype, logical array). Returns total tensor byte count."""
    header = {}
    blobs = []
    offset = 0
    for name, dtype, arr in items:
        if dtype not in DTYPE_INFO:
            raise ValueError("unsupported dtype " + dtype)
        stored = encode(arr, dtype)
        raw = stored.tobytes(order="C")
        shape = [int(s) for s in np.shape(arr)]
        assert len(raw) == int(np.prod(shape, dtype=np.int64)) * DTYPE_INFO[dtype][1]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header["__metadata__"] = dict(metadata) if metadata is not None else {"format": "pt"}
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    pad = (-len(hjson)) % 8
    hjson += b" " * pad
    with open(path, "wb") as f:
        f.write(len(hjson).to_bytes(8, "little"))
        f.write(hjson)
        for b in blobs:
            f.write(b)
    return offset


def read_safetensors(path, raw=False):
    """Returns (dict name -> float64 array (or (dtype, storage array) when raw), metadata)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError("file too short")
    n = int.from_bytes(data[:8], "little")
    if 8 + n > len(data):
        raise ValueError("header length beyond end of file")
    header = json.loads(data[8:8 + n].decode("utf-8"))
    base = 8 + n
    out = {}
    meta = header.pop("__metadata__", None)
    for name, info in header.items():
        dtype = info["dtype"]
        if dtype not in DTYPE_INFO:
            raise ValueError("unsupported dtype %s for %s" % (dtype, name))
        st, size = DTYPE_INFO[dtype]
        shape = tuple(int(s) for s in info["shape"])
        b, e = info["data_offsets"]
        count = int(np.prod(shape, dtype=np.int64))
        if e - b != count * size or base + e > len(data) or b < 0:
            raise ValueError("bad data_offsets for " + name)
        stored = np.frombuffer(data, dtype=st, count=count, offset=base + b).reshape(shape)
        out[name] = (dtype, stored.copy()) if raw else decode(stored, dtype)
    return out, meta


def load_model_dir(mdir):
    with open(os.path.join(mdir, "config.json")) as f:
        cfg = json.load(f)
    idx_path = os.path.join(mdir, "model.safetensors.index.json")
    tensors = {}
    if os.path.exists(idx_path):
        with open(idx_path) as f:
            index = json.load(f)
        files = sorted(set(index["weight_map"].values()))
        for fn in files:
            t, _ = read_safetensors(os.path.join(mdir, fn))
            for k, v in t.items():
                if index["weight_map"].get(k) != fn:
                    raise ValueError("tensor %s found in %s but index says %s" % (k, fn, index["weight_map"].get(k)))
                tensors[k] = v
        missing = set(index["weight_map"]) - set(tensors)
        if missing:
            raise ValueError("tensors missing from shards: %s" % sorted(missing))
    else:
        tensors, _ = read_safetensors(os.path.join(mdir, "model.safetensors"))
    return cfg, tensors


# --------------------------------------------------------------------------------------
# Reference math (float64)
# --------------------------------------------------------------------------------------

def sigmoid(v):
    v = np.asarray(v, dtype=np.float64)
    return 1.0 / (1.0 + np.exp(-v))


def softmax(v):
    v = np.asarray(v, dtype=np.float64)
    e = np.exp(v - np.max(v))
    return e / np.sum(e)


def relu2(v):
    r = np.maximum(v, 0.0)
    return r * r


def order_desc(values, candidates):
    """Candidates sorted by value descending, ties broken by lower index."""
    return sorted(candidates, key=lambda i: (-float(values[i]), int(i)))


def select_experts(v, k, n_group=1, topk_group=1):
    """Group-limited top-k on the selection scores v (= s + b).

    Returns (chosen indices in rank order, info) where info has the boundary gaps
    ("group_gap": gap between last kept and first dropped group score, "expert_gap":
    gap between K-th and (K+1)-th candidate), None when there is no boundary."""
    v = [float(t) for t in v]
    n = len(v)
    info = {"group_gap": None, "expert_gap": None, "groups": None}
    if n_group > 1:
        if n % n_group != 0:
            raise ValueError("n_routed_experts not divisible by n_group")
        g = n // n_group
        if g < 2:
            raise ValueError("groups need at least 2 experts")
        gscore = []
        for q in range(n_group):
            top2 = sorted(v[q * g:(q + 1) * g], reverse=True)[:2]
            gscore.append(top2[0] + top2[1])
        gorder = order_desc(gscore, range(n_group))
        kept = gorder[:topk_group]
        if topk_group < n_group:
            info["group_gap"] = gscore[gorder[topk_group - 1]] - gscore[gorder[topk_group]]
        info["groups"] = kept
        cand = [i for q in kept for i in range(q * g, (q + 1) * g)]
    else:
        cand = list(range(n))
    if k > len(cand):
        raise ValueError("top_k larger than the number of candidate experts")
    ordered = order_desc(v, cand)
    if k < len(ordered):
        info["expert_gap"] = v[ordered[k - 1]] - v[ordered[k]]
    return ordered[:k], info


def route(logits, bias, cfg):
    if cfg.get("scoring_func", "sigmoid") == "softmax":
        s = softmax(logits)
    else:
        s = sigmoid(logits)
    choice = s + bias
    chosen, info = select_experts(choice, cfg["top_k"], cfg["n_group"], cfg["topk_group"])
    w = s[chosen].copy()
    if cfg["norm_topk_prob"]:
        w = w / (np.sum(w) + 1e-20)
    w = w * cfg["routed_scaling_factor"]
    return chosen, w, info


def mixer(x, P, cfg, diag=None):
    """x: [T, d] float64 -> y: [T, d].  P: dict of float64 weights."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    T, d = x.shape
    y = np.zeros((T, d), dtype=np.float64)
    for t in range(T):
        xt = x[t]
        logits = P["gate"] @ xt
        chosen, w, info = route(logits, P["bias"], cfg)
        if diag is not None:
            diag.append((chosen, info))
        z = P["fc1"] @ xt if P.get("fc1") is not None else xt
        u = np.zeros_like(z)
        for wi, e in zip(w, chosen):
            h = relu2(P["up"][e] @ z)
            u = u + wi * (P["down"][e] @ h)
        out = P["fc2"] @ u if P.get("fc2") is not None else u
        out = out + P["sh_down"] @ relu2(P["sh_up"] @ xt)
        y[t] = out
    return y


def rmsnorm(x, w, eps):
    x = np.asarray(x, dtype=np.float64)
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def moe_layer_indices(pattern):
    return [i for i, c in enumerate(pattern) if c == "E"]


def params_from_tensors(cfg, tensors, layer):
    pre = "backbone.layers.%d." % layer
    mx = pre + "mixer."
    n = cfg["n_routed_experts"]
    latent = cfg.get("moe_latent_size") is not None
    P = {
        "norm": tensors[pre + "norm.weight"],
        "gate": tensors[mx + "gate.weight"],
        "bias": tensors[mx + "gate.e_score_correction_bias"],
        "fc1": tensors[mx + "fc1_latent_proj.weight"] if latent else None,
        "fc2": tensors[mx + "fc2_latent_proj.weight"] if latent else None,
        "up": [tensors[mx + "experts.%d.up_proj.weight" % e] for e in range(n)],
        "down": [tensors[mx + "experts.%d.down_proj.weight" % e] for e in range(n)],
        "sh_up": tensors[mx + "shared_experts.up_proj.weight"],
        "sh_down": tensors[mx + "shared_experts.down_proj.weight"],
    }
    return P


def route_cfg(cfg):
    return {
        "top_k": int(cfg["num_experts_per_tok"]),
        "n_group": int(cfg.get("n_group", 1) or 1),
        "topk_group": int(cfg.get("topk_group", 1) or 1),
        "norm_topk_prob": bool(cfg.get("norm_topk_prob", True)),
        "routed_scaling_factor": float(cfg.get("routed_scaling_factor", 1.0)),
        "scoring_func": cfg.get("scoring_func", "sigmoid"),
        "eps": float(cfg.get("layer_norm_epsilon", 1e-5)),
    }


def reference(cfg, tensors, x, diags=None):
    """Returns dict name -> float64 [T, d]: layer_<N> and stack.

    diags, when given, is filled with {("layer", N) or ("stack", N): [(chosen, info) per token]}."""
    if cfg.get("mlp_hidden_act", "relu2") != "relu2":
        raise ValueError("only relu2 supported")
    rc = route_cfg(cfg)
    layers = moe_layer_indices(cfg["hybrid_override_pattern"])
    out = {}
    h = np.asarray(x, dtype=np.float64).copy()
    for L in layers:
        P = params_from_tensors(cfg, tensors, L)
        d1 = [] if diags is not None else None
        out["layer_%d" % L] = mixer(x, P, rc, d1)
        d2 = [] if diags is not None else None
        h = h + mixer(rmsnorm(h, P["norm"], rc["eps"]), P, rc, d2)
        if diags is not None:
            diags[("layer", L)] = d1
            diags[("stack", L)] = d2
    out["stack"] = h
    return out


# --------------------------------------------------------------------------------------
# Random generation
# --------------------------------------------------------------------------------------

def uniform_std(rng, shape, fan_in):
    a = math.sqrt(3.0) / math.sqrt(fan_in)
    return rng.uniform(-a, a, size=shape)


def make_pattern(rng, n_moe):
    others = "M*-"
    s = "".join(rng.choice(list(others)) for _ in range(int(rng.integers(1, 3))))
    for i in range(n_moe):
        s += "E"
        s += "".join(rng.choice(list(others)) for _ in range(int(rng.integers(0, 3))))
    return s


def draw_top_k(rng, n, n_group, topk_group):
    g = n // n_group
    kmax = topk_group * g if n_group > 1 else n
    return int(rng.integers(1, kmax + 1))


def apply_ties(rng, layer_w, n, n_group):
    """Make exact ties: duplicate gate rows and bias entries for a random set of pairs
    (2i, 2i+1); with groups sometimes copy a whole group onto another (group-score ties).
    Works on float32 arrays, before BF16 rounding (identical floats round identically)."""
    gate = layer_w["gate"]
    bias = layer_w["bias"]
    gate[:] = layer_w["gate_orig"]
    bias[:] = layer_w["bias_orig"]
    pairs = list(range(n // 2))
    cnt = int(rng.integers(1, len(pairs) + 1))
    chosen = sorted(int(p) for p in rng.choice(pairs, size=cnt, replace=False))
    for p in chosen:
        gate[2 * p + 1] = gate[2 * p]
        bias[2 * p + 1] = bias[2 * p]
    copied = None
    if n_group > 1 and rng.random() < 0.5:
        g = n // n_group
        src, dst = [int(q) for q in rng.choice(n_group, size=2, replace=False)]
        gate[dst * g:(dst + 1) * g] = gate[src * g:(src + 1) * g]
        bias[dst * g:(dst + 1) * g] = bias[src * g:(src + 1) * g]
        copied = (src, dst)
    return {"pairs": [(2 * p, 2 * p + 1) for p in chosen], "group_copy": copied}


def build_tensor_list(cfg, W, layers, latent):
    items = []
    for L in layers:
        w = W[L]
        pre = "backbone.layers.%d." % L
        mx = pre + "mixer."
        items.append((pre + "norm.weight", "BF16", w["norm"]))
        items.append((mx + "gate.weight", "BF16", w["gate"]))
        items.append((mx + "gate.e_score_correction_bias", "F32", w["bias"]))
        if latent:
            items.append((mx + "fc1_latent_proj.weight", "BF16", w["fc1"]))
            items.append((mx + "fc2_latent_proj.weight", "BF16", w["fc2"]))
        for e in range(cfg["n_routed_experts"]):
            items.append((mx + "experts.%d.up_proj.weight" % e, "BF16", w["up"][e]))
            items.append((mx + "experts.%d.down_proj.weight" % e, "BF16", w["down"][e]))
        items.append((mx + "shared_experts.up_proj.weight", "BF16", w["sh_up"]))
        items.append((mx + "shared_experts.down_proj.weight", "BF16", w["sh_down"]))
    return items


def write_model(mdir, cfg, items, shards):
    os.makedirs(mdir, exist_ok=True)
    for fn in os.listdir(mdir):
        if fn == "config.json" or (fn.startswith("model") and (fn.endswith(".safetensors") or fn.endswith(".index.json"))):
            os.remove(os.path.join(mdir, fn))
    with open(os.path.join(mdir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    if shards <= 1:
        write_safetensors(os.path.join(mdir, "model.safetensors"), items)
        return
    if shards > len(items):
        raise ValueError("more shards than tensors")
    bounds = [round(i * len(items) / shards) for i in range(shards + 1)]
    weight_map = {}
    total = 0
    for i in range(shards):
        fn = "model-%05d-of-%05d.safetensors" % (i + 1, shards)
        chunk = items[bounds[i]:bounds[i + 1]]
        total += write_safetensors(os.path.join(mdir, fn), chunk)
        for name, _, _ in chunk:
            weight_map[name] = fn
    with open(os.path.join(mdir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
        f.write("\n")


def quantized_tensors(items):
    return {name: quantize(arr, dtype) for name, dtype, arr in items}


def margins(diags):
    """(min nonzero boundary gap, number of exact expert-boundary ties, number of exact group-boundary ties)."""
    mn = float("inf")
    eties = 0
    gties = 0
    for _, lst in diags.items():
        for _, info in lst:
            for key in ("expert_gap", "group_gap"):
                gap = info[key]
                if gap is None:
                    continue
                if gap == 0.0:
                    if key == "expert_gap":
                        eties += 1
                    else:
                        gties += 1
                else:
                    mn = min(mn, gap)
    return mn, eties, gties


def generate(args, quiet=False):
    rng = np.random.default_rng(args.seed)
    latent = not args.standard
    G = max(1, int(args.groups))
    d = int(rng.integers(24, 97))
    if latent:
        if rng.random() < 0.2:
            l = int(rng.integers(d + 1, d + 17))
        else:
            l = int(rng.integers(8, d + 1))
    else:
        l = None
    if G > 1:
        g = int(rng.integers(2, max(2, 24 // G) + 1))
        n = G * g
        # topk_group in [1, G-1] so that group limiting always drops at least one group
        # (topk_group == G would make it a no-op).
        topk_group = int(rng.integers(1, G))
    else:
        n = int(rng.integers(4, 25))
        topk_group = 1
    if args.ties and n % 2 == 1:
        # pairs (2i, 2i+1) need an even count; keep n divisible by n_group
        n = n + 1 if G == 1 else n + G
    k = draw_top_k(rng, n, G, topk_group)
    m = int(rng.integers(8, 49))
    ms = int(rng.integers(8, 49))
    rsf = float(np.round(rng.uniform(1.0, 5.0) * 64.0) / 64.0)  # exact in f32 and short in JSON
    eps = 1e-5
    T = int(args.tokens)
    pattern = make_pattern(rng, int(args.moe_layers))
    layers = moe_layer_indices(pattern)
    inner = l if latent else d

    W = {}
    for L in layers:
        w = {}
        w["norm"] = (1.0 + 0.1 * rng.uniform(-1.0, 1.0, size=d)).astype(np.float32)
        w["gate_orig"] = uniform_std(rng, (n, d), d).astype(np.float32)
        w["bias_orig"] = rng.uniform(-0.05, 0.05, size=n).astype(np.float32)
        w["gate"] = w["gate_orig"].copy()
        w["bias"] = w["bias_orig"].copy()
        if latent:
            w["fc1"] = uniform_std(rng, (l, d), d).astype(np.float32)
            w["fc2"] = uniform_std(rng, (d, l), l).astype(np.float32)
        w["up"] = [uniform_std(rng, (m, inner), inner).astype(np.float32) for _ in range(n)]
        w["down"] = [uniform_std(rng, (inner, m), m).astype(np.float32) for _ in range(n)]
        w["sh_up"] = uniform_std(rng, (ms, d), d).astype(np.float32)
        w["sh_down"] = uniform_std(rng, (d, ms), ms).astype(np.float32)
        W[L] = w

    def make_cfg(k):
        cfg = {
            "architectures": ["NemotronHForCausalLM"],
            "model_type": "nemotron_h",
            "hidden_size": d,
            "moe_latent_size": l,
            "n_routed_experts": n,
            "num_experts_per_tok": k,
            "moe_intermediate_size": m,
            "moe_shared_expert_intermediate_size": ms,
            "n_shared_experts": 1,
            "n_group": G,
            "topk_group": topk_group,
            "norm_topk_prob": not args.no_norm_topk,
            "routed_scaling_factor": rsf,
            "mlp_hidden_act": "relu2",
            "layer_norm_epsilon": eps,
            "num_hidden_layers": len(pattern),
            "hybrid_override_pattern": pattern,
            "torch_dtype": "bfloat16",
        }
        if args.softmax:
            cfg["scoring_func"] = "softmax"
        return cfg

    # Draw input (and, with --ties, the tie structure and K) until no selection boundary is a
    # near-tie (a float32/bf16 implementation could order those differently), and, with --ties,
    # until at least one token has an exact tie right at the top-K boundary.
    # --min-gap widens that margin where the C# side perturbs the router's input on purpose: a stack run over a bf16
    # wire carries each layer's rounded partial sums into the next layer's gate (about 2^-9 relative), enough to flip
    # a boundary 4e-4 wide (seen: seed 131130874, stack error 1.9e-2 against a 1e-2 tolerance, the same before and
    # after the change that exposed it).
    NEAR = getattr(args, "min_gap", 1e-4)
    tie_info = None
    for attempt in range(1000):
        if args.ties:
            tie_info = {L: apply_ties(rng, W[L], n, G) for L in layers}
            k = draw_top_k(rng, n, G, topk_group)
        cfg = make_cfg(k)
        items = build_tensor_list(cfg, W, layers, latent)
        tensors = quantized_tensors(items)
        x_raw = rng.standard_normal((T, d)).astype(np.float32)
        x = quantize(x_raw, args.input_dtype)
        diags = {}
        expected = reference(cfg, tensors, x, diags)
        mn, eties, gties = margins(diags)
        ok = mn >= NEAR
        if args.ties:
            ok = ok and eties > 0
        if ok:
            break
    else:
        raise RuntimeError("could not draw an input without near-ties / with the requested ties")

    out = args.out
    os.makedirs(out, exist_ok=True)
    mdir = os.path.join(out, "model")
    write_model(mdir, cfg, items, int(args.shards))
    write_safetensors(os.path.join(out, "input.safetensors"), [("hidden_states", args.input_dtype, x_raw)])

    # Recompute from the files as read back (what the C# side will see) and insist it matches.
    cfg2, tensors2 = load_model_dir(mdir)
    inp, _ = read_safetensors(os.path.join(out, "input.safetensors"))
    expected2 = reference(cfg2, tensors2, inp["hidden_states"])
    for key in expected:
        if not np.array_equal(expected[key], expected2[key]):
            raise RuntimeError("read-back mismatch for " + key)
    exp_items = [(key, "F64", expected2[key]) for key in ["layer_%d" % L for L in layers] + ["stack"]]
    write_safetensors(os.path.join(out, "expected.safetensors"), exp_items)

    summary = {"d": d, "latent": l, "experts": n, "top_k": k, "moe_layers": layers, "tokens": T}
    if not quiet:
        print(json.dumps(summary))
        msg = {"attempts": attempt + 1, "min_boundary_gap": (None if mn == float("inf") else mn),
               "exact_expert_boundary_ties": eties, "exact_group_boundary_ties": gties,
               "n_group": G, "topk_group": topk_group, "m": m, "ms": ms,
               "routed_scaling_factor": rsf, "pattern": pattern,
               "max_abs_expected": float(max(np.max(np.abs(v)) for v in expected2.values()))}
        if tie_info is not None:
            msg["ties"] = {str(L): v for L, v in tie_info.items()}
        print("independent_moe: " + json.dumps(msg), file=sys.stderr)
    return summary, cfg2, expected2, diags


# --------------------------------------------------------------------------------------
# Self test
# --------------------------------------------------------------------------------------

def _check(cond, what):
    if not cond:
        raise AssertionError("selftest failed: " + what)


def selftest():
    rng = np.random.default_rng(1234)

    # (a) safetensors round trip
    with tempfile.TemporaryDirectory() as td:
        p = os.path.join(td, "t.safetensors")
        a64 = rng.standard_normal((3, 5))
        a32 = rng.standard_normal(7).astype(np.float32)
        a16 = rng.standard_normal((2, 2, 2)).astype(np.float16)
        abf = rng.standard_normal((4, 3)).astype(np.float32)
        total = write_safetensors(p, [("a.f64", "F64", a64), ("b.f32", "F32", a32),
                                      ("c.f16", "F16", a16), ("d.bf16", "BF16", abf), ("e.x", "F32", np.zeros(1))])
        _check(total == 15 * 8 + 7 * 4 + 8 * 2 + 12 * 2 + 4, "total size")
        with open(p, "rb") as f:
            raw = f.read()
        hl = int.from_bytes(raw[:8], "little")
        _check(hl % 8 == 0, "header padded to 8")
        _check(len(raw) == 8 + hl + total, "file length")
        hdr = json.loads(raw[8:8 + hl].decode("utf-8"))
        _check(hdr["__metadata__"] == {"format": "pt"}, "metadata")
        _check(hdr["d.bf16"]["dtype"] == "BF16" and hdr["d.bf16"]["shape"] == [4, 3], "bf16 header")
        t, meta = read_safetensors(p)
        _check(meta == {"format": "pt"}, "metadata read")
        _check(np.array_equal(t["a.f64"], a64), "F64 round trip")
        _check(np.array_equal(t["b.f32"], a32.astype(np.float64)), "F32 round trip")
        _check(np.array_equal(t["c.f16"], a16.astype(np.float64)), "F16 round trip")
        _check(t["c.f16"].shape == (2, 2, 2), "F16 shape")
        exp_bf = bf16_bits_to_f32(f32_to_bf16_bits(abf)).astype(np.float64)
        _check(np.array_equal(t["d.bf16"], exp_bf), "BF16 round trip")
        _check(np.max(np.abs(exp_bf - abf)) <= np.max(np.abs(abf)) * 2.0 ** -8, "BF16 error bound")
        rawt, _ = read_safetensors(p, raw=True)
        _check(np.array_equal(rawt["d.bf16"][1], f32_to_bf16_bits(abf)), "BF16 raw bits")
        # little-endian raw bytes of a known F32 value
        write_safetensors(p, [("one", "F32", np.array([1.0], dtype=np.float32))])
        with open(p, "rb") as f:
            raw = f.read()
        _check(raw[-4:] == bytes([0x00, 0x00, 0x80, 0x3F]), "F32 little endian bytes")
        write_safetensors(p, [("one", "BF16", np.array([1.0, -2.0], dtype=np.float32))])
        with open(p, "rb") as f:
            raw = f.read()
        _check(raw[-4:] == bytes([0x80, 0x3F, 0x00, 0xC0]), "BF16 little endian bytes")

    # (b) BF16 rounding table
    table = [
        (1.0, 0x3F80), (1.00390625, 0x3F80), (1.01171875, 0x3F82), (1.0078125, 0x3F81),
        (np.float32(1.00390625) + np.float32(2.0 ** -23), 0x3F81), (-2.0, 0xC000), (0.0, 0x0000),
        (-0.0, 0x8000), (float("inf"), 0x7F80), (float("-inf"), 0xFF80), (3.0, 0x4040),
        (np.float32(3.4028234663852886e38), 0x7F80),  # max f32 rounds up to inf
        (0.1, 0x3DCD), (-1.0 / 3.0, 0xBEAB),
    ]
    for val, bits in table:
        got = int(f32_to_bf16_bits(np.array([val], dtype=np.float32))[0])
        _check(got == bits, "bf16(%r) = 0x%04X, expected 0x%04X" % (val, got, bits))
    nan_bits = f32_to_bf16_bits(np.array([np.nan, -np.nan], dtype=np.float32))
    _check(all(np.isnan(bf16_bits_to_f32(nan_bits))), "NaN stays NaN")
    # NaN whose payload lives only in the low 16 bits must stay NaN too
    low_nan = np.array([0x7F800001], dtype=np.uint32).view(np.float32)
    _check(np.isnan(bf16_bits_to_f32(f32_to_bf16_bits(low_nan))[0]), "low-payload NaN stays NaN")
    _check(bf16_bits_to_f32(np.array([0x3F80, 0xC000], dtype=np.uint16)).tolist() == [1.0, -2.0], "bf16 decode")

    # (c) top-k / group-limited selection and tie order
    cases = [
        # (values, k, n_group, topk_group, expected)
        ([0.5, 0.9, 0.9, 0.1], 2, 1, 1, [1, 2]),
        ([0.5, 0.9, 0.9, 0.1], 1, 1, 1, [1]),
        ([0.3, 0.3, 0.3], 2, 1, 1, [0, 1]),
        ([0.1, 0.3, 0.2, 0.3], 3, 1, 1, [1, 3, 2]),
        ([0.75, 0.0, 0.5, 0.5, 0.5, 0.25], 2, 3, 1, [2, 3]),   # group scores [0.75, 1.0, 0.75]
        ([0.75, 0.0, 0.5, 0.5, 0.5, 0.25], 3, 3, 2, [0, 2, 3]),  # group tie 0 vs 2 -> 0; expert 4 excluded
        ([0.75, 0.0, 0.5, 0.5, 0.5, 0.25], 1, 3, 2, [0]),
        ([0.75, 0.0, 0.5, 0.5, 0.5, 0.25], 6, 3, 3, [0, 2, 3, 4, 5, 1]),
        ([1.0, -1.0, 0.5, 0.5], 1, 2, 1, [2]),                   # best expert 0 in dropped group
        ([0.5, 0.5, 0.5, 1.0, 0.0, 0.0], 2, 2, 1, [0, 1]),       # top-2 sum of group of 3, group tie
        ([0.5, 0.5, 0.5, 1.0, 0.0, 0.0], 3, 2, 2, [3, 0, 1]),
        ([0.9, 0.1, 0.2, 0.2, 0.6, 0.6, 0.0, 0.95], 2, 4, 2, [0, 4]),  # groups [1.0,0.4,1.2,0.95] -> 2,0; best expert 7 dropped
    ]
    for vals, k, ng, tg, exp in cases:
        got, _ = select_experts(vals, k, ng, tg)
        _check(got == exp, "select(%r, k=%d, G=%d, tg=%d) = %r, expected %r" % (vals, k, ng, tg, got, exp))
    _, info = select_experts([0.3, 0.3, 0.1], 1)
    _check(info["expert_gap"] == 0.0, "tie gap")
    # routing weights
    rc = {"top_k": 2, "n_group": 1, "topk_group": 1, "norm_topk_prob": True,
          "routed_scaling_factor": 2.5, "scoring_func": "sigmoid"}
    lg = np.array([0.0, math.log(3.0), -5.0])  # s = [0.5, 0.75, ~0.0067]
    ch, w, _ = route(lg, np.zeros(3), rc)
    _check(ch == [1, 0] and np.allclose(w, [0.75 / 1.25 * 2.5, 0.5 / 1.25 * 2.5], rtol=0, atol=1e-15), "route norm")
    rc["norm_topk_prob"] = False
    ch, w, _ = route(lg, np.zeros(3), rc)
    _check(np.allclose(w, [0.75 * 2.5, 0.5 * 2.5], rtol=0, atol=1e-15), "route no norm")
    ch, w, _ = route(lg, np.array([0.3, 0.0, 0.0]), rc)  # bias changes order, not weights
    _check(ch == [0, 1] and np.allclose(w, [0.5 * 2.5, 0.75 * 2.5], rtol=0, atol=1e-15), "route bias")

    # (d) mixer on tiny hand-computable cases.  x = [2, 1]
    x = np.array([[2.0, 1.0]])
    P = {
        "gate": np.array([[1.0, 0.0], [0.0, 1.0]]),
        "bias": np.array([0.0, 0.0]),
        "fc1": None, "fc2": None,
        "up": [np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[0.0, 1.0], [1.0, 0.0]])],
        "down": [np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[1.0, 0.0], [0.0, -1.0]])],
        "sh_up": np.array([[1.0, -1.0]]),      # S1 x = 1 -> relu^2 = 1
        "sh_down": np.array([[1.0], [0.0]]),   # -> [1, 0]
    }
    rc = {"top_k": 1, "n_group": 1, "topk_group": 1, "norm_topk_prob": True,
          "routed_scaling_factor": 2.0, "scoring_func": "sigmoid"}
    # s = [sig(2), sig(1)] -> expert 0, w = 2; relu(x)^2 = [4, 1]; u = [8, 2]; y = [9, 2]
    y = mixer(x, P, rc)
    _check(np.allclose(y, [[9.0, 2.0]], rtol=0, atol=1e-12), "mixer case 1: %r" % y)
    # bias [0, 0.5]: s+b = [0.881, 1.231] -> expert 1; W1 x = [1, 2] -> [1, 4]; W2 -> [1, -4]; *2 -> [2, -8]; + [1, 0]
    P["bias"] = np.array([0.0, 0.5])
    y = mixer(x, P, rc)
    _check(np.allclose(y, [[3.0, -8.0]], rtol=0, atol=1e-12), "mixer case 2: %r" % y)
    # no normalisation: w = 2 * sig(1) = 1.4621171572600098 -> [1.4621.. + 1, -5.8484..]
    rc["norm_topk_prob"] = False
    y = mixer(x, P, rc)
    _check(np.allclose(y, [[2.4621171572600098, -5.848468629040039]], rtol=0, atol=1e-12), "mixer case 3: %r" % y)
    # softmax scoring, bias 0: s = softmax([2, 1]) = [0.7310585786300049, 0.2689414213699951] -> expert 0
    # norm false: w = 2 * 0.7310585786300049 = 1.4621171572600098; u = w * [4, 1]; y = u + [1, 0]
    rc["scoring_func"] = "softmax"
    P["bias"] = np.array([0.0, 0.0])
    y = mixer(x, P, rc)
    _check(np.allclose(y, [[6.848468629040039, 1.4621171572600098]], rtol=0, atol=1e-12), "mixer case 4: %r" % y)
    # latent, l = 1: z = [1 1] x = 3; expert 0: W1 = [[1]] -> 9, W2 = [[1]] -> 9; w = 2 -> 18;
    # W_up = [[0.5], [-1]] -> [9, -18]; + shared [1, 0] -> [10, -18]
    rc = {"top_k": 1, "n_group": 1, "topk_group": 1, "norm_topk_prob": True,
          "routed_scaling_factor": 2.0, "scoring_func": "sigmoid"}
    PL = dict(P)
    PL["fc1"] = np.array([[1.0, 1.0]])
    PL["fc2"] = np.array([[0.5], [-1.0]])
    PL["up"] = [np.array([[1.0]]), np.array([[-1.0]])]
    PL["down"] = [np.array([[1.0]]), np.array([[7.0]])]
    y = mixer(x, PL, rc)
    _check(np.allclose(y, [[10.0, -18.0]], rtol=0, atol=1e-12), "mixer case 5: %r" % y)
    # K = 2, norm true: both experts; w = 2*[s0, s1]/(s0+s1); expert 1: W1 z = -3 -> relu 0 -> contributes 0
    s0, s1 = 1 / (1 + math.exp(-2)), 1 / (1 + math.exp(-1))
    w0 = 2 * s0 / (s0 + s1)
    rc["top_k"] = 2
    y = mixer(x, PL, rc)
    _check(np.allclose(y, [[0.5 * 9 * w0 + 1.0, -9 * w0]], rtol=0, atol=1e-12), "mixer case 6: %r" % y)
    # RMSNorm: x = [3, 4]: mean sq = 12.5; eps 0 -> x / sqrt(12.5) * [1, 2]
    r = rmsnorm(np.array([[3.0, 4.0]]), np.array([1.0, 2.0]), 0.0)
    _check(np.allclose(r, [[3 / math.sqrt(12.5), 8 / math.sqrt(12.5)]], rtol=0, atol=1e-15), "rmsnorm")

    # (e) end-to-end generation + read-back for several flag combinations
    with tempfile.TemporaryDirectory() as td:
        combos = [
            [], ["--standard"], ["--groups", "3"], ["--shards", "3"], ["--ties"], ["--softmax"],
            ["--no-norm-topk", "--input-dtype", "BF16"], ["--ties", "--groups", "2", "--input-dtype", "F16"],
        ]
        for i, extra in enumerate(combos):
            a = parse_args(["--out", os.path.join(td, "g%d" % i), "--seed", str(100 + i)] + extra)
            summary, cfg, exp, _ = generate(a, quiet=True)
            got, _ = read_safetensors(os.path.join(a.out, "expected.safetensors"))
            _check(set(got) == {"layer_%d" % L for L in summary["moe_layers"]} | {"stack"}, "expected names")
            for key, v in exp.items():
                _check(np.array_equal(got[key], v), "expected read-back " + key)
                _check(np.all(np.isfinite(v)), "finite " + key)
            _check(all(L > 0 for L in summary["moe_layers"]), "MoE layer indices not starting at 0")
            _check(all(cfg["hybrid_override_pattern"][L] == "E" for L in summary["moe_layers"]), "pattern")
            inp, _ = read_safetensors(os.path.join(a.out, "input.safetensors"), raw=True)
            _check(inp["hidden_states"][0] == a.input_dtype, "input dtype")
            if a.shards > 1:
                _check(os.path.exists(os.path.join(a.out, "model", "model.safetensors.index.json")), "index")
                _check(not os.path.exists(os.path.join(a.out, "model", "model.safetensors")), "no single file")
        # the same seed is deterministic
        a1 = parse_args(["--out", os.path.join(td, "r1"), "--seed", "7"])
        a2 = parse_args(["--out", os.path.join(td, "r2"), "--seed", "7"])
        generate(a1, quiet=True)
        generate(a2, quiet=True)
        for fn in ["input.safetensors", "expected.safetensors", "model/model.safetensors", "model/config.json"]:
            with open(os.path.join(a1.out, fn), "rb") as f1, open(os.path.join(a2.out, fn), "rb") as f2:
                _check(f1.read() == f2.read(), "deterministic " + fn)
    print("selftest ok")


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="Independent reference MoE (Nemotron-3 LatentMoE / standard MoE).")
    ap.add_argument("--out", help="output directory")
    ap.add_argument("--seed", type=int, default=0)
    kind = ap.add_mutually_exclusive_group()
    kind.add_argument("--latent", action="store_true", help="LatentMoE (default)")
    kind.add_argument("--standard", action="store_true", help="standard MoE (moe_latent_size null)")
    ap.add_argument("--tokens", type=int, default=7)
    ap.add_argument("--moe-layers", type=int, default=2)
    ap.add_argument("--groups", type=int, default=1, help="n_group (N divisible by it)")
    ap.add_argument("--no-norm-topk", action="store_true", help="norm_topk_prob = false")
    ap.add_argument("--softmax", action="store_true", help='scoring_func = "softmax"')
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--input-dtype", choices=["F32", "BF16", "F16"], default="F32")
    ap.add_argument("--ties", action="store_true", help="exact gate ties at the top-K boundary for some tokens")
    ap.add_argument("--min-gap", type=float, default=1e-4,
                    help="smallest gap allowed between the last chosen and the first dropped gate score (and group score) at every boundary")
    ap.add_argument("--selftest", action="store_true")
    a = ap.parse_args(argv)
    if not a.selftest:
        if not a.out:
            ap.error("--out is required")
        if a.tokens < 1 or a.moe_layers < 1 or a.groups < 1 or a.shards < 1:
            ap.error("--tokens, --moe-layers, --groups, --shards must be >= 1")
    return a


def main(argv=None):
    a = parse_args(argv)
    if a.selftest:
        selftest()
        return 0
    generate(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
