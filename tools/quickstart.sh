#!/usr/bin/env bash
# tools/quickstart.sh [OUT_DIR] — the main job: install what is missing, build
# kd, and run the whole mission on a built-in default, with kd commands only:
#
#   1. corpus    Debian's `fortunes` (plain English), split into train/validation
#   2. tokenizer kd tokenizer train            (BPE, 2048 pieces)
#   3. teacher   kd train, CE only (alpha 0)   (a 3.9M-parameter Llama)
#   4. dumps     kd teacher dump               (the teacher's top-32 log-probs)
#   5. sweep     kd sweep alpha x T            (a 1.2M-parameter student; alpha 0 = CE only)
#   6. quantize  kd quantize --method awq, kd export (F16 and Q4_0)
#   7. test      kd run (a sample), kd eval (teacher vs students vs quantized)
#   8. report    OUT_DIR/report/README.md + heatmap and curves
#
# Re-running skips finished stages (each leaves OUT_DIR/.done/STAGE). Time:
# about 8 minutes on 2 cores (docs/quickstart.md). Every stage is an ordinary kd command; the
# commands are printed as they run so you can do the same with your own teacher.
#
# Environment: TEACHER_STEPS (600) and STUDENT_STEPS (250) shorten the run (tests
# use a few steps to check the pipeline; the report is then meaningless); KD, the
# path of a kd program to use instead of installing and building (tests).
set -euo pipefail
TEACHER_STEPS=${TEACHER_STEPS:-600}
STUDENT_STEPS=${STUDENT_STEPS:-250}
here=$(cd "$(dirname "$0")/.." && pwd)
out=$(mkdir -p "${1:-$here/quickstart}" && cd "${1:-$here/quickstart}" && pwd)
cd "$here"
if [ -n "${KD:-}" ]; then
  kd=$KD
else
  echo "== installing what is missing (tools/setup.sh run), building kd in build/" >&2
  tools/setup.sh run
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build -j"$(nproc)" >/dev/null
  kd="$here/build/kd"
fi
cd "$out"
mkdir -p .done data report
t_start=$(date +%s)

say() { printf "\n== [%ds] %s\n" $(( $(date +%s) - t_start )) "$*" >&2; }
run() { printf '$ %s\n' "$*" >&2; "$@"; }
stage() { [ -f ".done/$1" ]; }
finish() { touch ".done/$1"; }

