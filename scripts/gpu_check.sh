#!/usr/bin/env bash
# Everything that needs a CUDA GPU, in one call (for a machine with one): the Triton kernels natively
# against the eager rules, then the step benchmark on the device. Writes its outputs under ${OUT:-gpu-out}.
set -euo pipefail
out=${OUT:-gpu-out}
mkdir -p "$out"
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
python -m pytest -q tests/test_nag.py -k "triton or backend" 2>&1 | tee "$out/tests.txt"
for opt in nag nadamw adan; do
  nesterov bench step --device cuda --optimizer "$opt" --repeats 50 --json > "$out/bench-$opt.json"
  nesterov bench step --device cuda --optimizer "$opt" --repeats 50 | tee "$out/bench-$opt.txt"
done
nesterov bench step --device cuda --state-dtype bfloat16 --include-torch --repeats 50 | tee "$out/bench-nag-bf16.txt"
