#!/usr/bin/env bash
# Speculation: `orcjit run --lazy=function --threads 2` under each --speculate policy on the
# same bitcode and workloads, through the shared peer harness (../shared/bench: same ptime,
# interleaved rounds, every run's output checked against the native build), RUNS runs each
# (default 5); medians printed as a markdown table. The profile each `profile` run replays is
# recorded once, by a run of the same workload, before measuring.
#
# Usage: bench/speculate.sh       Env: PROGRAMS (default: lua sqlite), OPTS (default: O2), RUNS,
#                                 PEER_BENCH, WORKLOAD_FILTER (regex on workload names)
set -euo pipefail
export PROGRAMS=${PROGRAMS:-lua sqlite} OPTS=${OPTS:-O2}
source "$(dirname "$0")/lib.sh"
profiles=$(mktemp -d)
trap 'rm -rf "$profiles"' EXIT

for prog in $PROGRAMS; do
  driver=$(driver_of "$prog")
  while IFS='|' read -r workload args; do
    [[ "$workload" =~ ${WORKLOAD_FILTER:-.} ]] || continue
    begin_workload "$prog" "$workload" "$args"
    for opt in $(opts_of "$prog"); do
      perfile_modules "$BUILD/$prog/$opt" "$driver"
      run=("$orcjit" run "${extra[@]}")
      profile="$profiles/$workload-$opt"
      (cd "$PEER_DIR" && "${run[@]}" --record-profile "$profile" "$main" "${argv[@]}" > /dev/null)
      for policy in none static; do
        add_config "$workload" "$prog" "$opt" perfile "$policy" -- "${run[@]}" --threads 2 --speculate=$policy "$main" "${argv[@]}"
      done
      add_config "$workload" "$prog" "$opt" perfile profile -- "${run[@]}" --threads 2 --profile "$profile" "$main" "${argv[@]}"
    done
    group_run
  done < <(workloads_of "$prog")
done

out="$RESULTS/orcjit-speculate-raw.tsv"
collect_results "$out" '^(native|none|static|profile)$'
python3 "$root/bench/table.py" "$out" --modes none,static,profile --ratio static/none --ratio profile/none
