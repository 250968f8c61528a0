#!/usr/bin/env bash
# `orcjit link` against llvm-jitlink-19 on the same objects and workloads, measured with the
# shared peer harness (../shared/bench: same ptime, same interleaving, output checked against
# the native build), RUNS runs each (default 5), medians printed as a markdown table.
#
# Usage: bench/link.sh            Env: PROGRAMS (default: lua), OPTS (default: O2), RUNS,
#                                      PEER_BENCH (default: ../shared/bench), THREADS (1 2)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
PEER_BENCH=${PEER_BENCH:-$root/../shared/bench}
export PROGRAMS=${PROGRAMS:-lua} OPTS=${OPTS:-O2}
threads_list=${THREADS:-1 2}
source "$PEER_BENCH/common.sh"
source "$PEER_BENCH/lib_measure.sh"
require_tools
(cd "$root" && cargo build --release -q -p orcjit)
orcjit="$root/target/release/orcjit"
bash "$PEER_BENCH/corpus.sh" >&2
mkdir -p "$RUNS_DIR" "$RESULTS"
export FORCE=1

for prog in $PROGRAMS; do
  exe="$BUILD/$prog/native/$(exe_of "$prog")"
  while IFS='|' read -r workload args; do
    [[ "$workload" =~ ${WORKLOAD_FILTER:-.} ]] || continue
    read -r -a argv <<< "$args"
    record_expected "$workload" "$exe" "${argv[@]}"
    group_begin
    add_config "$workload" "$prog" native native native -- "$exe" "${argv[@]}"
    for opt in $(opts_of "$prog"); do
      dir="$BUILD/$prog/$opt"
      for shape in perfile whole; do
        if [ "$shape" = perfile ]; then objs=("$dir"/obj/*.o); else objs=("$dir/whole.o"); fi
        add_config "$workload" "$prog" "$opt" "$shape" jitlink -- "$LLVM_JITLINK" "${objs[@]}" --args "$(exe_of "$prog")" "${argv[@]}"
        for t in $threads_list; do
          add_config "$workload" "$prog" "$opt" "$shape" "orcjit-link-t$t" -- "$orcjit" link --threads "$t" "${objs[@]}" -- "${argv[@]}"
        done
      done
    done
    group_run
  done < <(workloads_of "$prog")
done

out="$RESULTS/orcjit-link-raw.tsv"
collect_results "$out" '^(native|jitlink|orcjit-link-t[0-9]+)$'
python3 - "$out" <<'PY'
import csv, sys, statistics
rows = [r for r in csv.reader(open(sys.argv[1]), delimiter='\t')][1:]
cells, native = {}, {}
for r in rows:
    workload, prog, opt, shape, mode, run, wall, user, sys_, rss, status, ok = r[:12]
    if ok != '1':
        continue
    if mode == 'native':
        native.setdefault(workload, []).append(float(wall))
        continue
    cells.setdefault((workload, opt, shape), {}).setdefault(mode, []).append((float(wall), int(rss)))
modes = sorted({m for c in cells.values() for m in c}, key=lambda m: (m != 'jitlink', m))
def fmt(v):
    return f"{v*1000:.1f} ms" if v < 1 else f"{v:.2f} s"
print("| workload | bitcode | shape | native wall | " + " | ".join(f"{m} wall / peak RSS" for m in modes) + " | " +
      " | ".join(f"{m} / jitlink" for m in modes if m != 'jitlink') + " |")
print("|---|---|---|---:|" + "---:|" * (2 * len(modes) - 1))
for (workload, opt, shape), c in sorted(cells.items()):
    med = {m: (statistics.median(w for w, _ in v), statistics.median(r for _, r in v) / 1024) for m, v in c.items()}
    cols = [f"{fmt(med[m][0])} / {med[m][1]:.0f} MB" if m in med else "FAIL" for m in modes]
    ratios = [f"{med[m][0] / med['jitlink'][0]:.2f}x" if m in med and 'jitlink' in med else "-" for m in modes if m != 'jitlink']
    nat = fmt(statistics.median(native[workload])) if workload in native else "-"
    print(f"| {workload} | {opt} | {shape} | {nat} | " + " | ".join(cols) + " | " + " | ".join(ratios) + " |")
PY
