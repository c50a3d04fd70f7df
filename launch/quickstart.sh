#!/usr/bin/env bash
# The quickstart, offline on CPU in a few minutes:
#   synthetic world of fictional people -> BPE tokenizer -> pretrain a tiny Qwen2 on their
#   biographies -> ask it to complete facts about them.
#   bash launch/quickstart.sh          # installs into .venv first when needed
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/mini-lm ] || bash scripts/install.sh
source .venv/bin/activate
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-runs/quickstart}
rm -rf "$OUT"
start=$(date +%s)

echo "== 1/3 synthetic world: 100 people, biographies in Chinese and English"
mini-lm synth-world --out "$OUT/world" --seed 0 --people 100

echo "== 2/3 tokenizer + pretraining (tiny Qwen2, recipes/configs/quickstart/pretrain.yaml)"
python recipes/pretrain.py --config recipes/configs/quickstart/pretrain.yaml \
    --train_files "$OUT/world/bios.jsonl" --output_dir "$OUT/pretrain" "$@"

echo "== 3/3 what did it learn? greedy completions of facts from the biographies"
mini-lm generate "$OUT/pretrain" --prompts-file "$OUT/world/completions.jsonl" --limit 240 \
    --greedy --max-new-tokens 24 --quiet

echo "== done in $(( $(date +%s) - start ))s: model in $OUT/pretrain, TensorBoard logs in $OUT/pretrain/runs"
