# What the bench scripts share; source it from one (after setting PROGRAMS and OPTS defaults).
# Sources the shared peer harness (../shared/bench, or PEER_BENCH), builds orcjit and the
# corpus, and defines $root, $orcjit and the helper below.

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PEER_BENCH=${PEER_BENCH:-$root/../shared/bench}
source "$PEER_BENCH/common.sh"
source "$PEER_BENCH/lib_measure.sh"
require_tools
(cd "$root" && cargo build --release -q -p orcjit)
orcjit="$root/target/release/orcjit"
bash "$PEER_BENCH/corpus.sh" >&2
mkdir -p "$RUNS_DIR" "$RESULTS"
export FORCE=1

# perfile_modules DIR DRIVER: sets `main` (DIR/bc/DRIVER.bc) and `extra` (--extra-module=X for
# every other module of DIR/bc), the per-file shape of a program's bitcode.
perfile_modules() {
  local dir=$1 driver=$2 bc
  extra=()
  for bc in "$dir"/bc/*.bc; do [ "$(basename "$bc" .bc)" = "$driver" ] || extra+=("--extra-module=$bc"); done
  main="$dir/bc/$driver.bc"
}

# begin_workload PROG WORKLOAD ARGS: sets `exe` (PROG's native build) and `argv` (ARGS split),
# records the native output the other runs are checked against, and starts the workload's
# group of configurations with the native one.
begin_workload() {
  exe="$BUILD/$1/native/$(exe_of "$1")"
  read -r -a argv <<< "$3"
  record_expected "$2" "$exe" "${argv[@]}"
  group_begin
  add_config "$2" "$1" native native native -- "$exe" "${argv[@]}"
}
