#!/usr/bin/env python3
"""numpy float32 Linear timing: y = x @ w.T with w [out, in] contiguous, the shapes of bench/compare-blas.sh.

Writes JSON: {"numpy", "blas": {libraries, openblas_config, openblas_core, threads}, "OPENBLAS_NUM_THREADS",
"OPENBLAS_CORETYPE", "results": [{"tokens", "in", "out", "seconds", "gflops"}]}.
Best-of-N after warm-up, like the managed benchmark.
"""
import argparse
import ctypes
import json
import os
import time

import numpy as np

SHAPES = [(t, k, n) for t in (64, 256, 1024) for (k, n) in ((1024, 2688), (2688, 1024))]


def blas_info():
    """Which BLAS numpy loaded (from this process's mappings) and, for OpenBLAS, its core and thread count."""
    libs = set()
    with open("/proc/self/maps", encoding="utf-8") as maps:
        for line in maps:
            path = line.split()[-1]
            if "blas" in path or "lapack" in path:
                libs.add(path)
    info = {"libraries": sorted(libs)}
    for path in sorted(libs):
        if "libblas" in path or "openblas" in path:
            try:
                lib = ctypes.CDLL(path)
                lib.openblas_get_config.restype = ctypes.c_char_p
                lib.openblas_get_corename.restype = ctypes.c_char_p
                info["openblas_config"] = lib.openblas_get_config().decode()
                info["openblas_core"] = lib.openblas_get_corename().decode()
                info["threads"] = lib.openblas_get_num_threads()
                break
            except (OSError, AttributeError):
                continue
    return info


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--json", required=True)
    args = parser.parse_args()

    rng = np.random.default_rng(1234)
    results = []
    for tokens, k, n in SHAPES:
        w = np.ascontiguousarray(rng.standard_normal((n, k), dtype=np.float32))
        x = np.ascontiguousarray(rng.standard_normal((tokens, k), dtype=np.float32))
        wt = w.T  # a view: numpy hands OpenBLAS sgemm with transB, no copy
        y = np.empty((tokens, n), dtype=np.float32)
        for _ in range(3):
            np.matmul(x, wt, out=y)
        best = float("inf")
        start = time.perf_counter()
        runs = 0
        while runs < args.repeats or time.perf_counter() - start < args.min_seconds:
            t0 = time.perf_counter()
            np.matmul(x, wt, out=y)
            best = min(best, time.perf_counter() - t0)
            runs += 1
        flops = 2.0 * tokens * k * n
        results.append({"tokens": tokens, "in": k, "out": n, "seconds": best, "gflops": flops / best / 1e9})

    info = blas_info()
    out = {"numpy": np.__version__, "blas": info, "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
           "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"), "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE"), "results": results}
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
