#!/usr/bin/env python3
# Bytes per optimizer step for data-parallel GEMS, from the real shapes.
F = 4  # f32
T = 2  # tasks
RS, RT, P, Q = 128, 64, 8, 1   # shared rank, task rank, oversample, power iterations

def t5_base():
    d, ff, L = 768, 3072, 12
    mats = []
    for _ in range(L):  # encoder: self-attn q k v o, wi, wo
        mats += [(d, d)] * 4 + [(d, ff), (ff, d)]
    for _ in range(L):  # decoder: self-attn q k v o, cross-attn q k v o, wi, wo
        mats += [(d, d)] * 8 + [(d, ff), (ff, d)]
    other = 32128 * d + (2 * L + 1 + 3 * L + 1) * d + 2 * 32 * 12  # shared emb (tied), norms, rel. bias
    return mats, other

def qwen05():
    d, ff, L, kv = 896, 4864, 24, 128
    mats = []
    for _ in range(L):
        mats += [(d, d), (d, kv), (d, kv), (d, d), (d, ff), (d, ff), (ff, d)]
    other = 151936 * d + L * (d + 2 * kv) + (2 * L + 1) * d  # tied embedding, q/k/v biases, norms
    return mats, other

def lowrank(m, n):
    s, l = min(m, n), max(m, n)
    rs = min(RS, s); rt = min(RT, s - rs)
    return min((rs + T * rt) * l, m * n)   # never more than the full matrix

def sketch(m, n):
    s, l = min(m, n), max(m, n)
    out = 0
    for r, count in [(min(RS, s), 1), (min(RT, s - min(RS, s)), T)]:
        if r == 0: continue
        k = min(r + P, s)
        out += count * k * ((1 + Q) * s + Q * l + l)   # Y, (Z, Y) per power iteration, B
    return min(out, T * m * n)   # or send the task gradients whole

for name, (mats, other) in [("T5-base", t5_base()), ("Qwen2.5-0.5B", qwen05())]:
    proj = sum(m * n for m, n in mats)
    total = proj + other
    lr = sum(lowrank(m, n) for m, n in mats)
    sk = sum(sketch(m, n) for m, n in mats)
    print(f"{name}: {len(mats)} projected matrices, {proj:,} projected + {other:,} other = {total:,} params")
    print(f"  merged full gradient (plain DP):     {total:,} floats = {total*F/1e6:,.1f} MB")
    print(f"  per-task full gradients (T={T}):      {T*total:,} floats = {T*total*F/1e6:,.1f} MB")
    print(f"  low-rank coords of projected:        {lr:,} floats = {lr*F/1e6:,.1f} MB (full {proj*F/1e6:,.1f} MB)")
    print(f"  + other params merged full:          {other:,} floats = {other*F/1e6:,.1f} MB")
    print(f"  = low-rank step:                     {(lr+other)*F/1e6:,.1f} MB")
    print(f"  refresh sketches (extra, every 200): {sk:,} floats = {sk*F/1e6:,.1f} MB -> {sk*F/1e6/200:,.2f} MB/step amortised")
    for mm in sorted(set(mats)):
        print(f"    {mm}: full {mm[0]*mm[1]:,} lowrank {lowrank(*mm):,} sketch {sketch(*mm):,} count {mats.count(mm)}")
