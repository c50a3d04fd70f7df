"""recipes/sft.py run for real on CPU: from scratch on a real SFT set (loss falls, the model answers
in ChatML and stops at <|im_end|>), from a pretraining checkpoint with packing, LoRA + merged export,
the audit-data command, every shipped SFT YAML, and bad input failing before any training."""

import json
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoModelForCausalLM

from mini_lm.cli import main as cli
from mini_lm.config import (
    SFT_ARGUMENTS,
    ConfigError,
    parse_config,
)
from mini_lm.data.audit import LabelAuditError
from mini_lm.data.synthetic import write_world
from mini_lm.generation import GenerationSettings, generate, load_for_generation, render_chat_prompt
from mini_lm.tokenization import IM_END, ChatTemplateError
from mini_lm.validation import validate

from .conftest import REPO, run_card_snippet, run_module_main

SFT = REPO / "recipes/sft.py"
PRETRAIN = REPO / "recipes/pretrain.py"
SCRATCH = REPO / "recipes/configs/qwen2/sft_tiny_scratch.yaml"
NO_EVAL = ["--eval_strategy", "no", "--validation_split", "0"]
QUIET = ["--disable_tqdm", "true", "--report_to", "none", "--save_strategy", "no", *NO_EVAL]
TINY = [
    "--hidden_size",
    "64",
    "--num_hidden_layers",
    "2",
    "--num_attention_heads",
    "4",
    "--num_key_value_heads",
    "2",
    "--intermediate_size",
    "128",
    "--max_position_embeddings",
    "128",
    "--max_length",
    "128",
]


def sft(*argv):
    return run_module_main(SFT, [str(a) for a in argv])


def history(out: Path) -> list[dict]:
    return json.loads((out / "trainer_state.json").read_text())["log_history"]


def ask(model_dir, question: str, max_new_tokens: int = 48):
    model, tok = load_for_generation(str(model_dir))
    prompt = render_chat_prompt(tok, [{"role": "user", "content": question}])
    assert prompt.endswith("<|im_start|>assistant\n")
    result = generate(
        model, tok, [prompt], GenerationSettings(do_sample=False, max_new_tokens=max_new_tokens)
    )[0]
    return result, tok


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    return write_world(tmp_path_factory.mktemp("world"), seed=0, n_people=20, bios_per_person=2)


@pytest.fixture(scope="module")
def pretrained(world, tmp_path_factory) -> Path:
    """A (barely) pretrained tiny Qwen2 dir from the pretraining recipe: weights + its own tokenizer."""
    out = tmp_path_factory.mktemp("pretrain")
    run_module_main(
        PRETRAIN,
        [
            str(a)
            for a in [
                "--model_family",
                "qwen2",
                "--hidden_size",
                "32",
                "--num_hidden_layers",
                "2",
                "--num_attention_heads",
                "4",
                "--max_position_embeddings",
                "128",
                "--block_size",
                "64",
                "--tokenizer_vocab_size",
                "500",
                "--train_files",
                world["bios"],
                "--per_device_train_batch_size",
                "4",
                "--max_steps",
                "4",
                "--output_dir",
                out,
                "--overwrite_output_dir",
                "true",
                *QUIET[:6],
            ]
        ],
    )
    return out


