#!/usr/bin/env bash
# The bundle generator's training steps on a lent GPU (the `device` tool), in one call:
#
#   run(command="bash benchmarks/gan_on_device.sh 450", timeout_s=600)
#
# then, here: python benchmarks/training_curves.py snapshot --run DIR --bundle DIR/snapshots/NNNNNNk
# on each returned snapshot (files_at/snapshots/...), and continue on CPU with --init-from the best.
#
# Warm start from the committed snapshot (checkpoints/training/gan_v2: G, G_ema and D, fresh Adam,
# as every session's CPU run starts) with the CPU line's recipe (2048 / 256, batch 32, R1 gamma 0.1,
# lr 0.00025, EMA 40 kimg, fp32), trains for TRAIN_S seconds (first argument), then copies the last
# two kept snapshots (G, D, bundle.json each), the log and the last samples to $OUT: 8 files, each
# under the tool's 16 MiB. The machine's image brings its own python3 and torch; the package runs
# from this tree (PYTHONPATH), its dependencies are all in that image. The trainer picks the GPU
# itself (`init_distributed`); LATENTEDIT_OPS=ref (default here) skips compiling csrc/ at start,
# LATENTEDIT_OPS=auto builds it first (a minute or more of the call). SNAPSHOT_KIMG / KEEP_KIMG
# (default 10 / 20) exist to try the script on CPU in a few minutes:
#   OUT=$(mktemp -d) SNAPSHOT_KIMG=0.064 KEEP_KIMG=0.064 bash benchmarks/gan_on_device.sh 120
set -uo pipefail
TRAIN_S=${1:-450}
: "${OUT:?OUT must name the folder the results go to}"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 LATENTEDIT_OPS=${LATENTEDIT_OPS:-ref}
RUN=${RUN:-/tmp/gan_on_device}
rm -rf "$RUN" && mkdir -p "$RUN"
cp checkpoints/training/log.jsonl "$RUN/"  # the run's log continues the committed one's history
python3 - <<'EOF'
import torch
print("torch", torch.__version__, "| device:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only")
EOF
# SIGINT: the trainer stops between steps' Python calls; every file it writes is written atomically,
# so the kept snapshots are whole whenever it stops.
timeout -s INT -k 30 "$TRAIN_S" python3 -m latentedit train gan --out "$RUN" \
    --init-from checkpoints/training/gan_v2 --channel-base 2048 --channel-max 256 --batch 32 \
    --r1-gamma 0.1 --lr 0.00025 --ema-kimg 40 --precision fp32 --kimg 100000 \
    --snapshot-kimg "${SNAPSHOT_KIMG:-10}" --keep-kimg "${KEEP_KIMG:-20}" 2>&1 | grep -v "^Traceback\|KeyboardInterrupt" | tail -n 30
kept=$(ls -d "$RUN"/snapshots/*k 2>/dev/null | tail -n 2)
if [ -z "$kept" ]; then
    echo "error: no snapshot was kept in $TRAIN_S s (see the log above)"
    exit 2
fi
mkdir -p "$OUT/snapshots"
for snap in $kept; do  # fp16, as the committed snapshot is: fp32 G is 22 MB, over the tool's 16 MiB a file
    python3 -m latentedit convert "$snap" "$OUT/snapshots/$(basename "$snap")" --fp16 || exit 2
done
cp "$RUN"/log.jsonl "$OUT/"
samples=$(ls "$RUN"/samples_*k.png 2>/dev/null | tail -n 1)
[ -n "$samples" ] && cp "$samples" "$OUT/"
ls -la "$OUT" "$OUT"/snapshots/*
