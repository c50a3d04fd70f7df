#!/usr/bin/env bash
# The quickstart, offline on CPU in a few minutes: the whole story on a synthetic world.
#   synthetic world of fictional people -> BPE tokenizer -> pretrain a tiny Qwen2 on their
#   biographies, probing every checkpoint with questions about them -> ask it to complete facts
#   -> SFT it on the Q/A of half the people, probing again -> ask it questions in ChatML about
#   both halves -> DPO on its own wrong answers (scripts/quickstart_dpo.sh) -> a report of how the
#   answers matured across the three stages.
#   bash launch/quickstart.sh          # installs into .venv first when needed
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/mini-lm ] || bash scripts/install.sh
source .venv/bin/activate
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-runs/quickstart}
rm -rf "$OUT"
start=$(date +%s)

echo "== 1/6 synthetic world: 100 people, 6 biographies each (full names, permuted sentences) in Chinese and English, Q/A, probe questions"
mini-lm synth-world --out "$OUT/world" --seed 0 --people 100 --fullname --bios-per-person 6

echo "== 2/6 tokenizer + pretraining (tiny Qwen2, recipes/configs/quickstart/pretrain.yaml), probes at every save"
python recipes/pretrain.py --config recipes/configs/quickstart/pretrain.yaml \
    --train_files "$OUT/world/bios.jsonl" --output_dir "$OUT/pretrain" \
    --probe_questions "$OUT/world/probe_questions.yaml" "$@"

echo "== 3/6 what did it learn? greedy completions of 240 facts from the biographies"
mini-lm generate "$OUT/pretrain" --prompts-file "$OUT/world/completions.jsonl" --limit 240 \
    --greedy --max-new-tokens 24 --quiet

echo "== 4/6 SFT on the Q/A of the 'sft' half of the people (recipes/configs/quickstart/sft.yaml), probes at every save"
python recipes/sft.py --config recipes/configs/quickstart/sft.yaml --model_name_or_path "$OUT/pretrain" \
    --train_files "$OUT/world/qa_sft.jsonl" --output_dir "$OUT/sft" \
    --probe_questions "$OUT/world/probe_questions.yaml" --disable_tqdm true
python - "$OUT" <<'PY'
# Questions in ChatML: people seen in SFT, and held-out people whose facts only pretraining saw.
import json, sys
from mini_lm.generation import GenerationSettings, generate, load_for_generation, render_chat_prompt
out = sys.argv[1]
model, tok = load_for_generation(f"{out}/sft")
for split in ("sft", "heldout"):
    qa = [json.loads(line) for line in open(f"{out}/world/qa_{split}.jsonl", encoding="utf-8")][::6][:100]
    prompts = [render_chat_prompt(tok, r["messages"][:1]) for r in qa]
    results = generate(model, tok, prompts, GenerationSettings(do_sample=False, max_new_tokens=40), batch_size=32)
    for r, res in list(zip(qa, results))[:2]:
        print(f"  [{split}] {r['messages'][0]['content']} -> {res.text!r} (stopped at <|im_end|>: {res.stopped})")
    hits = sum(r["expected"] in res.text for r, res in zip(qa, results))
    stops = sum(res.stopped for res in results)
    print(f"  [{split}] {hits}/{len(qa)} answers contain the right fact, {stops}/{len(qa)} stop at <|im_end|>")
PY

echo "== 5/6 DPO on the SFT model's own wrong answers (scripts/quickstart_dpo.sh)"
bash scripts/quickstart_dpo.sh "$OUT"

echo "== 6/6 report: answers per checkpoint of the three stages, with loss, repetition and knowledge plots"
mini-lm report "$OUT/pretrain" "$OUT/sft" "$OUT/dpo" --out "$OUT/report"

echo "== done in $(( $(date +%s) - start ))s: models in $OUT/pretrain, $OUT/sft and $OUT/dpo, TensorBoard logs in their runs/"
echo "   report: $OUT/report/report.md (plots: $OUT/report/*.png)"
