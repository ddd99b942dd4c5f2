#!/usr/bin/python3
"""Independent reference implementation of the block-scaled wire formats of docs/MICROSCALING.md.

Pure Python 3 + numpy (run with /usr/bin/python3).  Written only from docs/MICROSCALING.md, the OCP
Microscaling Formats (MX) Specification v1.0 and NVIDIA's NVFP4 description, without looking at the
C# codecs, so that the tests can compare the two byte for byte.

Model (float64 throughout): element tables from sign/exponent/mantissa/bias; rounding = nearest
finite table value, ties to the even code, saturating, sign kept.  MX: blocks of 32, scale byte
max(floor(log2 amax) - emax, -127) + 127, element round(v / 2^shared).  NVFP4: blocks of 16,
S = float32(A / 2688), scale code E4M3((b / 6) / S), element round_E2M1(v / (S E4M3(code))).
Each row: scale bytes, then the elements bit-packed LSB first; NVFP4 prefixes the fp32 S.

CLI (binary stdin/stdout, errors: exit code 2 and one line on stderr):
    mx_reference.py encode FMT ROWS WIDTH     stdin: ROWS*WIDTH little-endian float32 -> encoded bytes
    mx_reference.py decode FMT ROWS WIDTH     stdin: encoded bytes -> ROWS*WIDTH little-endian float32
    mx_reference.py codepoints TYPE           one line "code value" per code point (repr of the float64)
    mx_reference.py selftest
FMT: mxfp8-e4m3 mxfp8-e5m2 mxfp6-e3m2 mxfp6-e2m3 mxfp4 nvfp4.  TYPE: e4m3 e5m2 e3m2 e2m3 e2m1.
"""

import functools
import math
import struct
import sys

import numpy as np

# --- Element types, from their definition ---

# name: (exponent bits, mantissa bits, bias, special values: "ieee" | "nan-all-ones" | "none")
ELEMENT_TYPES = {"e4m3": (4, 3, 7, "nan-all-ones"), "e5m2": (5, 2, 15, "ieee"), "e3m2": (3, 2, 3, "none"),
                 "e2m3": (2, 3, 1, "none"), "e2m1": (2, 1, 1, "none")}

# name: (element type, block size, scale kind)
FORMATS = {"mxfp8-e4m3": ("e4m3", 32, "e8m0"), "mxfp8-e5m2": ("e5m2", 32, "e8m0"),
           "mxfp6-e3m2": ("e3m2", 32, "e8m0"), "mxfp6-e2m3": ("e2m3", 32, "e8m0"),
           "mxfp4": ("e2m1", 32, "e8m0"), "nvfp4": ("e2m1", 16, "e4m3")}


class MxError(ValueError):
    """A refused input (reported by the CLI as exit code 2)."""


def format_info(fmt):
    """(element type, block size, scale kind) of a format name; MxError for an unknown name."""
    if fmt not in FORMATS:
        raise MxError("unknown format %r (expected one of %s)" % (fmt, ", ".join(FORMATS)))
    return FORMATS[fmt]


def bits_of(tname):
    """Total bits of an element type (sign + exponent + mantissa)."""
    e, m, _, _ = ELEMENT_TYPES[tname]
    return 1 + e + m


def code_value(tname, code):
    """The value of one code point, straight from the sign/exponent/mantissa definition."""
    E, M, B, special = ELEMENT_TYPES[tname]
    s, e, m = code >> (E + M), (code >> M) & ((1 << E) - 1), code & ((1 << M) - 1)
    sign = -1.0 if s else 1.0
    if special == "ieee" and e == (1 << E) - 1:
        return sign * math.inf if m == 0 else math.nan
    if special == "nan-all-ones" and e == (1 << E) - 1 and m == (1 << M) - 1:
        return math.nan
    if e == 0:
        return sign * math.ldexp(m, 1 - B - M)
    return sign * math.ldexp((1 << M) + m, e - B - M)


@functools.lru_cache(maxsize=None)
def table(tname):
    """float64 array of the decoded value of every code point 0 .. 2^bits - 1."""
    t = np.array([code_value(tname, c) for c in range(1 << bits_of(tname))], dtype=np.float64)
    t.flags.writeable = False
    return t


