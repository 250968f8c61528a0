#!/usr/bin/env bash
# Lazy compilation: `orcjit run --lazy=...` against LLVM 19's lazy JIT on the same bitcode and
# workloads, through the shared peer harness (../shared/bench: same ptime, interleaved rounds,
# every run's output checked against the native build, a failing first run not repeated),
# RUNS runs each (default 5); medians printed as a markdown table.
#
# Peers (as issue 6 names them): Lua against `lli-19 -jit-kind=orc-lazy -per-module-lazy`
# (per-function orc-lazy crashes or hangs on the stock Lua build), SQLite against
# `lli-19 -jit-kind=orc-lazy`. orcjit modes: --lazy=function with 1 and 2 threads,
# --lazy=module and --lazy=none with 2 threads, all at the same codegen level as lli (-O2);
# and --lazy=function -O0 with 2 threads (FastISel: the cheap tier, for reference).
#
# Usage: bench/lazy.sh       Env: PROGRAMS (default: lua sqlite), OPTS (default: O2), RUNS,
#                                 PEER_BENCH, WORKLOAD_FILTER (regex on workload names)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
PEER_BENCH=${PEER_BENCH:-$root/../shared/bench}
export PROGRAMS=${PROGRAMS:-lua sqlite} OPTS=${OPTS:-O2}
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
  driver=$(driver_of "$prog")
  case $prog in
    sqlite) peer=(-jit-kind=orc-lazy) ;;
    *) peer=(-jit-kind=orc-lazy -per-module-lazy) ;;
  esac
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
      run=("$orcjit" run "${extra[@]}")
      add_config "$workload" "$prog" "$opt" perfile lli-lazy -- "$LLI" "${peer[@]}" "${extra[@]}" "$main" "${argv[@]}"
      add_config "$workload" "$prog" "$opt" perfile function-t1 -- "${run[@]}" -O2 --lazy=function --threads 1 "$main" "${argv[@]}"
      add_config "$workload" "$prog" "$opt" perfile function-t2 -- "${run[@]}" -O2 --lazy=function --threads 2 "$main" "${argv[@]}"
      add_config "$workload" "$prog" "$opt" perfile module-t2 -- "${run[@]}" -O2 --lazy=module --threads 2 "$main" "${argv[@]}"
      add_config "$workload" "$prog" "$opt" perfile none-t2 -- "${run[@]}" -O2 --lazy=none --threads 2 "$main" "${argv[@]}"
      add_config "$workload" "$prog" "$opt" perfile function-O0-t2 -- "${run[@]}" -O0 --lazy=function --threads 2 "$main" "${argv[@]}"
    done
    group_run
  done < <(workloads_of "$prog")
done

out="$RESULTS/orcjit-lazy-raw.tsv"
collect_results "$out" '^(native|lli-lazy|function-t[12]|module-t2|none-t2|function-O0-t2)$'
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
modes = ['lli-lazy', 'function-t1', 'function-t2', 'module-t2', 'none-t2', 'function-O0-t2']
fmt = lambda v: f"{v*1000:.0f} ms" if v < 1 else f"{v:.2f} s"
print("| workload | bitcode | native | " + " | ".join(f"{m} wall / RSS" for m in modes) + " | function-t2 / lli-lazy |")
print("|---|---|---:|" + "---:|" * (len(modes) + 1))
for (workload, opt), c in sorted(cells.items()):
    med = {m: (statistics.median(w for w, _ in v), statistics.median(r for _, r in v) / 1024) for m, v in c.items()}
    nat = statistics.median(native[workload]) if workload in native else None
    cols = [f"{fmt(med[m][0])} / {med[m][1]:.0f} MB" if m in med else "FAIL" for m in modes]
    ratio = f"{med['function-t2'][0] / med['lli-lazy'][0]:.2f}x" if 'function-t2' in med and 'lli-lazy' in med else "-"
    print(f"| {workload} | {opt} | {fmt(nat) if nat else '-'} | " + " | ".join(cols) + f" | {ratio} |")
PY
