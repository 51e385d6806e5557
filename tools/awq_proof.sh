#!/usr/bin/env bash
# awq_proof.sh — reproduce the AWQ table of docs/quantization.md end to end.
#
#   tools/awq_proof.sh [WORK_DIR]        (default /tmp/kd-awq-proof)
#   environment: KD (the kd binary, default build/kd), KD_DATA_DIR (default tests/data),
#                STEPS (student training steps, 800), N_GEN (teacher samples, 6000)
#
# 1. Imports aidreams260K, a real llama2.c model trained to convergence on real
#    text (tests/data/models), as the teacher.
# 2. Dumps N_GEN of its own samples (64 positions, top-32); 10% go to val.h5,
#    which nothing below trains or calibrates on.
# 3. Distills a 3.5M student (hidden 256, intermediate 768, 4 layers, 4 heads,
#    tied embeddings) on train.h5 with kd train — wide enough for Q4_K's
#    256-element super-blocks, which the teacher's 64-wide rows are not.
# 4. For both FP32 models and each format (q4_0, q4_1, q4_k): an RTN checkpoint
#    (nothing applied) and an AWQ checkpoint (calibration: train.h5, 8192
#    tokens), each exported to GGUF with kd export (q4_k → q4_k_m), and the
#    GGUF files evaluated against their FP32 model on val.h5 with
#    `kd quantize eval`: perplexity on the dump's labels, KL(FP32 ‖ GGUF) over
#    the full vocabulary and top-1 agreement.
# 5. Prints the table and the ratio AWQ ΔKL / RTN ΔKL for each format (ΔKL =
#    KL to the FP32 model, whose own KL is 0).
#
# Runtime on 2 cores shared with other jobs: dump ~30 min, training ~45 min,
# quantization and evaluation ~5 min (see docs/quantization.md). Every step
# is skipped when its output exists, so an interrupted run continues.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
KD="${KD:-$here/build/kd}"
SHARED="${KD_DATA_DIR:-$here/../tests/data}"
STEPS="${STEPS:-800}"
N_GEN="${N_GEN:-6000}"
W="${1:-/tmp/kd-awq-proof}"
mkdir -p "$W"
cd "$W"
[ -x "$KD" ] || { echo "awq_proof: $KD is not built (cmake --build build)" >&2; exit 1; }
t0=$(date +%s)
stamp() { echo "[awq_proof $(( $(date +%s) - t0 ))s] $*" >&2; }

# 1-2. teacher and its samples
[ -d teacher ] || "$KD" import llama2c --model "$SHARED/models/aidreams260K/aidreams260K.bin" \
    --tokenizer "$SHARED/models/aidreams260K/tok512.bin" --out teacher >/dev/null
if [ ! -f train.h5 ] || [ ! -f val.h5 ]; then
    stamp "dumping $N_GEN teacher samples"
    "$KD" teacher dump --teacher teacher --generate "$N_GEN" --seq-len 64 --topk 32 \
        --out train.h5 --val-out val.h5 --val-fraction 0.1 --quiet
fi

# 3. the student
cat > student.json <<'EOF'
{ "architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4,
  "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 512,
  "max_position_embeddings": 128, "rope_theta": 10000.0, "rms_norm_eps": 1e-5,
  "tie_word_embeddings": true, "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu" }
EOF
cat > run.json <<EOF
{ "student": "student.json", "train_data": "train.h5", "val_data": "val.h5",
  "alpha": 0.5, "temperature": 1.0, "kd_mode": "topk_tail",
  "batch_size": 16, "steps": $STEPS, "lr": 3e-3, "lr_min": 1e-4, "warmup": 30,
  "eval_every": 100, "eval_batches": 10, "save_every": 1000, "log_every": 50, "seed": 1 }
EOF
if [ ! -f run/final/model.safetensors ]; then
    stamp "training the student ($STEPS steps)"
    rm -rf run
    "$KD" train --config run.json --out run --quiet
fi
[ -f run/final/tokenizer.bin ] || cp teacher/tokenizer.bin run/final/

