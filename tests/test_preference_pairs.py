"""Preference pairs from a model's own answers (`mini-lm preference-pairs`, the quickstart's third
stage): wrong or repetitive answers become `rejected`, the reference answer `chosen`, in a format
recipes/dpo.py reads as it is."""

import json

import pytest
import torch
from transformers import Qwen2ForCausalLM

from mini_lm.cli import main as cli
from mini_lm.config import PreferenceDataArguments
from mini_lm.data.preference import load_preference_pairs
from mini_lm.data.synthetic import write_world
from mini_lm.preference_pairs import QAError, read_qa, rejection_reasons
from mini_lm.tokenization import save_tokenizer

from .conftest import tiny_qwen2_config


def test_rejection_reasons_are_the_probe_metrics():
    assert rejection_reasons("他出生在厦门。", True, 6, 40, "厦门") == []
    assert rejection_reasons("他出生在北京。", True, 6, 40, "厦门") == ["wrong"]
    assert rejection_reasons("厦门" + "，厦门在厦门" * 8, False, 40, 40, "厦门") == ["repetitive"]
    assert rejection_reasons("北京北京北京北京北京北京北京北京北京北京", False, 40, 40, "厦门") == [
        "wrong",
        "repetitive",
    ]


def test_bad_qa_records_name_the_line(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "q"}]}) + "\n", encoding="utf-8")
    with pytest.raises(QAError, match="qa.jsonl:1: 'messages' must end with"):
        read_qa(path)
    path.write_text(
        json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
        + "\n",
        encoding="utf-8",
    )
    with pytest.raises(QAError, match="qa.jsonl:1: missing field 'expected'"):
        read_qa(path)


def test_a_model_that_answers_wrong_gives_one_pair_per_question(tiny_tokenizer, tmp_path):
    qa = write_world(tmp_path / "world", seed=0, n_people=4, bios_per_person=1)["qa_sft"]
    config = tiny_qwen2_config(tiny_tokenizer, max_position_embeddings=128)
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(tmp_path / "model")  # random: every answer is wrong
    save_tokenizer(tiny_tokenizer, tmp_path / "model")
    out = tmp_path / "pairs.jsonl"
    argv = ["preference-pairs", str(tmp_path / "model"), "--qa", str(qa), "--out", str(out)]
    assert cli([*argv, "--limit", "6", "--samples", "1", "--max-new-tokens", "6"]) == 0
    written = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    source = [json.loads(line) for line in qa.read_text(encoding="utf-8").splitlines()][:6]
    assert len(written) == 6 and all("wrong" in p["reason"] for p in written)
    for pair, record in zip(written, source):
        assert pair["prompt"] == record["messages"][:1] and pair["chosen"] == record["messages"][1:]
        assert (
            pair["expected"] == record["expected"]
            and pair["rejected"][0]["content"] != record["messages"][1]["content"]
        )
    pairs = load_preference_pairs(
        PreferenceDataArguments(train_files=[str(out)])
    )  # what recipes/dpo.py reads
    assert pairs.stats.chat.files[str(out)]["format"] == "trl" and len(pairs.train) == 6
