#!/usr/bin/env bash
# Records made on a CUDA machine without network access, as one command from the repository root:
#   TASKS=shapes-superclasses METHODS=simclr,clip SEEDS=5 TRIALS=1 WORKERS=6 bash benchmarks/gpu_records.sh
# Runs `harness run --results results` with $WORKERS workers sharing $DEVICE (cuda:0; $EXTRA is passed on, e.g.
# --no-bf16), then packs the tasks' records and histories into $OUT/records.tar.gz, since the device tool
# returns at most 8 files. Unpack it at the repository root here and run `harness leaderboard --results results`.
set -o pipefail
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/records.log") 2>&1  # the log comes back even when the command is cut short
source "$(dirname "$0")/gpu_env.sh"
devices=$(python3 -c "print(','.join(['${DEVICE:-cuda:0}'] * int('${WORKERS:-4}')))")
# shellcheck disable=SC2086
timeout "${LIMIT_S:-540}" python3 -m harness.cli run --method "$METHODS" --task "$TASKS" --seeds "${SEEDS:-5}" \
  --trials "${TRIALS:-1}" --devices "$devices" --results results --no-progress $EXTRA
status=$?
folders=()
for task in ${TASKS//,/ }; do
  for kind in records history; do [ -d "results/$kind/$task" ] && folders+=("results/$kind/$task"); done
done
[ ${#folders[@]} -gt 0 ] && tar czf "$OUT/records.tar.gz" "${folders[@]}"
exit $status