@pytest.mark.slow
def test_sft_from_scratch_learns_real_data_answers_in_chatml_and_stops(shared_data, tmp_path):
    out = tmp_path / "scratch"
    sft(
        "--config",
        SCRATCH,
        *TINY,
        "--train_files",
        shared_data / "sft/identity.json",
        "--mix_weights",
        "1",
        "--tokenizer_vocab_size",
        "700",
        "--per_device_train_batch_size",
        "8",
        "--max_steps",
        "300",
        "--learning_rate",
        "3e-3",
        "--warmup_steps",
        "20",
        "--logging_steps",
        "10",
        "--output_dir",
        out,
        *QUIET,
    )
    losses = [h["loss"] for h in history(out) if "loss" in h]
    print(f"supervised-token loss {losses[0]:.3f} -> {losses[-1]:.3f} over {len(losses) * 10} steps")
    assert len(losses) == 30 and losses[-1] < 0.25 * losses[0], losses

    result, tok = ask(out, "Who are you?")
    print("Who are you? ->", repr(result.text))
    assert result.stopped and result.token_ids[-1] == tok.convert_tokens_to_ids(IM_END)
    assert "MiniLM" in result.text and "{{" not in result.text
    reloaded = AutoModelForCausalLM.from_pretrained(out)  # plain transformers, ChatML template saved
    assert reloaded.generation_config.eos_token_id and "<|im_start|>" in tok.chat_template


@pytest.mark.slow
def test_sft_from_pretraining_checkpoint_packed(pretrained, world, tmp_path, caplog):
    out = tmp_path / "sft"
    with caplog.at_level("INFO", logger="mini_lm"):
        sft(
            "--config",
            REPO / "recipes/configs/quickstart/sft.yaml",
            "--model_name_or_path",
            pretrained,
            "--train_files",
            world["qa_sft"],
            "--output_dir",
            out,
            "--max_steps",
            "8",
            "--logging_steps",
            "4",
            "--per_device_train_batch_size",
            "4",
            *QUIET,
            "--save_strategy",
            "steps",
            "--save_steps",
            "4",
            "--probe_questions",
            world["probe_questions"],
            "--probe_max_new_tokens",
            "8",
        )
    assert "packed rows with position_ids restarting per conversation" in caplog.text
    assert "packed-attention check passed" in caplog.text
    info = json.loads((out / "run_info.json").read_text())
    assert info["world_size"] == 1 and info["attn_implementation"] == "sdpa"
    base = AutoModelForCausalLM.from_pretrained(pretrained)
    tuned = AutoModelForCausalLM.from_pretrained(out)
    assert not torch.equal(base.model.embed_tokens.weight, tuned.model.embed_tokens.weight)  # started from it
    assert (out / "tokenizer.json").is_file() and (out / "run_info.json").is_file()
    card = ModelCard.load(out / "README.md").data.to_dict()["mini_lm"]  # the model card
    records = len(Path(world["qa_sft"]).read_text(encoding="utf-8").splitlines())
    assert card["stage"] == "sft" and card["base_model"] == str(pretrained) and card["steps"] == 8
    assert card["data"] == [
        {
            **card["data"][0],
            "path": str(world["qa_sft"]),
            "format": "messages",
            "records": records,
            "usable": records,
        }
    ]
    # the checkpoint probe runs in SFT as in pretraining: every save, chat questions in the template
    probes = [json.loads(line) for line in (out / "probes.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted({p["step"] for p in probes}) == [4, 8]
    chat = [p for p in probes if p["mode"] == "chat"]
    # generated under both decodings; the world's multiple-choice chat questions scored by likelihood
    assert {(p["step"], p["decoding"]) for p in chat} == {
        (step, decoding) for step in (4, 8) for decoding in ("greedy", "sampled", "likelihood")
    }


@pytest.mark.slow
def test_lora_sft_saves_adapter_and_export_merges(pretrained, world, tmp_path):
    out, merged = tmp_path / "lora", tmp_path / "merged"
    sft(
        "--config",
        REPO / "recipes/configs/qwen2/sft_tiny_lora.yaml",
        "--model_name_or_path",
        pretrained,
        "--train_files",
        world["qa_sft"],
        "--mix_weights",
        "1",
        "--max_length",
        "128",
        "--output_dir",
        out,
        "--max_steps",
        "6",
        "--logging_steps",
        "3",
        "--per_device_train_batch_size",
        "4",
        "--lora_r",
        "4",
        *QUIET,
    )
    assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
    assert cli(["export", str(out), "--output", str(merged)]) == 2  # --merge is required
    assert cli(["export", str(out), "--merge", "--output", str(merged)]) == 0

    from peft import PeftModel

    model = AutoModelForCausalLM.from_pretrained(merged)  # plain transformers, no peft
    assert not any("lora" in name for name, _ in model.named_parameters())
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(pretrained), str(out)).eval()
    base = AutoModelForCausalLM.from_pretrained(pretrained).eval()
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    with torch.no_grad():
        merged_logits, peft_logits, base_logits = (m.eval()(ids).logits for m in (model, peft_model, base))
    assert torch.allclose(merged_logits, peft_logits, atol=1e-5)
    assert not torch.allclose(merged_logits, base_logits, atol=1e-4)  # the adapter did learn something
    result, _ = ask(merged, "Who are you?", max_new_tokens=4)
    assert len(result.token_ids) >= 1
    adapter_card, merged_card = (ModelCard.load(d / "README.md").data for d in (out, merged))
    assert adapter_card.library_name == "peft" and merged_card.library_name == "transformers"
    facts = merged_card.to_dict()["mini_lm"]
    assert (
        facts["stage"] == "merged"
        and facts["adapter_stage"] == "sft"
        and facts["base_model"] == str(pretrained)
    )
    assert facts["steps"] == 6 and facts["data"] == adapter_card.to_dict()["mini_lm"]["data"]
    assert run_card_snippet(merged)  # plain transformers, as the card says


def test_audit_data_command(shared_data, capsys):
    rc = cli(
        [
            "audit-data",
            "--config",
            str(SCRATCH),
            "--train_files",
            str(shared_data / "sft/identity.json"),
            "--mix_weights",
            "1",
            "--tokenizer_name_or_path",
            str(shared_data / "tokenizers/qwen2.5"),
            "--max_length",
            "160",
            "--samples",
            "2",
            *NO_EVAL,
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "SFT label audit" in text and "samples: 91 -> 91 kept; dropped: none; truncated" in text
    assert text.count("<|im_start|>assistant\n⟦") == 2 and "{{" not in text
    assert "ending in a supervised end-of-turn token: 91" in text


def test_audit_data_command_fails_on_unusable_config(shared_data, tmp_path, capsys):
    (tmp_path / "long.jsonl").write_text(
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "一个很长的问题" * 20},
                    {"role": "assistant", "content": "答"},
                ]
            }
        )
        + "\n"
    )
    rc = cli(
        [
            "audit-data",
            "--config",
            str(SCRATCH),
            "--train_files",
            str(tmp_path / "long.jsonl"),
            "--mix_weights",
            "1",
            "--tokenizer_name_or_path",
            str(shared_data / "tokenizers/qwen2.5"),
            "--max_length",
            "16",
            *NO_EVAL,
        ]
    )
    assert rc == 1 and "PROBLEM: no trainable sample: all 1 dropped" in capsys.readouterr().out
    assert cli(["audit-data", "--config", str(SCRATCH), "--no_such_key", "1"]) == 2  # ConfigError, reported


