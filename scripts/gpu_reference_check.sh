#!/usr/bin/env bash
# On a GPU machine (after `scripts/cuda_check.sh run` has unpacked target/cuda-check/deepsynth): regenerates the
# reference model (torch), runs `deepsynth inspect --device cuda` on the reference page with the reference prompt and
# compares every output with the reference run, then times the vision encoder on a multi-page document.
#   scripts/gpu_reference_check.sh REFERENCE_DIR    (shared/reference/deepseek-ocr-random-2layer, copied along)
set -euo pipefail
cd "$(dirname "$0")/.."
ref="$1"
bin=target/cuda-check/deepsynth
model=/tmp/refmodel
python3 scripts/regen_reference_weights.py "$model" --reference "$ref" >/dev/null
python3 -c "import json
from safetensors.torch import load_file
ids = load_file('$ref/io-base-1024.safetensors')['input_ids'].tolist()
json.dump(ids, open('/tmp/ids.json', 'w'))"
"$bin" inspect --device cuda --model "$model" --image "$ref/input-base-1024.png" --mode base \
    --input-ids /tmp/ids.json --new-tokens 4 --output /tmp/inspect.safetensors
python3 - "$ref" <<'PY'
import sys
import torch
from safetensors.torch import load_file
ours, io = load_file('/tmp/inspect.safetensors'), load_file(sys.argv[1] + '/io-base-1024.safetensors')
pairs = [(n, ours[n], io[n]) for n in ['images_ori', 'sam_out', 'clip_out', 'projector_out']]
pairs += [('logits[0:8]', ours['logits'][:8], io['logits_first8']), ('logits[-1]', ours['logits'][-1:], io['logits_last'])]
for name, a, b in pairs:
    err = (a - b).abs().max().item()
    print(f'{name}: max abs error {err:.3e}, relative {err / b.abs().max().item():.3e}')
print('greedy ids equal:', torch.equal(ours['generated_ids'], io['generated_ids']))
PY
# Vision speed: a text document that renders to 8 Base pages, encoded on the GPU (second run: warm caches).
python3 -c "print('\n'.join('Line %d of a long page of text for timing the vision encoder. ' % i * 1 for i in range(240)))" >/tmp/long.txt
for run in 1 2; do
    "$bin" instruct --device cuda --model "$model" --document /tmp/long.txt --instruction "Free OCR." \
        --max-new-tokens 8 --json
done
