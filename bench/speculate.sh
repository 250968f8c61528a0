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
profiles=$(mktemp -d)
trap 'rm -rf "$profiles"' EXIT

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
modes = ['none', 'static', 'profile']
fmt = lambda v: f"{v*1000:.0f} ms" if v < 1 else f"{v:.2f} s"
print("| workload | bitcode | native | " + " | ".join(f"{m} wall / RSS" for m in modes) + " | static / none | profile / none |")
print("|---|---|---:|" + "---:|" * (len(modes) + 2))
for (workload, opt), c in sorted(cells.items()):
    med = {m: (statistics.median(w for w, _ in v), statistics.median(r for _, r in v) / 1024) for m, v in c.items()}
    nat = statistics.median(native[workload]) if workload in native else None
    cols = [f"{fmt(med[m][0])} / {med[m][1]:.0f} MB" if m in med else "FAIL" for m in modes]
    ratio = lambda m: f"{med[m][0] / med['none'][0]:.2f}x" if m in med and 'none' in med else "-"
    print(f"| {workload} | {opt} | {fmt(nat) if nat else '-'} | " + " | ".join(cols) + f" | {ratio('static')} | {ratio('profile')} |")
PY
