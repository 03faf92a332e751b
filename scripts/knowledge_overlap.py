"""How much two sets of cached knowledge bases agree, weight by weight: for measuring how many
general-corpus tokens the bases need (compute them at growing `--general-corpus-tokens`
budgets, then compare each budget's file with the next one's).

A cache file (`knowledge-cache/<key>.safetensors`, written by gems-core's knowledge_file.rs)
holds one `[d_in, k]` orthonormal basis per projected weight, under the weight's path. For the
bases A (k_a columns) and B (k_b columns) of one weight, with k = min(k_a, k_b), the overlap is

    ||A^T B||_F^2 / k

the mean squared cosine of the principal angles between the two subspaces: 1 when the smaller
subspace lies inside the larger one, k_max / d_in on average for unrelated random subspaces
(printed as `chance`). When one corpus contains the other (a budget read from the same files),
the smaller basis spans mostly directions the larger one also saw, so this overlap is biased
upwards. `--top M` also compares the principal subspaces alone: the first M columns of each
basis (columns are stored by decreasing eigenvalue), the directions that carry most of the
input energy, which converge only as the covariance estimate does.

Run (numpy and safetensors, e.g. in a venv):

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install numpy safetensors
    /tmp/venv/bin/python scripts/knowledge_overlap.py SMALLER.safetensors LARGER.safetensors \
        [--top 32] [--per-layer]

It prints the mean overlap over weights, the mean chance level, the mean ranks, with `--top M`
the mean top-M overlap (weights with fewer than M directions in either file are skipped), and
with `--per-layer` one line per weight.
"""

import argparse

import numpy as np
from safetensors.numpy import load_file


def overlap(a, b):
    """Mean squared cosine of the principal angles between span(a) and span(b)."""
    k = min(a.shape[1], b.shape[1])
    if k == 0:
        return float("nan")
    product = a.T.astype(np.float64) @ b.astype(np.float64)
    return float(np.sum(product * product) / k)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first")
    parser.add_argument("second")
    parser.add_argument("--top", type=int, default=0, help="also compare the first M columns")
    parser.add_argument("--per-layer", action="store_true")
    args = parser.parse_args()
    first, second = load_file(args.first), load_file(args.second)
    common = sorted(set(first) & set(second))
    if not common:
        raise SystemExit("the two files have no weight in common")
    missing = sorted(set(first) ^ set(second))
    if missing:
        print(f"{len(missing)} weight(s) in only one file, skipped: {missing[:3]}...")
    rows = []
    for name in common:
        a, b = first[name], second[name]
        if a.shape[0] != b.shape[0]:
            raise SystemExit(f"{name}: input sizes differ ({a.shape[0]} vs {b.shape[0]})")
        d_in = a.shape[0]
        chance = max(a.shape[1], b.shape[1]) / d_in
        top = float("nan")
        if 0 < args.top <= min(a.shape[1], b.shape[1]):
            top = overlap(a[:, : args.top], b[:, : args.top])
        rows.append((name, a.shape[1], b.shape[1], d_in, overlap(a, b), chance, top))
        if args.per_layer:
            print(f"{name:<50} k {a.shape[1]:>5} -> {b.shape[1]:>5} of {d_in:>5}  "
                  f"overlap {rows[-1][4]:.4f}  chance {chance:.4f}  top {top:.4f}")
    values = np.array([[r[1], r[2], r[4], r[5], r[6], r[3]] for r in rows], dtype=np.float64)
    print(f"{len(rows)} weights: mean overlap {values[:, 2].mean():.4f} "
          f"(min {values[:, 2].min():.4f}), mean chance {values[:, 3].mean():.4f}, "
          f"mean rank {values[:, 0].mean():.1f} -> {values[:, 1].mean():.1f}")
    if args.top:
        compared = ~np.isnan(values[:, 4])
        if compared.any():
            top, d_in = values[compared, 4], values[compared, 5]
            print(f"top {args.top} directions, {len(top)} weights: mean overlap {top.mean():.4f} "
                  f"(min {top.min():.4f}), mean chance {(args.top / d_in).mean():.4f}")


if __name__ == "__main__":
    main()
