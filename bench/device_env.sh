# Sourced by the device scripts (device_check.sh, device_train.sh): the output folder, the Python
# path with the carried pure-Python packages (./.devsite) and the carried wheels (./.whl, see
# device_check.sh's header), offline wandb, a kernel cache outside the checkout.
OUT=${OUT:-/tmp/dynfx-device}
mkdir -p "$OUT"
export PYTHONPATH="$PWD:$PWD/.devsite${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export DYNFX_CACHE_DIR=${DYNFX_CACHE_DIR:-/tmp/dynfx-kernels} WANDB_MODE=offline
PY=${PY:-python3}
# carried wheels (e.g. a numpy that the machine's numba-cuda accepts)
if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/dynfx-site .whl/*.whl && export PYTHONPATH="/tmp/dynfx-site:$PYTHONPATH"
fi