@functools.lru_cache(maxsize=None)
def positive_grid(tname):
    """(values, codes): the finite values with sign bit 0, ascending (the rounding grid)."""
    t = table(tname)[: 1 << (bits_of(tname) - 1)]
    codes = np.flatnonzero(np.isfinite(t))
    order = np.argsort(t[codes], kind="stable")
    vals, codes = t[codes][order], codes[order]
    assert np.all(np.diff(vals) > 0), "grid must be strictly increasing"
    return vals, codes


def max_normal(tname):
    """Largest finite value of the type."""
    return positive_grid(tname)[0][-1]


def emax(tname):
    """Exponent of the largest normal (OCP MX emax_elem)."""
    return math.frexp(max_normal(tname))[1] - 1


def round_to_type(x, tname):
    """Codes (uint8) of float64 x rounded to nearest, ties to even code, saturating, sign kept.

    Between two neighbours lo < hi of the grid the midpoint (lo + hi) / 2 is exact in float64
    (a few significant bits), so the comparison with it is exact.  Neighbouring positive codes
    differ by one, so the even code is the one with the even mantissa."""
    vals, codes = positive_grid(tname)
    x = np.asarray(x, dtype=np.float64)
    a = np.minimum(np.abs(x), vals[-1])                   # saturation
    hi = np.searchsorted(vals, a, side="left")            # vals[hi] >= a
    lo = np.maximum(hi - 1, 0)
    mid = (vals[lo] + vals[hi]) / 2
    take_hi = (vals[hi] == a) | (a > mid) | ((a == mid) & (codes[hi] % 2 == 0))
    mag = np.where(take_hi, codes[hi], codes[lo])
    sign = np.signbit(x).astype(np.int64) << (bits_of(tname) - 1)
    return (mag | sign).astype(np.uint8)


# --- Layout helpers ---

