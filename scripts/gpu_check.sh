#!/usr/bin/env bash
# Everything that needs a CUDA GPU, in one call (for a machine with one): every optimizer and backend on
# the device against the CPU rule, the step benchmarks of every rule (fp32 and bf16 state, the whole
# iteration), the cold start, and Muon's bf16 Newton–Schulz against torch.optim.Muon. Writes under ${OUT:-gpu-out}.
set -euo pipefail
out=${OUT:-gpu-out}
mkdir -p "$out"
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
python -m pytest -q tests/test_cuda.py 2>&1 | tee "$out/tests.txt"
for opt in nag nadamw adan lars lamb sf-sgd sf-adamw; do
  nesterov bench step --device cuda --optimizer "$opt" --repeats 50 --json > "$out/bench-$opt.json"
  nesterov bench step --device cuda --optimizer "$opt" --repeats 50 | tee "$out/bench-$opt.txt"
  nesterov bench step --device cuda --optimizer "$opt" --state-dtype bfloat16 --include-torch --repeats 50 \
    | tee "$out/bench-$opt-bf16.txt"
done
nesterov bench step --device cuda --iteration --repeats 50 | tee "$out/bench-nag-iteration.txt"
for opt in nag nadamw; do
  nesterov bench cold --device cuda --optimizer "$opt" | tee "$out/cold-$opt.txt"
done
for opt in sf-sgd sf-adamw; do  # against the reference package and the ports too
  nesterov bench step --device cuda --optimizer "$opt" --peers --repeats 50 | tee "$out/bench-$opt-peers.txt"
  nesterov bench cold --device cuda --optimizer "$opt" --peers | tee "$out/cold-$opt.txt"
done
nesterov bench step --device cuda --optimizer muon --shapes transformer --repeats 5 --warmup 2 \
  | tee "$out/bench-muon.txt"