# 1. the corpus: every fortune file (text only; .dat indexes and .u8 links skipped),
#    joined into one file of documents separated by lines holding "%"
files=()
for f in /usr/share/games/fortunes/*; do
  [ -f "$f" ] && [ ! -L "$f" ] && [[ "$f" != *.dat ]] && files+=("$f")
done
[ ${#files[@]} -gt 0 ] || { echo "quickstart: no fortunes corpus in /usr/share/games/fortunes" >&2; exit 1; }
corpus=data/corpus.txt
if ! stage corpus; then
  say "1. corpus: ${#files[@]} fortune files -> $corpus"
  for f in "${files[@]}"; do cat "$f"; [ -z "$(tail -c1 "$f")" ] || echo; echo %; done > "$corpus"
  finish corpus
fi

if ! stage tokenizer; then
  say "2. tokenizer: BPE, 2048 pieces"
  run "$kd" tokenizer train --text "$corpus" --doc-sep % --vocab-size 2048 --out tokenizer.bin
  finish tokenizer
fi

if ! stage text; then
  say "2. corpus -> token sequences of 128 (5% held out)"
  run "$kd" teacher dump --tokens-only --tokenizer tokenizer.bin --text "$corpus" --doc-sep $'\n%\n' \
      --seq-len 128 --out data/text-train.h5 --val-out data/text-val.h5 --val-fraction 0.05
  finish text
fi

if ! stage teacher; then
  say "3. teacher: CE only (alpha 0), a few minutes"
  cat > teacher-run.json <<JSON
{ "student": "$here/configs/quickstart/teacher.json", "train_data": "$out/data/text-train.h5",
  "val_data": "$out/data/text-val.h5", "alpha": 0, "batch_size": 16, "steps": $TEACHER_STEPS,
  "lr": 2e-3, "lr_min": 2e-4, "warmup": 20, "eval_every": 100, "eval_batches": 8, "save_every": 100, "seed": 1 }
JSON
  if [ -f teacher/checkpoints/latest ] && [ ! -f teacher/final_eval.json ]; then
    run "$kd" train --resume teacher
  else
    rm -rf teacher
    run "$kd" train --config teacher-run.json --out teacher
  fi
  finish teacher
fi

if ! stage dumps; then
  say "4. the teacher's top-32 log-probs on train and validation text"
  run "$kd" teacher dump --teacher teacher/final --text "$corpus" --doc-sep $'\n%\n' --seq-len 128 --topk 32 \
      --max-sequences 2400 --out data/train.h5 --val-out data/val.h5 --val-fraction 0.05
  run "$kd" teacher info data/val.h5 >/dev/null
  finish dumps
fi

student_run() {
  cat > student-run.json <<JSON
{ "student": "$here/configs/quickstart/student.json", "train_data": "$out/data/train.h5",
  "val_data": "$out/data/val.h5", "alpha": 0.5, "temperature": 2.0, "kd_mode": "topk_tail",
  "batch_size": 16, "steps": $STUDENT_STEPS, "lr": 3e-3, "lr_min": 3e-4, "warmup": 20,
  "eval_every": 50, "save_every": 1000, "seed": 1 }
JSON
}

if ! stage sweep; then
  say "5. students: sweep alpha x T (KD), plus alpha 0 (CE only) for comparison"
  student_run
  run "$kd" sweep --config student-run.json --grid alpha=0,0.5,0.9 --grid temperature=1,2 \
      --out sweep --jobs 2 --metric ce
  finish sweep
fi
best=$(cat sweep/best.txt)
ce_only=sweep/runs/alpha-0_temperature-1/final

if ! stage quantize; then
  say "6. AWQ int4 (Q4_0) and GGUF export (F16 and Q4_0)"
  run "$kd" quantize --model "$best" --method awq --calib data/train.h5 --samples 32 --format q4_0 --out student-awq
  run "$kd" export --model "$best" --type f16 --out student-f16.gguf
  run "$kd" export --model student-awq --type q4_0 --out student-awq-q4_0.gguf
  run "$kd" export --model teacher/final --type f16 --out teacher-f16.gguf
  run "$kd" export --model "$ce_only" --type f16 --out ce-only-f16.gguf
  finish quantize
fi

if ! stage eval; then
  say "7. run the GGUF with kd's engine, and evaluate everything on held-out text"
  run "$kd" run --model student-awq-q4_0.gguf --prompt "The secret of life is" -n 48 --temp 0.7 --seed 7 \
      > report/sample.txt 2> report/sample-speed.txt
  cat report/sample.txt >&2
  for m in teacher:teacher-f16.gguf best:student-f16.gguf ce_only:ce-only-f16.gguf awq:student-awq-q4_0.gguf; do
    name=${m%%:*}; path=${m#*:}
    run "$kd" eval --model "$path" --data data/val.h5 > "report/eval-$name.json"
    run "$kd" run --model "$path" --prompt "The" -n 64 --temp 0 --ids > /dev/null 2> "report/speed-$name.txt"
  done
  finish eval
fi

# 8. the report
say "8. report"
num() {   # num KEY FIELD [printf format]: a number from report/eval-KEY.json
  local v; v=$(sed -n "s/.*\"$2\": *\\([-0-9.eE+]*\\).*/\\1/p" "report/eval-$1.json" | head -1)
  printf "${3:-%.3f}" "$v"
}
speed() { grep -o '[0-9.]* tokens/s' "report/speed-$1.txt" | tail -1 | cut -d' ' -f1; }
size() { du -k "$1" | cut -f1; }
cp sweep/heatmap.png sweep/curves.png report/ 2>/dev/null || true
{
  echo "# kd quick start report"
  echo
  echo "Corpus: Debian fortunes (${#files[@]} files), BPE tokenizer of 2048 pieces; teacher trained with CE only;"
  echo "students distilled from the teacher's top-32 log-probs; validation = 5% held-out sequences."
  echo
  echo "| model | file | size (KiB) | ppl | KL to teacher | top-1 agreement | decode tokens/s |"
  echo "|---|---|---:|---:|---:|---:|---:|"
  for row in "teacher (F16)|teacher-f16.gguf|teacher" "best KD student (F16)|student-f16.gguf|best" \
             "CE-only student (F16)|ce-only-f16.gguf|ce_only" "best student, AWQ Q4_0|student-awq-q4_0.gguf|awq"; do
    IFS='|' read -r label file key <<<"$row"
    sz=$( [ -d "$file" ] && size "$file/model.safetensors" || size "$file")
    echo "| $label | \`$file\` | $sz | $(num "$key" ppl %.2f) | $(num "$key" kl %.4f) | $(num "$key" top1 %.3f) | $(speed "$key") |"
  done
  echo
  echo "Best sweep point: \`$best\`. The sweep: [results](../sweep/results.md)."
  echo
  echo "![validation CE over alpha x temperature](heatmap.png)"
  echo
  echo "![validation curves](curves.png)"
  echo
  echo "Sample from the Q4_0 student (\`kd run --model student-awq-q4_0.gguf --prompt \"The secret of life is\"\`):"
  echo
  echo '```'
  cat report/sample.txt
  echo '```'
} > report/README.md
cat report/README.md | sed -n '5,11p'
echo >&2
echo "quickstart: done in $(( $(date +%s) - t_start )) s this run; report: $out/report/README.md" >&2