def row_bytes(fmt, width):
    """Bytes of one row: ceil(w / block) scale bytes + ceil(w * b / 8) element bytes."""
    tname, block, _ = FORMATS[fmt]
    return -(-width // block) + -(-width * bits_of(tname) // 8)


def message_bytes(fmt, rows, width):
    """Bytes of a whole message (NVFP4: + 4 for S unless the message is empty)."""
    extra = 4 if FORMATS[fmt][2] == "e4m3" and rows > 0 and width > 0 else 0
    return extra + rows * row_bytes(fmt, width)


def pack(codes, b):
    """[rows, w] codes -> [rows, ceil(w*b/8)] bytes; element j at bits [j*b, j*b+b), LSB first."""
    rows, w = codes.shape
    bits = (codes[:, :, None].astype(np.uint16) >> np.arange(b, dtype=np.uint16)) & 1
    return np.packbits(bits.reshape(rows, w * b).astype(np.uint8), axis=1, bitorder="little")


def unpack(data, w, b):
    """Inverse of pack; padding bits are ignored."""
    rows = data.shape[0]
    bits = np.unpackbits(data, axis=1, bitorder="little")[:, : w * b].reshape(rows, w, b)
    return (bits.astype(np.uint16) << np.arange(b, dtype=np.uint16)).sum(axis=2).astype(np.uint8)


# --- Encode / decode ---

def encode(values, fmt):
    """float32 [rows, width] -> the message bytes of docs/MICROSCALING.md."""
    tname, block, kind = format_info(fmt)
    v32 = np.asarray(values, dtype=np.float32)
    if v32.ndim != 2:
        raise MxError("values must be a 2-D [rows, width] array")
    rows, width = v32.shape
    bad = np.argwhere(~np.isfinite(v32))
    if len(bad):
        r, c = bad[0]
        raise MxError("non-finite value %r at row %d, column %d" % (float(v32[r, c]), r, c))
    if rows == 0 or width == 0:
        return b""
    x = v32.astype(np.float64)
    nblocks = -(-width // block)
    scales = np.zeros((rows, nblocks), dtype=np.uint8)
    codes = np.zeros((rows, width), dtype=np.uint8)
    prefix = b""
    if kind == "e4m3":
        A = float(np.max(np.abs(x))) if width else 0.0
        # float64 quotient then float32: the quotient of a 24-bit float by 21 * 2^7 is never within
        # float64 rounding error of a float32 midpoint unless it is exactly one, so this is one rounding.
        S = 1.0 if A == 0 else float(np.float32(A / 2688.0))
        if A > 0 and S == 0:
            S = math.ldexp(1.0, -149)
        prefix = struct.pack("<f", S)
    for k in range(nblocks):
        blk = x[:, k * block:(k + 1) * block]
        amax = np.max(np.abs(blk), axis=1)
        if kind == "e8m0":
            floor_log2 = np.array([math.frexp(a)[1] - 1 if a > 0 else -127 for a in amax])
            shared = np.maximum(floor_log2 - emax(tname), -127)
            scales[:, k] = shared + 127
            codes[:, k * block:(k + 1) * block] = round_to_type(np.ldexp(blk, -shared[:, None]), tname)
        else:
            scode = round_to_type((amax / 6.0) / S, "e4m3")
            scales[:, k] = scode
            s = S * table("e4m3")[scode]
            safe = np.where(s > 0, s, 1.0)[:, None]
            q = round_to_type(blk / safe, tname)
            codes[:, k * block:(k + 1) * block] = np.where(s[:, None] > 0, q, 0)
    body = np.concatenate([scales, pack(codes, bits_of(tname))], axis=1)
    return prefix + body.tobytes()


def decode(data, rows, width, fmt):
    """Message bytes -> float32 [rows, width]; each value computed in float64, rounded once."""
    tname, block, kind = format_info(fmt)
    if rows < 0 or width < 0:
        raise MxError("rows and width must be >= 0")
    data = bytes(data)
    if len(data) != message_bytes(fmt, rows, width):
        raise MxError("%s message of %d x %d must be %d bytes, got %d"
                      % (fmt, rows, width, message_bytes(fmt, rows, width), len(data)))
    if rows == 0 or width == 0:
        return np.zeros((rows, width), dtype=np.float32)
    S = 1.0
    if kind == "e4m3":
        S, data = float(struct.unpack("<f", data[:4])[0]), data[4:]
    nblocks = -(-width // block)
    body = np.frombuffer(data, dtype=np.uint8).reshape(rows, row_bytes(fmt, width))
    elems = table(tname)[unpack(body[:, nblocks:], width, bits_of(tname))]
    sb = body[:, :nblocks].astype(np.int64)
    if kind == "e8m0":
        scale = np.where(sb == 0xFF, np.nan, np.ldexp(1.0, sb - 127))
    else:
        scale = table("e4m3")[sb] * S if math.isfinite(S) else np.full(sb.shape, np.nan)
    per_elem = np.repeat(scale, block, axis=1)[:, :width]
    with np.errstate(over="ignore", invalid="ignore"):
        return (elems * per_elem).astype(np.float32)


# --- Self test (expected values come from the specifications, worked by hand) ---

def _check(cond, what):
    """Raise AssertionError naming the failed check."""
    if not cond:
        raise AssertionError("selftest failed: " + what)


def _refusal(f, *args):
    """The MxError message f(*args) raises, or "" when it returns."""
    try:
        f(*args)
    except MxError as ex:
        return str(ex)
    return ""


def _enc1(vals, fmt):
    """Encode one row."""
    return encode(np.array([vals], dtype=np.float32), fmt)


def selftest():
    """Check tables, rounding, MX/NVFP4 encodings, layout and round-trip error against the specs."""
    p = math.ldexp
    # element types: extremes and special values as the OCP specs state them
    for t, mx, sub, em, one in [("e4m3", 448, p(1, -9), 8, 0x38), ("e5m2", 57344, p(1, -16), 15, 0x3C),
                                ("e3m2", 28, p(1, -4), 4, 0x0C), ("e2m3", 7.5, p(1, -3), 2, 0x08),
                                ("e2m1", 6, 0.5, 2, 0x2)]:
        tb = table(t)
        _check(max_normal(t) == mx and positive_grid(t)[0][1] == sub, t + " max / min subnormal")
        _check(emax(t) == em and tb[one] == 1.0, t + " emax / 1.0")
        _check(np.array_equal(tb[: len(tb) // 2], -tb[len(tb) // 2:], equal_nan=True), t + " sign")
        _check(math.copysign(1, tb[len(tb) // 2]) == -1, t + " -0")
    e4, e5 = table("e4m3"), table("e5m2")
    _check(np.flatnonzero(np.isnan(e4)).tolist() == [0x7F, 0xFF] and not np.isinf(e4).any(), "e4m3 NaN")
    _check(e4[0x7E] == 448 and e4[0x08] == p(1, -6) and e4[0x07] == 7 * p(1, -9), "e4m3 codes")
    _check(e5[0x7C] == math.inf and e5[0xFC] == -math.inf and e5[0x7B] == 57344, "e5m2 inf / max")
    _check(np.flatnonzero(np.isnan(e5)).tolist() == [0x7D, 0x7E, 0x7F, 0xFD, 0xFE, 0xFF], "e5m2 NaN")
    _check(table("e2m1")[:8].tolist() == [0, 0.5, 1, 1.5, 2, 3, 4, 6], "e2m1 magnitudes")
    _check(not np.isnan(table("e3m2")).any() and not np.isnan(table("e2m3")).any(), "fp6 no NaN")
    # rounding: ties to even, subnormals, saturation, sign of zero
    cases = {
        "e4m3": [(1.0625, 0x38), (1.1875, 0x3A), (p(1, -10), 0x00), (3 * p(1, -10), 0x02), (500, 0x7E),
                 (464, 0x7E), (1e30, 0x7E), (-0.0, 0x80), (-1e-6, 0x80), (-448, 0xFE), (p(1, -6), 0x08)],
        "e5m2": [(1.125, 0x3C), (1.375, 0x3E), (61440, 0x7B), (1e9, 0x7B), (p(1, -17), 0x00),
                 (3 * p(1, -17), 0x02), (-p(1, -18), 0x80)],
        "e3m2": [(1.125, 0x0C), (1.375, 0x0E), (30, 0x1F), (p(1, -5), 0x00), (3 * p(1, -5), 0x02), (-0.0, 0x20)],
        "e2m3": [(1.0625, 0x08), (1.1875, 0x0A), (7.75, 0x1F), (100, 0x1F), (p(1, -4), 0x00), (-0.0, 0x20)],
        "e2m1": [(0.25, 0x0), (0.75, 0x2), (1.25, 0x2), (1.75, 0x4), (2.5, 0x4), (3.5, 0x6), (5, 0x6),
                 (5.01, 0x7), (7, 0x7), (1e6, 0x7), (-0.25, 0x8), (-0.0, 0x8), (-5.5, 0xF), (0.26, 0x1)],
    }
    for t, lst in cases.items():
        for v, c in lst:
            got = int(round_to_type(np.array([v]), t)[0])
            _check(got == c, "round %s(%r) = 0x%X, expected 0x%X" % (t, v, got, c))
        g = np.concatenate([positive_grid(t)[0], -positive_grid(t)[0]])  # every grid value is a fixed point
        _check(np.array_equal(table(t)[round_to_type(g, t)], g), t + " grid fixed points")
    # MX shared exponent
    f32 = np.float32
    _check(_enc1([1.0], "mxfp8-e4m3") == bytes([119, 0x78]), "amax = 1: shared -8, element 256")
    _check(_enc1([float(np.nextafter(f32(1), f32(2)))], "mxfp8-e4m3") == bytes([119, 0x78]), "amax just above 1")
    _check(_enc1([1.99], "mxfp8-e4m3") == bytes([119, 0x7E]), "1.99 * 256 in (448, 512) saturates")
    _check(_enc1([0.0, -0.0], "mxfp8-e4m3") == bytes([0, 0x00, 0x80]), "zero block")
    _check(_enc1([p(1, -149), -p(1, -140)], "mxfp8-e5m2") == bytes([0, 0x00, 0x88]), "subnormal amax clamped")
    _check(_enc1([p(1, -120)], "mxfp4") == bytes([5, 0x6]), "amax 2^-120 -> shared -122")
    _check(_enc1([float(np.finfo(np.float32).max)], "mxfp4") == bytes([252, 0x7]), "f32 max")
    _check(_enc1([8.0, p(1, -9)], "mxfp8-e5m2") == bytes([127 - 12, 0x78, 0x48]), "e5m2 shared -12")
    _check(_enc1([4, 5, 3.5, 2.5, 0.25, -0.25, 0.75, 1.25, 1.75], "mxfp4")
           == bytes([127, 0x66, 0x46, 0x80, 0x22, 0x04]), "mxfp4 ties in a block")
    _check(_enc1([1.0, 6.0, -0.5], "mxfp4") == bytes([127, 0x72, 0x09]), "fp4 nibble order + padding")
    _check(_enc1([1, 1, 1, 1], "mxfp6-e2m3") == bytes([125, 0x18, 0x86, 0x61]), "fp6 packing")
    _check(_enc1([1] * 5, "mxfp6-e2m3")[3:] == bytes([0x61, 0x18]), "fp6 padding")
    _check(_enc1([1.0] * 32 + [0.25], "mxfp8-e4m3")[:2] == bytes([119, 117]), "last block alone")
    # decode: E8M0 NaN, padding ignored, overflow, E5M2 Inf
    _check(np.isnan(decode(bytes([0xFF, 0x00]), 1, 1, "mxfp8-e4m3")).all(), "E8M0 0xFF -> NaN")
    _check(decode(bytes([127, 0xF2]), 1, 1, "mxfp4").tolist() == [[1.0]], "padding ignored")
    _check(decode(bytes([127, 0x18, 0x86, 0x61, 0xD8]), 1, 5, "mxfp6-e2m3").tolist() == [[4.0] * 5], "fp6 pad")
    _check(decode(bytes([254, 0x7B, 0x7C]), 1, 2, "mxfp8-e5m2").tolist() == [[math.inf] * 2], "overflow/Inf")
    _check(decode(bytes([0, 0x01]), 1, 1, "mxfp8-e4m3").tolist() == [[p(1, -136)]], "subnormal f32 result")
    # NVFP4
    nv = _enc1([2688, 224, -2688] + [0] * 13 + [12, 3, -0.001] + [0] * 13 + [-0.001], "nvfp4")
    _check(nv == struct.pack("<f", 1.0) + bytes([0x7E, 0x40, 0x00, 0x17, 0x0F] + [0] * 6 + [0x37, 0x08] + [0] * 7),
           "nvfp4 S = 1, scales 448 / 2 / 0, zero-scale block all +0")
    _check(_enc1([0, -0.0], "nvfp4") == struct.pack("<f", 1.0) + bytes([0, 0]), "nvfp4 A = 0")
    _check(_enc1([p(1, -149)], "nvfp4") == bytes([1, 0, 0, 0, 0x23, 0x7]), "nvfp4 S = 2^-149")
    _check(_enc1([p(21, -143)], "nvfp4")[:4] == bytes([1, 0, 0, 0]), "nvfp4 A = 2688 2^-150 (tie to 0)")
    _check(_enc1([6.0], "nvfp4") == struct.pack("<f", float(f32(6 / 2688))) + bytes([0x7E, 0x7]), "nvfp4 6")
    _check(encode(np.zeros((0, 5), np.float32), "nvfp4") == b"", "nvfp4 no rows")
    _check(encode(np.zeros((2, 0), np.float32), "nvfp4") == b"", "nvfp4 no columns")
    dv = decode(nv, 1, 33, "nvfp4")
    _check(dv[0, :3].tolist() == [2688, 224, -2688] and dv[0, 16:18].tolist() == [12, 3], "nvfp4 decode")
    _check(decode(bytes([1, 0, 0, 0, 0x23, 0x7]), 1, 1, "nvfp4").tolist() == [[p(1, -149)]], "nvfp4 tiny")
    for s, sc in [(math.inf, 0x38), (math.nan, 0x38), (1.0, 0x7F), (1.0, 0xFF)]:
        _check(np.isnan(decode(struct.pack("<f", s) + bytes([sc, 0x00]), 1, 1, "nvfp4")).all(), "nvfp4 NaN")
    # byte lengths (the contract's table) and odd widths
    for fmt, w, n in [("mxfp8-e4m3", 1024, 1056), ("mxfp8-e5m2", 1024, 1056), ("mxfp6-e3m2", 1024, 800),
                      ("mxfp4", 1024, 544), ("mxfp8-e4m3", 45, 47), ("mxfp6-e2m3", 45, 36), ("mxfp4", 45, 25),
                      ("mxfp4", 33, 19), ("mxfp6-e3m2", 33, 27), ("mxfp6-e2m3", 7, 7), ("nvfp4", 33, 20)]:
        _check(row_bytes(fmt, w) == n, "row bytes %s %d" % (fmt, w))
    _check(message_bytes("nvfp4", 1, 1024) == 580 and message_bytes("nvfp4", 3, 1024) == 4 + 3 * 576, "nvfp4 len")
    # round trip on Gaussian data: each element within half a step of its binade (or saturated)
    rng = np.random.default_rng(7)
    for fmt in FORMATS:
        tname, block, kind = FORMATS[fmt]
        _, M, B, _ = ELEMENT_TYPES[tname]
        is_mx = kind == "e8m0"
        for rows, w in [(3, 1024), (2, 45), (4, 33), (1, 7), (2, 1), (5, 17)]:
            x = (rng.standard_normal((rows, w)) * np.exp(rng.uniform(-8, 8, (rows, 1)))).astype(np.float32)
            enc = encode(x, fmt)
            _check(len(enc) == message_bytes(fmt, rows, w), "length " + fmt)
            y = decode(enc, rows, w, fmt).astype(np.float64)
            _check(not is_mx or np.array_equal(np.signbit(y), np.signbit(x)), "signs kept " + fmt)
            _check(not is_mx or encode(y.astype(np.float32), fmt) == enc, "encode(decode(.)) idempotent " + fmt)
            sb = np.frombuffer(enc[0 if is_mx else 4:], np.uint8).reshape(rows, -1)[:, : -(-w // block)]
            S = 1.0 if is_mx else struct.unpack("<f", enc[:4])[0]
            scale = np.ldexp(1.0, sb.astype(np.int64) - 127) if is_mx else table("e4m3")[sb] * S
            unit = np.repeat(scale, block, axis=1)[:, :w]          # 2^shared, or s = S E4M3(code)
            slack = 0.0 if is_mx else np.abs(y) * p(1, -24)        # NVFP4 decode rounds the product once
            a = np.abs(x) / np.where(unit > 0, unit, 1.0)
            mxn = max_normal(tname)
            binade = np.floor(np.log2(np.maximum(a, p(1, 1 - B))))
            bound = np.where(a <= mxn, unit * np.ldexp(1.0, (binade - M - 1).astype(int)),
                             unit * (a - mxn))
            ok = np.abs(y - x) <= bound * (1 + 1e-12) + slack
            ok |= (unit == 0) & (y == 0)
            _check(ok.all(), "round-trip error bound " + fmt)
            if w < 256:
                continue
            rel = np.sqrt(np.mean((y - x) ** 2) / max(np.mean(x.astype(np.float64) ** 2), 1e-300))
            _check(rel < {"e4m3": 0.04, "e5m2": 0.08, "e3m2": 0.08, "e2m3": 0.04, "e2m1": 0.16}[tname],
                   "rms error %s %g" % (fmt, rel))
    # refusals: non-finite input (naming row and column), wrong lengths, unknown names
    for bad, fmt in [(b, f) for b in (math.nan, math.inf, -math.inf) for f in FORMATS]:
        z = np.zeros((3, 40), np.float32)
        z[2, 37] = bad
        _check("row 2, column 37" in _refusal(encode, z, fmt), "non-finite refused " + fmt)
    _check(_refusal(decode, bytes(4), 1, 3, "mxfp4") and _refusal(decode, bytes(4), 0, 3, "nvfp4"), "lengths")
    _check(_refusal(encode, np.zeros((1, 1), np.float32), "mxfp8") != "", "aliases are not names here")
    print("selftest ok")


# --- CLI ---

def _count(s, what):
    """A non-negative integer argument."""
    if not s.isdigit():
        raise MxError("%s must be a non-negative integer, got %r" % (what, s))
    return int(s)


def main(argv):
    """Dispatch the command line; returns the exit code."""
    usage = "usage: mx_reference.py encode|decode FMT ROWS WIDTH | codepoints TYPE | selftest"
    try:
        cmd = argv[0] if argv else ""
        if cmd in ("encode", "decode") and len(argv) == 4:
            fmt, rows, width = argv[1], _count(argv[2], "ROWS"), _count(argv[3], "WIDTH")
            format_info(fmt)
            data = sys.stdin.buffer.read()
            if cmd == "encode":
                if len(data) != rows * width * 4:
                    raise MxError("expected %d bytes of float32 on stdin, got %d" % (rows * width * 4, len(data)))
                out = encode(np.frombuffer(data, dtype="<f4").reshape(rows, width), fmt)
            else:
                out = decode(data, rows, width, fmt).astype("<f4").tobytes()
            sys.stdout.buffer.write(out)
        elif cmd == "codepoints" and len(argv) == 2:
            if argv[1] not in ELEMENT_TYPES:
                raise MxError("unknown element type %r (expected one of %s)" % (argv[1], " ".join(ELEMENT_TYPES)))
            for c, v in enumerate(table(argv[1])):
                print("%d %r" % (c, float(v)))
        elif cmd == "selftest" and len(argv) == 1:
            selftest()
        else:
            raise MxError(usage)
    except (MxError, AssertionError) as ex:
        print("mx_reference: " + str(ex).replace("\n", " "), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
