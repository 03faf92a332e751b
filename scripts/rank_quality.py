#!/usr/bin/env python3
"""What a lower GEMS rank costs in test NDCG@10: `gems train` at two shared ranks over several
seeds, compared as `gems compare` compares methods.

    scripts/rank_quality.py --gems target/release/gems --ranks 32,16 --seeds 1-9 --out /tmp/ranks

Each (rank, seed) run goes to OUT/r{rank}-s{seed} (a run that already has its metrics.json is
kept, so an interrupted study resumes); arguments after `--` go to every `gems train`. For each
protocol (sampled, full ranking) and task it prints the mean ± std over seeds of test NDCG@10 at
each rank, in how many seeds the second rank scored higher, and a paired t-test over the test
requests of the per-request NDCG@10 averaged over the seeds (second rank minus first).
"""
import argparse
import json
import math
import os
import subprocess
import sys


def seeds_of(text):
    seeds = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        seeds += range(int(low), int(high or low) + 1)
    return seeds


def mean_std(values):
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gems", required=True, help="the gems binary")
    parser.add_argument("--ranks", default="32,16", help="two shared ranks, first the reference")
    parser.add_argument("--seeds", default="1-3", help="e.g. 1-9 or 1,2,5")
    parser.add_argument("--out", required=True, help="folder of the runs")
    parser.add_argument("train_args", nargs="*", help="more `gems train` arguments (after --)")
    args = parser.parse_args()
    ranks = [int(r) for r in args.ranks.split(",")]
    if len(ranks) != 2:
        sys.exit("--ranks takes two ranks")
    seeds = seeds_of(args.seeds)
    os.makedirs(args.out, exist_ok=True)
    metrics = {}
    for seed in seeds:
        for rank in ranks:
            run = os.path.join(args.out, f"r{rank}-s{seed}")
            path = os.path.join(run, "metrics.json")
            if not os.path.exists(path):
                if os.path.exists(run):
                    sys.exit(f"{run} holds an unfinished run: remove it to redo it")
                command = [args.gems, "train", "--seed", str(seed), "--shared-rank", str(rank),
                           "--out", run, *args.train_args]
                print("running", " ".join(command), file=sys.stderr, flush=True)
                with open(run + ".log", "w") as log:
                    subprocess.run(command, stdout=log, stderr=log, check=True)
            with open(path) as f:
                metrics[rank, seed] = json.load(f)

    first, second = ranks
    print(f"test NDCG@10, r_s = {first} against r_s = {second}, seeds {args.seeds}")
    for protocol in ("sampled", "full_ranking"):
        for task in ("search", "rec"):
            per_rank = {r: [metrics[r, s][protocol]["tasks"][task]["ndcg"]["10"] for s in seeds]
                        for r in ranks}
            sums = None
            for seed in seeds:
                a, b = metrics[first, seed]["per_request"], metrics[second, seed]["per_request"]
                if a["tasks"] != b["tasks"]:
                    sys.exit(f"seed {seed}: the two runs were tested on different requests")
                diffs = [y - x for t, x, y in zip(a["tasks"], a[protocol], b[protocol]) if t == task]
                sums = diffs if sums is None else [p + q for p, q in zip(sums, diffs)]
            diffs = [d / len(seeds) for d in sums]
            mean, std = mean_std(diffs)
            t = f"{mean / (std / math.sqrt(len(diffs))):+.2f}" if std > 0 else "n/a"
            higher = sum(y > x for x, y in zip(per_rank[first], per_rank[second]))
            (m1, s1), (m2, s2) = mean_std(per_rank[first]), mean_std(per_rank[second])
            print(f"{protocol:12} {task:6}  {m1:.3f} ± {s1:.3f}  {m2:.3f} ± {s2:.3f}  "
                  f"difference {mean:+.4f}, t = {t} over {len(diffs)} requests; "
                  f"r_s = {second} higher in {higher} of {len(seeds)} seeds")


if __name__ == "__main__":
    main()
