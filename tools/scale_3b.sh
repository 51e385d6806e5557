#!/usr/bin/env bash
# scale_3b.sh — the 3B demonstration: a Llama-3.2-3B-shaped student
# (configs/student-3b.json: hidden 3072, 28 layers, 24/8 heads, vocab 128256,
# tied embeddings; 3.21B parameters) distilled with the KD loss from a top-k
# dump, on one machine, in memory_mode "lean" — measured, end to end:
#
#   1. the data: a random teacher with the 3B's vocabulary (a 1-layer Llama,
#      hidden 64, vocab 128256, from `kd init`, carrying aidreams260K's 512-piece
#      tokenizer) reads kd's own documentation (`kd teacher dump --text`:
#      README.md + docs/training.md for 4 training sequences, docs/checkpoints.md
#      for 1 validation sequence, 512 positions each) and its top-64 log-probs
#      are stored. Token ids are those of the 512-piece tokenizer; the teacher's
#      distribution and the student's head span all 128256 ids. The teacher is
#      random, so nothing useful is learnt: this measures memory and time of
#      real KD steps over the full 128256-wide head. (Sampling from the teacher,
#      --generate, costs O(T²) head products per sequence: minutes here.)
#   2. `kd plan --memory-mode lean`: the predicted peak, item by item.
#   3. `kd train` (batch 1 × seq 512, lean) for STEPS−1 steps, stopping with a
#      checkpoint (BF16 weights + lean optimizer state), then `kd train --resume`
#      reloads it and runs the last step, evaluates and writes final/: at least
#      three optimizer steps, a checkpoint written and reloaded. Each process runs
#      under /usr/bin/time -v (peak RSS) with a sampler of its RSS every second.
#   4. final/ is checked: BF16 matrices + F32 norms in model.safetensors, config
#      torch_dtype "bfloat16". (kd's FP32 loader reads such checkpoints, tested in
#      tests/test_lean.c, but an FP32 3B model also allocates a gradient per
#      parameter: 2 × 12 GiB, more than this machine has.)
#   5. The report: predicted vs measured peak RSS, s/step, tokens/s.
#
# usage: tools/scale_3b.sh [WORK_DIR]      (default: a new /tmp/kd-scale3b.XXXXXX)
# env:   KD (the kd program, default build/kd), KD_DATA_DIR (tests/data), STUDENT (a
#        config with vocab 128256 instead of student-3b.json, for a quick rehearsal),
#        STEPS (3), TOPK (64), LEAN_CLIP (previous | exact), KEEP=1 keeps WORK_DIR
# needs: ~17 GiB of free memory, ~40 GB of disk in WORK_DIR, and time (hours of
#        CPU on 2 cores: each step is ~13 TFLOP).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
KD=${KD:-$ROOT/build/kd}
SHARED=${KD_DATA_DIR:-$ROOT/tests/data}
STUDENT=${STUDENT:-$ROOT/configs/student-3b.json}
STEPS=${STEPS:-3}
TOPK=${TOPK:-64}
LEAN_CLIP=${LEAN_CLIP:-previous}
WORK=${1:-$(mktemp -d /tmp/kd-scale3b.XXXXXX)}
TOK=$SHARED/models/aidreams260K/tok512.bin
[ -x "$KD" ] || { echo "scale_3b: $KD is not built (cmake --build build)" >&2; exit 1; }
[ -f "$TOK" ] || { echo "scale_3b: $TOK not found (set KD_DATA_DIR)" >&2; exit 1; }
[ "$STEPS" -ge 2 ] || { echo "scale_3b: STEPS must be at least 2" >&2; exit 1; }
mkdir -p "$WORK"
cleanup() { [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK/run" "$WORK/teacher"; }
trap cleanup EXIT
log() { printf '[%s] %s\n' "$(date +%T)" "$*"; }

# ---- 1. the data --------------------------------------------------------------------
log "random teacher (vocab 128256) and its dumps in $WORK"
cat > "$WORK/teacher.json" <<EOF
{"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 2,
 "num_key_value_heads": 2, "vocab_size": 128256, "max_position_embeddings": 1024, "rope_theta": 10000.0,
 "tie_word_embeddings": true, "bos_token_id": 1, "eos_token_id": 2}
EOF
rm -rf "$WORK/teacher"
"$KD" init --config "$WORK/teacher.json" --out "$WORK/teacher" --seed 7 > /dev/null
cp "$TOK" "$WORK/teacher/tokenizer.bin"
[ -f "$WORK/train.h5" ] || "$KD" teacher dump --teacher "$WORK/teacher" --text "$ROOT/README.md" \
    "$ROOT/docs/training.md" --max-sequences 4 --seq-len 512 --topk "$TOPK" --out "$WORK/train.h5" --quiet
[ -f "$WORK/val.h5" ] || "$KD" teacher dump --teacher "$WORK/teacher" --text "$ROOT/docs/checkpoints.md" \
    --max-sequences 1 --seq-len 512 --topk "$TOPK" --out "$WORK/val.h5" --quiet
"$KD" teacher info "$WORK/train.h5" | head -8

# ---- 2. the plan ----------------------------------------------------------------------
log "kd plan --memory-mode lean"
"$KD" plan --config "$STUDENT" --batch 1 --seq 512 --lm-chunk 256 --topk "$TOPK" \
    --memory-mode lean | tee "$WORK/plan.txt"
PRED_MIB=$(awk '/^training/{t=1} t && /peak \(predicted\)/{print $3; exit}' "$WORK/plan.txt")
"$KD" plan --config "$STUDENT" --batch 1 --seq 512 --lm-chunk 256 --topk "$TOPK" \
    | awk '/^training/{t=1} t && /peak \(predicted\)/{print "for comparison, FP32 + AdamW would need " $3 " MiB"; exit}'

# ---- 3. training: STEPS-1 steps + checkpoint, then resume for the last -----------------
cat > "$WORK/run.json" <<EOF
{"student": "$STUDENT", "train_data": "$WORK/train.h5", "val_data": "$WORK/val.h5",
 "memory_mode": "lean", "lean_clip": "$LEAN_CLIP", "batch_size": 1, "steps": $STEPS, "lr": 2e-5,
 "warmup": 1, "lr_min": 2e-6, "alpha": 0.5, "temperature": 2.0, "eval_every": 0, "save_every": 0,
 "keep_last": 1, "lm_chunk": 256, "log_every": 1}
EOF
rm -rf "$WORK/run"
# run_measured NAME ARGS...: /usr/bin/time -v, plus the RSS every second in NAME.rss (KiB)
run_measured() {
    local name=$1; shift
    /usr/bin/time -v -o "$WORK/$name.time" "$KD" "$@" 2> >(tee "$WORK/$name.log" >&2) &
    local tpid=$! kpid=""
    local comm; comm=$(basename "$KD" | cut -c1-15)   # kd is /usr/bin/time's child beside tee
    for _ in $(seq 50); do kpid=$(pgrep -P "$tpid" -x "$comm" || true); [ -n "$kpid" ] && break; sleep 0.1; done
    ( while [ -n "$kpid" ] && kill -0 "$kpid" 2>/dev/null; do
          awk '/VmRSS/{print $2}' "/proc/$kpid/status" 2>/dev/null; sleep 1; done ) > "$WORK/$name.rss" &
    local spid=$!
    local rc=0
    wait "$tpid" || rc=$?
    wait "$spid" || true
    return $rc
}
log "kd train: $((STEPS - 1)) steps, then a checkpoint"
run_measured train1 train --config "$WORK/run.json" --out "$WORK/run" --stop-after $((STEPS - 1))
ls -la "$WORK/run/checkpoints/"*/
log "kd train --resume: reload the checkpoint, step $STEPS, evaluation, final/"
run_measured train2 train --resume "$WORK/run"

# ---- 4. the final checkpoint ----------------------------------------------------------------
log "final/: dtypes and config"
grep -o '"torch_dtype":[^,]*' "$WORK/run/final/config.json" || true
python3 - "$WORK/run/final/model.safetensors" <<'EOF'
import json, struct, sys
f = open(sys.argv[1], 'rb'); n = struct.unpack('<Q', f.read(8))[0]; h = json.loads(f.read(n))
dt = {}
for k, v in h.items():
    if k != '__metadata__': dt[v['dtype']] = dt.get(v['dtype'], 0) + 1
print("final/model.safetensors tensors by dtype:", dt, f"({f.seek(0, 2) / 2**30:.2f} GiB)")
EOF

# ---- 5. the report ---------------------------------------------------------------------------
log "report"
python3 - "$WORK" "$PRED_MIB" <<'EOF'
import json, re, sys
work, pred = sys.argv[1], float(sys.argv[2])
def peak(name):
    t = open(f"{work}/{name}.time").read()
    return int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1)) / 1024.0
