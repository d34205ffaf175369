#!/usr/bin/env python3
"""Interleaved A/B of the engine against itself: medians per question of two sets of
`questions run --out` JSON files (rounds run alternately, e.g. with and without
`--dictionaries false` or `--without-rules R`), the ratio B / A, and the sums.

usage: ab.py 'A-*.json' 'B-*.json' [--a-label A] [--b-label B]
"""
import argparse
import glob
import json
import statistics


def runs(pattern):
    """Every run's milliseconds by question, over the files `pattern` matches."""
    files = sorted(glob.glob(pattern))
    if not files:
        raise SystemExit(f"no files match {pattern}")
    out = {}
    for f in files:
        for q in json.load(open(f))["queries"]:
            out.setdefault(q["name"], []).extend(q["flowlake_ms"])
    return out, len(files)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--a-label", default="A")
    p.add_argument("--b-label", default="B")
    args = p.parse_args()
    (a, na), (b, nb) = runs(args.a), runs(args.b)
    print(f"{na} rounds of {args.a_label}, {nb} of {args.b_label}; medians of every run")
    print(f"| question | {args.a_label} ms | {args.b_label} ms | {args.b_label} ÷ {args.a_label} |")
    print("|---|---:|---:|---:|")
    sums = {}
    for name in a:
        if name not in b:
            continue
        ma, mb = statistics.median(a[name]), statistics.median(b[name])
        group = "ad-hoc set" if name.startswith("adhoc/") else "questions"
        sa, sb = sums.get(group, (0.0, 0.0))
        sums[group] = (sa + ma, sb + mb)
        print(f"| {name} | {ma:.0f} | {mb:.0f} | {mb / ma:.2f} |")
    total = (sum(s[0] for s in sums.values()), sum(s[1] for s in sums.values()))
    for label, (sa, sb) in [*sums.items(), ("all", total)]:
        print(f"| **sum, {label}** | {sa:.0f} | {sb:.0f} | **{sb / sa:.2f}** |")


if __name__ == "__main__":
    main()
