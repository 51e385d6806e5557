#!/usr/bin/env bash
# tests/docs_tour.sh KD SOURCE_DIR SHARED_DIR WORK_DIR — run README.md's "A tour of
# the commands" for real, line by line and in order, so that the tour cannot rot.
#
# The tour names files a user would have; this script provides them in WORK_DIR:
#   teacher.bin, tok.bin   aidreams260K (a real llama2.c model) and its tokenizer
#   corpus.txt             kd's own README and docs (plain English text)
#   run.json               a run config: student0, train.h5, val.h5, a few steps
#   configs/               the repository's configs
# Every line that starts with "kd " is run as it is written, with "kd" being KD
# (lines naming a placeholder such as <command> are skipped). Exit status 1 at
# the first command that fails, naming it.
set -euo pipefail
kd=$1 src=$2 shared=$3 work=$4
mkdir -p "$work" && cd "$work"
ln -sfn "$shared/models/aidreams260K/aidreams260K.bin" teacher.bin
ln -sfn "$shared/models/aidreams260K/tok512.bin" tok.bin
ln -sfn "$src/configs" configs
cat "$src/README.md" "$src"/docs/*.md > corpus.txt
cat > run.json <<'JSON'
{ "student": "student0", "train_data": "train.h5", "val_data": "val.h5",
  "batch_size": 4, "steps": 4, "warmup": 1, "eval_every": 2, "eval_batches": 2, "save_every": 2, "log_every": 1 }
JSON
# the tour: the first ```sh block after its heading, continuation lines joined
awk '/^## A tour of the commands/{t=1} t && /^```sh/{b=1; next} b && /^```/{exit} b{print}' "$src/README.md" |
  sed -e ':a' -e '/\\$/N; s/\\\n[[:space:]]*/ /; ta' > tour.sh
n=0
while IFS= read -r line; do
  case $line in
    kd\ *) ;;
    *) continue ;;
  esac
  case $line in *"<"*">"*) continue ;; esac
  n=$((n + 1))
  echo "docs_tour: \$ $line" >&2
  if ! eval "\"\$kd\" ${line#kd }" > "out.$n" 2>&1; then
    echo "docs_tour: README tour command $n failed: $line" >&2
    tail -20 "out.$n" >&2
    exit 1
  fi
done < tour.sh
[ "$n" -ge 10 ] || { echo "docs_tour: only $n commands found in README's tour" >&2; exit 1; }
echo "docs_tour: all $n commands of README's tour ran" >&2