def wall(name):
    t = open(f"{work}/{name}.time").read()
    m = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", t).group(1).split(':')
    return sum(float(x) * 60 ** i for i, x in enumerate(reversed(m)))
lines = [json.loads(l) for l in open(f"{work}/run/metrics.jsonl")]
steps = [l for l in lines if 'loss' in l]
# elapsed_s restarts in each process: per-step time from consecutive lines of the same process
dts, prev = [], 0.0
for l in steps:
    e = l['elapsed_s']
    dts.append(e - prev if e > prev else e)
    prev = e
tok = 512
print(f"{'step':>4} {'loss':>8} {'ce':>8} {'train_div':>9} {'grad_norm':>10} {'s/step':>8} {'tokens/s':>9}")
for l, d in zip(steps, dts):
    print(f"{l['step']:>4} {l['loss']:8.4f} {l['ce']:8.4f} {l.get('train_divergence', l.get('kl', 0)):9.4f} {l['grad_norm']:10.4f} {d:8.1f} {tok / d:9.2f}")
fe = [l['final_eval'] for l in lines if 'final_eval' in l]
if fe: print("final evaluation:", json.dumps(fe[-1]))
# the first step of each process includes the first-touch of the arena; the steady state is the later ones
print(f"mean s/step {sum(dts) / len(dts):.1f}  ({tok * len(dts) / sum(dts):.2f} tokens/s)")
for name in ("train1", "train2"):
    p = peak(name)
    print(f"{name}: peak RSS {p:8.1f} MiB ({p / 1024:.2f} GiB), predicted {pred:.1f} MiB, "
          f"predicted/measured {pred / p:.3f}, wall {wall(name):.0f} s")
import os
for name in ("train1", "train2"):
    r = [int(x) for x in open(f"{work}/{name}.rss").read().split()] if os.path.exists(f"{work}/{name}.rss") else []
    if r: print(f"{name}: RSS sampled every second: max {max(r) / 1024:.1f} MiB over {len(r)} samples")
EOF
log "done; work directory $WORK"
