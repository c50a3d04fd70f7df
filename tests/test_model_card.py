"""Model cards: every final model a recipe saves gets a README.md in the Hugging Face convention
(YAML front matter + Markdown) saying what it is, where it started, the data files with record
counts and a content hash, steps, tokens, final losses, the last probe and how to load it.
(SFT / DPO / BERT adapter / merged export cards are checked in their recipes' tests.)"""

import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from huggingface_hub import ModelCard

from mini_lm.data.synthetic import write_world
from mini_lm.model_card import count_records, describe_file

from .conftest import REPO, run_card_snippet, run_module_main


def test_a_pretraining_run_gets_a_card_with_its_facts(tmp_path):
    bios = write_world(tmp_path / "world", seed=0, n_people=10, bios_per_person=1)["bios"]
    out = tmp_path / "run"
    metrics = run_module_main(
        REPO / "recipes/pretrain.py",
        [
            str(a)
            for a in [
                *["--hidden_size", 32, "--num_hidden_layers", 2, "--num_attention_heads", 4],
                *["--max_position_embeddings", 64, "--block_size", 32, "--tokenizer_vocab_size", 320],
                *["--per_device_train_batch_size", 4, "--max_steps", 4, "--logging_steps", 2],
                *[
                    "--save_steps",
                    2,
                    "--probe_max_new_tokens",
                    4,
                    "--eval_strategy",
                    "steps",
                    "--eval_steps",
                    4,
                ],
                *[
                    "--train_files",
                    bios,
                    "--output_dir",
                    out,
                    "--report_to",
                    "none",
                    "--disable_tqdm",
                    "true",
                ],
            ]
        ],
    )
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "transformers" and "pretraining" in card.data.tags
    assert card.data.get("license") is None and "## License" in card.text  # left for the user
    facts = card.data.to_dict()["mini_lm"]
    state = json.loads((out / "trainer_state.json").read_text())
    last_loss = [h["loss"] for h in state["log_history"] if "loss" in h][-1]
    assert facts["stage"] == "pretraining" and facts.get("base_model") is None
    assert facts["steps"] == 4 and facts["tokens_seen"] == state["num_input_tokens_seen"] > 0
    assert facts["final_train_loss"] == last_loss and facts["eval_loss"] == metrics["eval_loss"]
    assert facts["eval_perplexity"] == pytest.approx(metrics["eval_perplexity"])
    (data,) = facts["data"]
    raw = bios.read_bytes()
    assert data["path"] == str(bios) and data["records"] == raw.count(b"\n") == 20
    assert data["sha256"] == hashlib.sha256(raw).hexdigest() and data["bytes"] == len(raw)
    assert facts["train_examples"] > 0 and facts["probe"]["step"] == 4
    assert "random initialisation" in card.text and "## Last checkpoint probe (step 4)" in card.text
    assert run_card_snippet(out)  # "How to load" runs as written, with plain transformers


def test_record_counts_and_hashes_per_file_kind(tmp_path):
    (tmp_path / "a.txt").write_text("one\n\ntwo\nthree\n", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text('{"text": "x"}\n{"text": "y"}\n', encoding="utf-8")
    (tmp_path / "c.json").write_text('[{"a": 1}, {"a": 2}, {"a": 3}]', encoding="utf-8")
    pq.write_table(pa.table({"text": ["p", "q", "r", "s"]}), tmp_path / "d.parquet")
    assert [count_records(tmp_path / n) for n in ("a.txt", "b.jsonl", "c.json", "d.parquet")] == [3, 2, 3, 4]
    described = describe_file(str(tmp_path / "c.json"), {"format": "alpaca", "records": 3, "kept": 2})
    assert described["usable"] == 2 and described["format"] == "alpaca" and len(described["sha256"]) == 64
    assert describe_file("user/dataset", {"hub": True}) == {"path": "user/dataset", "source": "hub dataset"}
    assert describe_file(str(tmp_path / "gone.txt"), {})["source"] == "missing when the card was written"
