"""Speed and memory of the kernel entropy and total-correlation estimates, measured side by side in one run.

Prints, for N = 2000 probes:
  1. the row-loop reference vs the vectorised estimate at d = 3072 (target: >= 100x, same value);
  2. one float32 matrix product of the same shape, the floor (target: estimate within 3x of it);
  3. the kernel total correlation (M = N product samples) at d = 3072, as a ratio to the entropy
     (expected about 3x: an (N, N) half product, an (N, M) full product and the draws);
  4. a conv-sized layer, d = 65,536, in a fresh process (target: < 30 s, < 2 GB peak memory).

Usage: python benchmarks/estimator_speed.py [--skip-reference]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch

from complexity_tracker.estimators import as_packed, kde_entropy, kde_entropy_reference, total_correlation
from complexity_tracker.gating import PackedStates

N, D_VECTOR, D_CONV = 2000, 3072, 65_536


def best_of(repeats: int, fn) -> tuple[float, object]:
    times, value = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return min(times), value


def conv_case() -> dict[str, float]:
    """Runs in a child process so that its peak resident memory is its own."""
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rng = np.random.default_rng(1)
    packed = PackedStates(
        np.concatenate([np.packbits(rng.random((100, D_CONV)) < 0.3, axis=1) for _ in range(N // 100)]),
        D_CONV,
        True,
    )
    start = time.perf_counter()
    value = kde_entropy(packed, kernel_width=0.04)
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": seconds, "value": value, "peak_mb": peak_kib / 1024, "baseline_mb": baseline / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-reference", action="store_true", help="skip the ~1 minute row-loop reference")
    parser.add_argument("--conv-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.conv_child:
        print(json.dumps(conv_case()))
        return

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    states = np.random.default_rng(0).random((N, D_VECTOR)) < 0.3
    packed = as_packed(states)
    dense = torch.from_numpy(states.astype(np.float32))
    fast_s, fast_value = best_of(5, lambda: kde_entropy(packed, kernel_width=0.01))
    matmul_s, _ = best_of(5, lambda: dense @ dense.T)
    print(f"vectorised kde     N={N} d={D_VECTOR}: {fast_s:8.3f} s  H = {fast_value:.12f} bits")
    print(f"float32 matmul     (N,d)x(d,N) floor: {matmul_s:8.3f} s  estimate / floor = {fast_s / matmul_s:.2f}x (target <= 3x)")
    tc_s, tc_value = best_of(5, lambda: total_correlation(packed, "kde"))
    print(f"kde total corr.    N={N} d={D_VECTOR}: {tc_s:8.3f} s  TC = {tc_value:.4f} bits, "
          f"{tc_s / fast_s:.2f}x the entropy estimate")
    if not args.skip_reference:
        slow_s, slow_value = best_of(1, lambda: kde_entropy_reference(states, kernel_width=0.01))
        print(f"row-loop reference N={N} d={D_VECTOR}: {slow_s:8.3f} s  H = {slow_value:.12f} bits")
        print(f"speed-up: {slow_s / fast_s:.0f}x (target >= 100x); |difference| = {abs(slow_value - fast_value):.2e} bits")

    child = subprocess.run(
        [sys.executable, __file__, "--conv-child"], check=True, capture_output=True, text=True
    )
    conv = json.loads(child.stdout)
    print(
        f"conv-sized layer   N={N} d={D_CONV}: {conv['seconds']:8.3f} s (target < 30 s), "
        f"peak memory {conv['peak_mb']:.0f} MB (target < 2048 MB; the process held {conv['baseline_mb']:.0f} MB "
        "after importing torch, before the data), "
        f"H = {conv['value']:.4f} bits"
    )


if __name__ == "__main__":
    main()
