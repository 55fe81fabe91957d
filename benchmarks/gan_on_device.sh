#!/usr/bin/env bash
# The bundle generator's training steps on a lent GPU (the `device` tool), in one call:
#
#   run(command="bash benchmarks/gan_on_device.sh 450", timeout_s=600)
#
# Arguments after the first go to `latentedit train gan` after the recipe's own, so an arm can change
# it (a later flag wins; --world-prior adds), e.g. the conditional arm:
#   bash benchmarks/gan_on_device.sh 450 --labels glasses,mask,hair_style,beard --label-lr-mul 10
#
# then, here: python benchmarks/training_curves.py snapshot --run DIR --bundle DIR/snapshots/NAME
# on each returned snapshot (files_at/snapshots/...), and continue on CPU with --init-from the best.
#
# Warm start from the committed snapshot (checkpoints/training/gan_v2: G, G_ema and D, fresh Adam,
# as every session's CPU run starts) with the CPU line's recipe (2048 / 256, batch 32, R1 gamma 0.3,
# lr 0.000125, EMA 40 kimg, the raised accessory prior, fp32; checkpoints/README.md's command), trains for TRAIN_S seconds (first argument), then copies the
# latest bundle (saved every SNAPSHOT_KIMG, as snapshots/latest) and the last whole kept snapshot
# (G, D, bundle.json each, in fp16), the log and the last samples to $OUT: 8 files, each under the
# tool's 16 MiB. The machine's image brings its own python3 and torch; the package runs from this
# tree (PYTHONPATH), its dependencies are all in that image. The trainer picks the GPU itself
# (`init_distributed`); LATENTEDIT_OPS=ref (default here) skips compiling csrc/ at start,
# LATENTEDIT_OPS=auto builds it first (a minute or more of the call). SNAPSHOT_KIMG / KEEP_KIMG
# (default 10 / 20) exist to try the script on CPU in a few minutes (kept snapshots are named by
# whole kimg, so there they overwrite each other, and the latest bundle comes back beside one):
#   OUT=$(mktemp -d) SNAPSHOT_KIMG=0.064 KEEP_KIMG=0.064 bash benchmarks/gan_on_device.sh 120
# Exit status: 0 when the time limit stopped the training and what it made came back; 2 when
# nothing usable was made; 3 when the trainer failed before the limit (what it saved comes back).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2  # the repository root
TRAIN_S=${1:-450}
shift $(( $# > 0 ? 1 : 0 ))  # the rest are the arm's trainer flags
: "${OUT:?OUT must name the folder the results go to}"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 LATENTEDIT_OPS=${LATENTEDIT_OPS:-ref}
RUN=${RUN:-/tmp/gan_on_device}
case "$RUN" in
    /tmp/?*) ;;
    *) echo "error: RUN must be a folder under /tmp (it is emptied first), not $RUN"; exit 2 ;;
esac
rm -rf "$RUN" && mkdir -p "$RUN" "$OUT/snapshots"
cp checkpoints/training/log.jsonl "$RUN/"  # the run's log continues the committed one's history
python3 -c 'import torch; print("torch", torch.__version__, "|", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only")'
# The CLI turns timeout's SIGINT into one "aborted" line; timeout then exits 124.
timeout -s INT -k 30 "$TRAIN_S" python3 -m latentedit train gan --out "$RUN" \
    --init-from checkpoints/training/gan_v2 --channel-base 2048 --channel-max 256 --batch 32 \
    --r1-gamma 0.3 --lr 0.000125 --ema-kimg 40 --precision fp32 --kimg 100000 \
    --world-prior p_glasses=0.24 --world-prior p_sunglasses=0.165 --world-prior p_mask=0.175 \
    --snapshot-kimg "${SNAPSHOT_KIMG:-10}" --keep-kimg "${KEEP_KIMG:-20}" "$@"
trained=$?
cp "$RUN"/log.jsonl "$OUT/"
samples=$(ls "$RUN"/samples_*k.png 2>/dev/null | tail -n 1)
[ -n "$samples" ] && cp "$samples" "$OUT/"
# Each file is written atomically and a bundle's bundle.json (holding every file's sha256) last, so a
# folder stopped mid-write has no bundle.json or fails convert's checks: either way it is skipped.
mapfile -t whole < <(for d in "$RUN"/snapshots/*k; do [ -f "$d/bundle.json" ] && echo "$d"; done)
returned=0
for snap in "$RUN/bundle" "${whole[@]: -1}"; do  # fp16, as the committed snapshot is: fp32 G is 22 MB
    [ -f "$snap/bundle.json" ] || continue
    name=$(basename "$snap")
    [ "$name" = bundle ] && name=latest
    if python3 -m latentedit convert "$snap" "$OUT/snapshots/$name" --fp16; then
        returned=$((returned + 1))
    else
        echo "note: $snap could not be converted (stopped mid-write?): skipped"
    fi
done
ls -la "$OUT" "$OUT"/snapshots/*
if [ "$returned" -eq 0 ]; then
    echo "error: no whole snapshot after $TRAIN_S s (see the trainer's output above)"
    exit 2
fi
if [ "$trained" -ne 124 ] && [ "$trained" -ne 0 ]; then
    echo "error: the trainer exited with status $trained before the time limit"
    exit 3
fi
