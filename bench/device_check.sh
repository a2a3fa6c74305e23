#!/usr/bin/env bash
# One scripted run on a lent CUDA machine: the CUDA tests, the CUDA benchmark and the GPU time of an
# estimation recipe, each under its own time limit so that one stuck step cannot eat the others.
#
#   OUT=/some/folder bash bench/device_check.sh            (OUT: where logs and JSON go)
#
# The machine's own python3 (with torch, numba, Triton, Lightning) runs it; packages it lacks
# (hydra-core, omegaconf, antlr4, auraloss, torchcomp, torchlpc, diffFx-pytorch: pure Python) are
# read from ./.devsite when present (copied from a local virtual environment's site-packages), and
# wheels in ./.whl are installed first (a numpy 2.2 wheel for Python 3.12: the machine's numba-cuda
# failed to import with its numpy 2.5). Both folders are git-ignored; the device tool carries them:
#   mkdir .devsite && cp -r .venv/lib/python3.11/site-packages/{hydra,omegaconf,antlr4,auraloss,\
#       torchcomp,torchlpc,diffFx_pytorch} .devsite/ && rm .devsite/torchlpc/_C*.so
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 -d .whl numpy==2.2.6
# Budgets in seconds: TESTS_S, BENCH_S, TRAIN_S (defaults 150, 240, 170; 0 skips the step; the
# training's own time cap is TRAIN_S - 40, at most 59); TESTS_K: a pytest -k expression.
set -u
. "$(dirname "$0")/device_env.sh"
t0=$(date +%s)
stamp() { echo "== $(( $(date +%s) - t0 )) s: $*" | tee -a "$OUT/steps.log"; }

stamp "machine"
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv
  nproc; $PY -c "import sys, torch, numba, triton; print(sys.version.split()[0], 'torch',
torch.__version__, 'numba', numba.__version__, 'triton', triton.__version__,
torch.cuda.get_device_name())"; } 2>&1 | tee "$OUT/machine.txt"

if [ "${TESTS_S:-150}" != 0 ]; then
stamp "CUDA tests (every test marked cuda, and the Triton and dtype/device files)"
timeout "${TESTS_S:-150}" $PY -m pytest -q -p no:cacheprovider -m "cuda or not slow" \
    tests/test_triton.py tests/test_dtype_device.py -o addopts="" -ra -k "${TESTS_K:-not nothing}" \
    > "$OUT/tests-cuda.log" 2>&1
echo "tests rc=$?" | tee -a "$OUT/steps.log"
tail -5 "$OUT/tests-cuda.log"
fi

if [ "${BENCH_S:-240}" != 0 ]; then
stamp "CUDA benchmark"
timeout "${BENCH_S:-240}" $PY bench/bench_processors.py --device cuda --reps 11 \
    --refine Compressor,TransientShaper --json "$OUT/results-cuda.json" > "$OUT/bench-cuda.log" 2>&1
echo "bench rc=$?" | tee -a "$OUT/steps.log"
fi

if [ "${TRAIN_S:-170}" != 0 ]; then
stamp "GPU training: est_compressor, dry_wet (time-capped; seconds per epoch from metrics.csv)"
timeout "${TRAIN_S:-170}" $PY train.py experiment=est_compressor input_mode=dry_wet trainer=gpu \
    "trainer.max_time=00:00:00:$(( ${TRAIN_S:-170} - 40 ))" model.refine_steps=0 \
    hydra.run.dir=/tmp/gpu-train data.cache_dir=/tmp/dynfx-data data.pool_size=256 \
    > "$OUT/train-gpu.log" 2>&1
echo "train rc=$?" | tee -a "$OUT/steps.log"
find /tmp/gpu-train -name "metrics.csv" -exec cp {} "$OUT/train-gpu-metrics.csv" \; 2>/dev/null
tail -30 "$OUT/train-gpu.log"
fi
stamp "done"
[ -f "$OUT/bench-cuda.log" ] && tail -60 "$OUT/bench-cuda.log"