# 4. RTN and AWQ (plus two clip variants) for each model and format
eval_to() {   # eval_to OUT.json REFERENCE MODEL
    [ -f "$1" ] || "$KD" quantize eval --reference "$2" --model "$3" --type f32 --data val.h5 > "$1"
}
for model in teacher student; do
    ref=$model
    [ $model = student ] && ref=run/final
    eval_to "$model.fp32.json" "$ref" "$ref"
    for fmt in q4_0 q4_1 q4_k; do
        preset=$fmt
        [ $fmt = q4_k ] && preset=q4_k_m
        for method in rtn awq awq-noclip awq-clipalways; do
            out="$model.$method.$fmt"
            case $method in
                rtn) args="--method rtn" ;;
                awq) args="--method awq" ;;
                awq-noclip) args="--method awq --no-clip" ;;
                awq-clipalways) args="--method awq --clip-always" ;;
            esac
            if [ ! -f "$out.gguf" ]; then
                stamp "$model: $method $fmt"
                s=$(date +%s)
                "$KD" quantize --model "$ref" $args --format $fmt --calib train.h5 --quiet --out "$out" >/dev/null
                echo $(( $(date +%s) - s )) > "$out.seconds"
                "$KD" export --model "$out" --type $preset --out "$out.gguf" >/dev/null 2>"$out.export.log"
            fi
            eval_to "$out.json" "$ref" "$out.gguf"
        done
    done
done
# the GGUF's numbers are the checkpoint's as the preset stores them (kd's pseudo-quantization)
[ -f check.json ] || "$KD" quantize eval --reference run/final --model student.awq.q4_0 --type q4_0 \
    --data val.h5 > check.json

# 5. the tables
stamp "done"
python3 - <<'EOF'
import json
def load(p): return json.load(open(p))
models = (("teacher", "aidreams260K teacher (dim 64)"), ("student", "3.5M student (dim 256)"))
fmts = (("q4_0", "Q4_0"), ("q4_1", "Q4_1"), ("q4_k", "Q4_K_M"))
print("| model | format | method | ppl | KL to FP32 | top-1 agreement | AWQ ΔKL / RTN ΔKL | AWQ time |")
print("|---|---|---|---|---|---|---|---|")
for model, name in models:
    fp = load(f"{model}.fp32.json")
    print(f"| {name} | FP32 | — | {fp['ppl']:.4f} | 0 | 1.0000 | | |")
    for fmt, label in fmts:
        r, a = load(f"{model}.rtn.{fmt}.json"), load(f"{model}.awq.{fmt}.json")
        t = open(f"{model}.awq.{fmt}.seconds").read().strip()
        print(f"| {name} | {label} | RTN | {r['ppl']:.4f} | {r['kl']:.3e} | {r['top1']:.4f} | | |")
        print(f"| {name} | {label} | AWQ | {a['ppl']:.4f} | {a['kl']:.3e} | {a['top1']:.4f} |"
              f" **{a['kl'] / r['kl']:.3f}** | {t} s |")
print(f"\nheld-out positions per evaluation: {fp['tokens']}\n")
print("| model | format | RTN KL | AWQ (default) | AWQ --no-clip | AWQ --clip-always (reference) |")
print("|---|---|---|---|---|---|")
for model, name in models:
    for fmt, label in fmts:
        r = load(f"{model}.rtn.{fmt}.json")["kl"]
        cells = []
        for m in ("awq", "awq-noclip", "awq-clipalways"):
            k = load(f"{model}.{m}.{fmt}.json")["kl"]
            cells.append(f"{k:.3e} ({k / r:.3f})")
        print(f"| {name} | {label} | {r:.3e} | " + " | ".join(cells) + " |")
c, g = load("check.json"), load("student.awq.q4_0.json")
print(f"\ncheck: student AWQ q4_0 checkpoint pseudo-quantized by kd: KL {c['kl']:.8f}; its GGUF file: KL {g['kl']:.8f}")
EOF
