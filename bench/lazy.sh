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
export PROGRAMS=${PROGRAMS:-lua sqlite} OPTS=${OPTS:-O2}
source "$(dirname "$0")/lib.sh"

for prog in $PROGRAMS; do
  driver=$(driver_of "$prog")
  case $prog in
    sqlite) peer=(-jit-kind=orc-lazy) ;;
    *) peer=(-jit-kind=orc-lazy -per-module-lazy) ;;
  esac
  while IFS='|' read -r workload args; do
    [[ "$workload" =~ ${WORKLOAD_FILTER:-.} ]] || continue
    begin_workload "$prog" "$workload" "$args"
    for opt in $(opts_of "$prog"); do
      perfile_modules "$BUILD/$prog/$opt" "$driver"
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
python3 "$root/bench/table.py" "$out" --modes lli-lazy,function-t1,function-t2,module-t2,none-t2,function-O0-t2 --ratio function-t2/lli-lazy
