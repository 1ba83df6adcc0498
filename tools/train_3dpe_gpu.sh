#!/usr/bin/env bash
# The 3DPE embedded path's encoder and editor trained on one CUDA GPU, in one go: the encoder fine-tuned from
# the shipped one, then the editor distilled on it from the shipped editor, the GPU training while the CPU cores
# render heads and the teacher's edits (--workers).  The CPU recipes (each folder's recipe.json in resources/)
# stay the documented default; this is how a lent GPU improves the shipped weights.
#   tools/train_3dpe_gpu.sh OUT_DIR [ENCODER_MINUTES] [DISTILL_MINUTES]
#   OUT_DIR/encoder and OUT_DIR/editor then hold weights and recipes, ready to install into resources/.
# DEVICE=cpu (and a small POOL) tries it without a GPU; SMOKE=1 runs each stage for a few steps first, so a
# broken environment fails in seconds, not minutes.  ENCODER_LR (default 0.0005) and SEED (default 1) set the
# encoder's learning rate and both stages' seed: a later session continuing from shipped GPU-trained weights takes
# a smaller rate and a new seed (new heads and edits).
set -euo pipefail
out=$(realpath -m "${1:?usage: tools/train_3dpe_gpu.sh OUT_DIR [ENCODER_MINUTES] [DISTILL_MINUTES]}")
encoder_minutes=${2:-4}
distill_minutes=${3:-2.5}
python=${PYTHON:-python3}
device=${DEVICE:-cuda}
pool=${POOL:-384}
encoder_lr=${ENCODER_LR:-0.0005}
seed=${SEED:-1}
workers=$(( $(nproc) > 3 ? $(nproc) - 2 : 1 ))
cd "$(dirname "$0")/.."
encoder=("$python" main.py portrait train-encoder --init resources/portrait_encoder --device "$device" --workers "$workers"
         --batch 32 --views 4 --pool-heads "$pool" --lr "$encoder_lr" --seed "$seed" --checkpoint-every-s 60)
distill=("$python" main.py portrait distill --init resources/portrait_editor --device "$device" --workers "$workers"
         --batch 32 --pool "$pool" --seed "$seed" --checkpoint-every-s 60)
if [[ "${SMOKE:-0}" == 1 ]]; then
    "${encoder[@]}" --out "$out/smoke_encoder" --steps 3 --pool-heads 32 --workers 2
    "${distill[@]}" --out "$out/smoke_editor" --encoder "$out/smoke_encoder" --steps 3 --pool 32 --workers 2
    rm -rf "$out/smoke_encoder" "$out/smoke_editor"
fi
"${encoder[@]}" --out "$out/encoder" --minutes "$encoder_minutes"
"${distill[@]}" --out "$out/editor" --encoder "$out/encoder" --minutes "$distill_minutes"