@pytest.mark.parametrize(
    "config", sorted(REPO.glob("recipes/configs/*/sft*.yaml")), ids=lambda p: p.parent.name + "/" + p.name
)
def test_every_sft_yaml_loads(config, shared_data):
    model, data, lora, train, _ = parse_config(SFT_ARGUMENTS, ["--config", str(config)])
    validate((model, data, lora, train), files=False)  # model dirs of earlier steps (runs/...)
    assert data.train_files and data.max_length >= 64
    for path in data.train_files:
        if str(shared_data) in path:
            assert Path(path).is_file(), path
    if config.name == "sft_qwen2.5_0.5b.yaml":  # the GPU recipe: bf16 + ZeRO-2 + FA2 (auto) + packing
        assert train.bf16 and train.deepspeed == "ds_configs/zero2.json" and data.packing
        assert model.attn_implementation == "auto" and (REPO / train.deepspeed).is_file()
    if config.name == "sft_tiny_lora.yaml":
        assert lora.use_peft and lora.lora_r == 16


def test_every_sample_too_long_fails_before_training(shared_data, tmp_path):
    with pytest.raises(LabelAuditError, match="no trainable sample: all 91 dropped \\(prompt longer than"):
        sft(
            "--config",
            SCRATCH,
            "--train_files",
            shared_data / "sft/identity.json",
            "--mix_weights",
            "1",
            "--tokenizer_name_or_path",
            shared_data / "tokenizers/qwen2.5",
            "--max_length",
            "20",
            "--output_dir",
            tmp_path / "out",
            *QUIET,
        )
    assert not (tmp_path / "out" / "run_info.json").exists()


