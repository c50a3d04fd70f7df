#!/usr/bin/env bash
# Quickstart stage 3, after launch/quickstart.sh's pretraining and SFT (it calls this script):
#   the SFT model answers the questions about the held-out people, whose facts only its pretraining
#   biographies held (minus the people the probes ask about) -> every wrong or repetitive answer
#   becomes a preference pair (rejected: its answer, chosen: the true one) -> a short DPO run with
#   TRL's DPOTrainer, probing every checkpoint -> chat questions to the SFT and the DPO model side
#   by side: people in SFT, people in the DPO pairs, and held-out people in neither.
#   bash scripts/quickstart_dpo.sh [OUT]       # OUT: launch/quickstart.sh's output dir (runs/quickstart)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-runs/quickstart}}
start=$(date +%s)

echo "== DPO 1/3 preference pairs from the SFT model's own answers (mini-lm preference-pairs)"
mini-lm preference-pairs "$OUT/sft" --qa "$OUT/world/qa_heldout.jsonl" \
    --exclude-probed "$OUT/world/probe_questions.yaml" --out "$OUT/preference.jsonl" \
    --samples 0 --max-new-tokens 32 --batch-size 128

echo "== DPO 2/3 DPO of the SFT model (recipes/dpo.py --config recipes/configs/quickstart/dpo.yaml), probes at every save"
python recipes/dpo.py --config recipes/configs/quickstart/dpo.yaml --model_name_or_path "$OUT/sft" \
    --train_files "$OUT/preference.jsonl" --output_dir "$OUT/dpo" \
    --probe_questions "$OUT/world/probe_questions.yaml" --disable_tqdm true

echo "== DPO 3/3 chat questions, greedy, SFT model -> DPO model"
python - "$OUT" <<'PY'
# Right answers (the expected fact), repetitive ones and stops at <|im_end|>, per group of people.
import sys
from mini_lm.generation import GenerationSettings, generate, load_for_generation, render_chat_prompt
from mini_lm.preference_pairs import exclude_probed, read_qa, rejection_reasons
out = sys.argv[1]
heldout = read_qa(f"{out}/world/qa_heldout.jsonl")
in_pairs, probed_people = exclude_probed(heldout, f"{out}/world/probe_questions.yaml")
groups = {
    "people in SFT": read_qa(f"{out}/world/qa_sft.jsonl")[::6][:100],
    "people in the DPO pairs": in_pairs[::6][:100],
    "held out of SFT and DPO": [r for r in heldout if r["person_id"] in probed_people],
}
greedy = GenerationSettings(do_sample=False, max_new_tokens=32)
models = {stage: load_for_generation(f"{out}/{stage}") for stage in ("sft", "dpo")}
for name, qa in groups.items():
    cells = []
    for stage, (model, tok) in models.items():
        prompts = [render_chat_prompt(tok, r["messages"][:-1]) for r in qa]
        results = generate(model, tok, prompts, greedy, batch_size=64)
        reasons = [rejection_reasons(x.text, x.stopped, len(x.token_ids), 32, r["expected"]) for r, x in zip(qa, results)]
        right = sum("wrong" not in why for why in reasons)
        loops = sum("repetitive" in why for why in reasons)
        stops = sum(x.stopped for x in results)
        cells.append(f"{stage}: right {right}/{len(qa)}, repetitive {loops}, stop {stops}")
    print(f"  {name:<24} " + "  ->  ".join(cells))
PY
echo "   DPO stage: $(( $(date +%s) - start ))s"
