#!/usr/bin/env bash
# `orcjit link` against llvm-jitlink-19 on the same objects and workloads, measured with the
# shared peer harness (../shared/bench: same ptime, same interleaving, output checked against
# the native build), RUNS runs each (default 5), medians printed as a markdown table. Also
# `orcjit-llvm link` (the same command in the binary that loads libLLVM for `orcjit run`), 1 thread.
#
# Usage: bench/link.sh            Env: PROGRAMS (default: lua), OPTS (default: O2), RUNS,
#                                      PEER_BENCH (default: ../shared/bench), THREADS (1 2)
set -euo pipefail
export PROGRAMS=${PROGRAMS:-lua} OPTS=${OPTS:-O2}
threads_list=${THREADS:-1 2}
source "$(dirname "$0")/lib.sh"

for prog in $PROGRAMS; do
  while IFS='|' read -r workload args; do
    [[ "$workload" =~ ${WORKLOAD_FILTER:-.} ]] || continue
    begin_workload "$prog" "$workload" "$args"
    for opt in $(opts_of "$prog"); do
      dir="$BUILD/$prog/$opt"
      for shape in perfile whole; do
        if [ "$shape" = perfile ]; then objs=("$dir"/obj/*.o); else objs=("$dir/whole.o"); fi
        add_config "$workload" "$prog" "$opt" "$shape" jitlink -- "$LLVM_JITLINK" "${objs[@]}" --args "$(exe_of "$prog")" "${argv[@]}"
        for t in $threads_list; do
          add_config "$workload" "$prog" "$opt" "$shape" "orcjit-link-t$t" -- "$orcjit" link --threads "$t" "${objs[@]}" -- "${argv[@]}"
        done
        add_config "$workload" "$prog" "$opt" "$shape" "orcjit-llvm-link-t1" -- "$orcjit-llvm" link --threads 1 "${objs[@]}" -- "${argv[@]}"
      done
    done
    group_run
  done < <(workloads_of "$prog")
done

out="$RESULTS/orcjit-link-raw.tsv"
collect_results "$out" '^(native|jitlink|orcjit-link-t[0-9]+|orcjit-llvm-link-t1)$'
python3 "$root/bench/table.py" "$out" --by-shape --modes auto --first jitlink --ms-digits 1 $(for t in $threads_list; do printf -- '--ratio orcjit-link-t%s/jitlink ' "$t"; done) --ratio orcjit-llvm-link-t1/jitlink
