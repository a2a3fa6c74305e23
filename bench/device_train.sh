#!/usr/bin/env bash
# Train one estimation recipe on a lent CUDA machine for a fixed wall time, with the learning
# rate annealed over that time (model.scheduler=cosine_time), and bring back its checkpoints,
# metrics and config:
#
#   OUT=/some/folder TRAIN_SECONDS=420 bash bench/device_train.sh \
#       experiment=est_multiband_compressor input_mode=dry_wet   (any train.py overrides)
#
# The machine's setup (carried packages and wheels) is device_check.sh's. The run's test step
# uses a few clips and no refinement (the checkpoint is evaluated afterwards with
# bench/estimation.py). Writes to $OUT: train.log, metrics.csv, config.yaml, checkpoints/.
# TRAINER=cpu runs the same steps without a GPU (to try the script locally).
set -u
. "$(dirname "$0")/device_env.sh"
secs=${TRAIN_SECONDS:-420}
run=/tmp/dynfx-device-train
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/machine.txt" 2>&1
timeout $(( secs + 150 )) $PY train.py "$@" trainer=${TRAINER:-gpu} trainer.max_epochs=100000 \
    "trainer.max_time=$(printf 00:00:%02d:%02d $(( secs / 60 )) $(( secs % 60 )))" \
    model.scheduler=cosine_time \
    model.refine_steps=0 data.test_size=32 hydra.run.dir=$run data.cache_dir=/tmp/dynfx-data \
    > "$OUT/train.log" 2>&1
echo "train rc=$?" | tee -a "$OUT/train.log"
mkdir -p "$OUT/checkpoints"
cp $run/checkpoints/*.ckpt "$OUT/checkpoints/" 2>/dev/null
find $run -name metrics.csv -exec cp {} "$OUT/metrics.csv" \; 2>/dev/null
cp $run/.hydra/config.yaml "$OUT/config.yaml" 2>/dev/null
grep -a "Time limit\|Epoch [0-9]*:.*100%" "$OUT/train.log" | tail -3 | tr '\r' '\n' | tail -2
tail -5 "$OUT/train.log"
