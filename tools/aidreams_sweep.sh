#!/usr/bin/env bash
# tools/aidreams_sweep.sh [OUT_DIR] — the α × T sweep recorded in
# docs/results-aidreams.md: distil the real aidreams260K teacher (tests/data)
# into a student with ~¼ of its parameters, on the teacher's own samples.
# About 10 minutes on 2 cores (the dump ~3 min, 15 runs ~6 min with 2 jobs).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
kd=${KD:-$here/build/kd}
shared=${KD_DATA_DIR:-$here/../tests/data}
out=${1:-aidreams-sweep}
mkdir -p "$out"
cd "$out"
cat > student-quarter.json <<'JSON'
{ "architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "hidden_size": 32, "intermediate_size": 96, "num_hidden_layers": 4,
  "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 512,
  "max_position_embeddings": 128, "rope_theta": 10000.0, "rms_norm_eps": 1e-5,
  "tie_word_embeddings": true, "sliding_window": null, "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu" }
JSON
cat > run.json <<JSON
{ "student": "$PWD/student-quarter.json", "train_data": "$PWD/train.h5", "val_data": "$PWD/val.h5",
  "alpha": 0.5, "temperature": 2.0, "kd_mode": "topk_tail",
  "batch_size": 16, "steps": 400, "lr": 3e-3, "lr_min": 3e-4, "warmup": 20,
  "eval_every": 100, "save_every": 1000, "seed": 1234 }
JSON
[ -d teacher ] || "$kd" import llama2c --model "$shared/models/aidreams260K/aidreams260K.bin" \
                      --tokenizer "$shared/models/aidreams260K/tok512.bin" --out teacher
[ -f train.h5 ] || "$kd" teacher dump --teacher teacher --generate 3000 --seq-len 64 --topk 32 \
                      --out train.h5 --val-out val.h5 --val-fraction 0.1 --batch 100
"$kd" sweep --config run.json --grid alpha=0,0.25,0.5,0.75,1 --grid temperature=1,2,4 \
            --out sweep --jobs 2 --metric kl
echo "results: $PWD/sweep/results.md"
