#!/usr/bin/env bash
# `orcjit run --lazy=none` against `lli-19 -jit-kind=orc` (eager ORC, same codegen level) on the same
# bitcode and workloads, measured with the shared peer harness (../shared/bench: same ptime,
# interleaving, output checked against the native build), RUNS runs each (default 5);
# medians printed as a markdown table. Modes: lli; orcjit with 1 and 2 threads, no cache;
# orcjit with a warm cache (filled once before measuring).
#
# Usage: bench/run.sh        Env: PROGRAMS (default: lua sqlite), OPTS (default: O2),
#                                 CODEGEN (-O level for both, default 2), RUNS, PEER_BENCH,
#                                 WORKLOAD_FILTER (regex on workload names)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
PEER_BENCH=${PEER_BENCH:-$root/../shared/bench}
export PROGRAMS=${PROGRAMS:-lua sqlite} OPTS=${OPTS:-O2}
codegen=${CODEGEN:-2}
source "$PEER_BENCH/common.sh"
source "$PEER_BENCH/lib_measure.sh"
require_tools
(cd "$root" && cargo build --release -q -p orcjit)
orcjit="$root/target/release/orcjit"
bash "$PEER_BENCH/corpus.sh" >&2
mkdir -p "$RUNS_DIR" "$RESULTS"
export FORCE=1
cache_root=$(mktemp -d)
trap 'rm -rf "$cache_root"' EXIT

for prog in $PROGRAMS; do
  exe="$BUILD/$prog/native/$(exe_of "$prog")"
  driver=$(driver_of "$prog")
  while IFS='|' read -r workload args; do
    [[ "$workload" =~ ${WORKLOAD_FILTER:-.} ]] || continue
    read -r -a argv <<< "$args"
    record_expected "$workload" "$exe" "${argv[@]}"
    group_begin
    add_config "$workload" "$prog" native native native -- "$exe" "${argv[@]}"
    for opt in $(opts_of "$prog"); do
      dir="$BUILD/$prog/$opt"
      extra=()
      for bc in "$dir"/bc/*.bc; do [ "$(basename "$bc" .bc)" = "$driver" ] || extra+=("--extra-module=$bc"); done
      main="$dir/bc/$driver.bc"
      add_config "$workload" "$prog" "$opt" perfile lli -- "$LLI" -jit-kind=orc "-O$codegen" "${extra[@]}" "$main" "${argv[@]}"
      for t in 1 2; do
        add_config "$workload" "$prog" "$opt" perfile "orcjit-t$t" -- "$orcjit" run "-O$codegen" --lazy=none --threads "$t" "${extra[@]}" "$main" "${argv[@]}"
      done
      cache="$cache_root/$prog-$opt"
      (cd "$PEER_DIR" && "$orcjit" run "-O$codegen" --lazy=none --cache "$cache" "${extra[@]}" "$main" "${argv[@]}" > /dev/null)
      add_config "$workload" "$prog" "$opt" perfile orcjit-warm -- "$orcjit" run "-O$codegen" --lazy=none --threads 2 --cache "$cache" "${extra[@]}" "$main" "${argv[@]}"
    done
    group_run
  done < <(workloads_of "$prog")
done

out="$RESULTS/orcjit-run-raw.tsv"
collect_results "$out" '^(native|lli|orcjit-t[0-9]+|orcjit-warm)$'
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
    cells.setdefault((workload, opt), {}).setdefault(mode, []).append((float(wall), int(rss)))
modes = ['lli', 'orcjit-t1', 'orcjit-t2', 'orcjit-warm']
fmt = lambda v: f"{v*1000:.0f} ms" if v < 1 else f"{v:.2f} s"
print("| workload | bitcode | native | " + " | ".join(f"{m} wall / RSS" for m in modes) + " | t1 / lli | t2 / lli | warm / (1.2 native + 0.1 s) |")
print("|---|---|---:|" + "---:|" * (len(modes) + 3))
for (workload, opt), c in sorted(cells.items()):
    med = {m: (statistics.median(w for w, _ in v), statistics.median(r for _, r in v) / 1024) for m, v in c.items()}
    nat = statistics.median(native[workload]) if workload in native else None
    cols = [f"{fmt(med[m][0])} / {med[m][1]:.0f} MB" if m in med else "FAIL" for m in modes]
    ratio = lambda m: f"{med[m][0] / med['lli'][0]:.2f}x" if m in med and 'lli' in med else "-"
    warm = f"{med['orcjit-warm'][0] / (1.2 * nat + 0.1):.2f}" if 'orcjit-warm' in med and nat else "-"
    print(f"| {workload} | {opt} | {fmt(nat) if nat else '-'} | " + " | ".join(cols) + f" | {ratio('orcjit-t1')} | {ratio('orcjit-t2')} | {warm} |")
PY
