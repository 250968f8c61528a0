#!/usr/bin/env bash
# Runs jit-core's dependency-tracking and lookup benchmark beside LLVM 19's ORC on the same work
# (../shared/bench/orc-deps), interleaved, RUNS times each, and prints the medians as a
# markdown table (ns per symbol, or per lookup).
#
# Usage: jit-core/bench/compare.sh [N...]      (default: 1000 10000 100000 1000000)
# Env:   RUNS (default 5), ORC_MAX_CYCLE (largest N for ORC's quadratic cycle shape, default 2000),
#        ORC_MAX (largest N for ORC's other shapes, default 100000: ORC needs ~20 us per symbol).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
anchor_src=${ORC_DEPS_DIR:-$root/../shared/bench/orc-deps}
runs=${RUNS:-5}
Ns=${*:-1000 10000 100000 1000000}
orc_max=${ORC_MAX:-100000}
orc_max_cycle=${ORC_MAX_CYCLE:-2000}

cargo build --release -q -p jit-core --example deps --manifest-path "$root/Cargo.toml"
ours=$root/target/release/examples/deps
cfg=/usr/lib/llvm-19/bin/llvm-config
anchor=${TMPDIR:-/tmp}/orc_deps_anchor
if [ ! -x "$anchor" ] || [ "$anchor_src/orc_deps.cpp" -nt "$anchor" ]; then
  clang++-19 -O2 -std=c++17 $($cfg --cxxflags) "$anchor_src/orc_deps.cpp" -o "$anchor" $($cfg --ldflags) -lLLVM-19
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for shape in chain dag cycle; do
  for n in $Ns; do
    for r in $(seq "$runs"); do
      "$ours" "$shape" "$n" >> "$tmp/ours.$shape.$n"
      "$ours" "$shape" "$n" units-only >> "$tmp/units.$shape.$n"
      limit=$orc_max; [ "$shape" = cycle ] && limit=$orc_max_cycle
      if [ "$n" -le "$limit" ]; then "$anchor" "$n" "$shape" >> "$tmp/orc.$shape.$n"; fi
    done
  done
done

median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) print "-"; else if (NR%2) print a[(NR+1)/2]; else printf "%.1f\n", (a[NR/2]+a[NR/2+1])/2}'; }
col() { # file, row label, field
  [ -f "$1" ] && awk -F'\t' -v l="$2" '$2==l {print $5}' "$1" | median || echo "-"
}
# "units alone": the benchmark's own share of the orcjit column (`deps SHAPE N units-only`).
echo "| work | N | orcjit ns | units alone ns | LLVM 19 ORC ns | ORC / orcjit |"
echo "|---|---:|---:|---:|---:|---:|"
for shape in chain dag cycle; do
  for n in $Ns; do
    o=$(col "$tmp/ours.$shape.$n" "$shape"); l=$(col "$tmp/orc.$shape.$n" "$shape")
    u=$(col "$tmp/units.$shape.$n" "$shape-units-only")
    ratio=$(awk -v o="$o" -v l="$l" 'BEGIN { if (l == "-" || o == "-" || o == 0) print "-"; else printf "%.0fx", l/o }')
    echo "| $shape (per symbol) | $n | $o | $u | $l | $ratio |"
  done
done
first=$(echo $Ns | awk '{print $1}')
o=$(cat "$tmp"/ours.chain.* | awk -F'\t' '$2=="lookup-ready" {print $5}' | median)
l=$(cat "$tmp"/orc.chain.* 2>/dev/null | awk -F'\t' '$2=="lookup-ready" {print $5}' | median)
echo "| blocking lookup of a Ready symbol | 100000 | $o | - | $l | $(awk -v o="$o" -v l="$l" 'BEGIN {printf "%.0fx", l/o}') |"
a=$(cat "$tmp"/ours.* | awk -F'\t' '$2=="async-lookups-2-threads" {print $5}' | median)
echo "| async lookups from 2 threads while materializing (2-thread pool) | 100000 | $a | - | - | - |"
for shape in chain dag cycle; do
  big=$(col "$tmp/ours.$shape.1000000" "$shape"); small=$(col "$tmp/ours.$shape.100000" "$shape")
  [ "$big" != "-" ] && [ "$small" != "-" ] && echo "flatness $shape: t(1e6)/t(1e5) = $(awk -v b="$big" -v s="$small" 'BEGIN {printf "%.1f", 10*b/s}')"
done