def test_tokenizer_without_chat_template_fails(shared_data, tmp_path):
    with pytest.raises(ChatTemplateError, match="no chat template and none is configured"):
        sft(
            "--config",
            SCRATCH,
            "--train_files",
            shared_data / "sft/identity.json",
            "--mix_weights",
            "1",
            "--tokenizer_name_or_path",
            shared_data / "tokenizers/gpt2",
            "--output_dir",
            tmp_path / "out",
            *QUIET,
        )


def test_eval_without_validation_data_is_a_config_error(shared_data, tmp_path):
    with pytest.raises(ConfigError, match="no validation data"):
        sft("--config", SCRATCH, "--validation_split", "0", "--output_dir", tmp_path / "out")


TOOLS = REPO / "recipes/configs/qwen2/sft_tiny_tools.yaml"


@pytest.mark.parametrize("tokenizer", ["qwen2.5", "trained"])
def test_audit_data_json_on_tool_data(tokenizer, shared_data, tmp_path, capsys):
    """audit-data --json on the glaive tool set (+ a small file with an unused field and plain-text
    records): kept/dropped, supervised fraction, closed answers, tool calls supervised, tool results
    masked, fields ignored, with the real Qwen2.5 tokenizer and with one trained from the data."""
    extra = tmp_path / "extra.jsonl"
    extra.write_text(
        json.dumps(
            {"id": 7, "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
        )
        + "\n"
        + json.dumps({"prompt": "1+1=", "completion": "2"})
        + "\n",
        encoding="utf-8",
    )
    glaive = str(shared_data / "sft/glaive_toolcall_en_demo.json")
    report = tmp_path / "audit" / "audit.json"
    tok = (
        ["--tokenizer_name_or_path", str(shared_data / "tokenizers/qwen2.5")]
        if tokenizer == "qwen2.5"
        else []
    )
    argv = ["audit-data", "--config", str(TOOLS), "--json", str(report), "--train_files", glaive, str(extra)]
    argv += ["--max_length", "16384", "--max_position_embeddings", "16384", *tok, *NO_EVAL]
    rc = cli([*argv, "--output_dir", str(tmp_path / "run")])
    assert rc == 0, capsys.readouterr()
    data = json.loads(report.read_text(encoding="utf-8"))
    assert data["chat"]["files"][glaive] == {
        "format": "sharegpt",
        "records": 300,
        "kept": 300,
        "skipped": {},
        "ignored_fields": {},
    }
    assert data["chat"]["files"][str(extra)]["format"] == "messages+prompt_completion"
    assert data["chat"]["ignored_fields"] == {"id": 1}
    assert (data["samples_in"], data["kept"], data["dropped"], data["truncated"]) == (302, 302, {}, 0)
    assert data["answers"] == data["answers_closed"] == 957 + 2
    assert (data["tool_calls"], data["tool_results"], data["tool_samples"]) == (211, 211, 191)
    assert 0.4 < data["supervised_fraction"] < 0.7 and data["problems"] == []
    if tokenizer == "trained":  # ChatML with generation markers: cross-checked
        assert data["marker_check"][0] >= 150 and data["marker_check"][2] == 0
    print(f"{tokenizer}: supervised {data['supervised_fraction']:.1%} of {data['tokens']} tokens")
