#!/usr/bin/env python3
"""Medians of a shared-harness raw TSV (collect_results) as a markdown table.

Each row is a workload and bitcode level (and shape, with --by-shape); each mode a column
"median wall / median peak RSS" (FAIL where no run was correct); then one column per --ratio
NUM/DEN (median wall of NUM over DEN's), and with --warm MODE the bound the warm-cache goal
uses: MODE's wall over (1.2 x native + 0.1 s).

Usage: table.py RAW.tsv --modes a,b,c [--ratio b/a]... [--by-shape] [--warm MODE] [--ms-digits N]
       (--modes auto: every mode seen, FIRST first, with --first FIRST)
"""
import argparse
import csv
import statistics


def main():
    p = argparse.ArgumentParser()
    p.add_argument("raw")
    p.add_argument("--modes", required=True)
    p.add_argument("--first", default=None)
    p.add_argument("--ratio", action="append", default=[])
    p.add_argument("--by-shape", action="store_true")
    p.add_argument("--warm", default=None)
    p.add_argument("--ms-digits", type=int, default=0)
    a = p.parse_args()

    cells, native = {}, {}
    rows = list(csv.reader(open(a.raw), delimiter="\t"))[1:]
    for r in rows:
        workload, prog, opt, shape, mode, run, wall, user, sys_, rss, status, ok = r[:12]
        if ok != "1":
            continue
        if mode == "native":
            native.setdefault(workload, []).append(float(wall))
            continue
        key = (workload, opt, shape) if a.by_shape else (workload, opt)
        cells.setdefault(key, {}).setdefault(mode, []).append((float(wall), int(rss)))

    if a.modes == "auto":
        modes = sorted({m for c in cells.values() for m in c}, key=lambda m: (m != a.first, m))
    else:
        modes = a.modes.split(",")
    ratios = [tuple(r.split("/")) for r in a.ratio]

    def fmt(v):
        return f"{v * 1000:.{a.ms_digits}f} ms" if v < 1 else f"{v:.2f} s"

    head = ["workload", "bitcode"] + (["shape"] if a.by_shape else []) + ["native"]
    head += [f"{m} wall / RSS" for m in modes] + [f"{n} / {d}" for n, d in ratios]
    if a.warm:
        head.append(f"{a.warm} / (1.2 native + 0.1 s)")
    left = 3 if a.by_shape else 2
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * left + "---:|" * (len(head) - left))
    for key, c in sorted(cells.items()):
        med = {m: (statistics.median(w for w, _ in v), statistics.median(r for _, r in v) / 1024) for m, v in c.items()}
        nat = statistics.median(native[key[0]]) if key[0] in native else None
        cols = list(key) + [fmt(nat) if nat else "-"]
        cols += [f"{fmt(med[m][0])} / {med[m][1]:.0f} MB" if m in med else "FAIL" for m in modes]
        cols += [f"{med[n][0] / med[d][0]:.2f}x" if n in med and d in med else "-" for n, d in ratios]
        if a.warm:
            cols.append(f"{med[a.warm][0] / (1.2 * nat + 0.1):.2f}" if a.warm in med and nat else "-")
        print("| " + " | ".join(cols) + " |")


if __name__ == "__main__":
    main()
