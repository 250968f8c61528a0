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
export PROGRAMS=${PROGRAMS:-lua sqlite} OPTS=${OPTS:-O2}
codegen=${CODEGEN:-2}
source "$(dirname "$0")/lib.sh"
cache_root=$(mktemp -d)
trap 'rm -rf "$cache_root"' EXIT

for prog in $PROGRAMS; do
  driver=$(driver_of "$prog")
  while IFS='|' read -r workload args; do
    [[ "$workload" =~ ${WORKLOAD_FILTER:-.} ]] || continue
    begin_workload "$prog" "$workload" "$args"
    for opt in $(opts_of "$prog"); do
      perfile_modules "$BUILD/$prog/$opt" "$driver"
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
python3 "$root/bench/table.py" "$out" --modes lli,orcjit-t1,orcjit-t2,orcjit-warm --ratio orcjit-t1/lli --ratio orcjit-t2/lli --warm orcjit-warm
