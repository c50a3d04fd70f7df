"""recipes/dpo.py run for real on CPU with TRL's DPOTrainer: a tiny model learns the preferences of
the real dpo_zh_demo pairs (reward accuracy and margin rise), is probed at every save, saves a
model that plain transformers loads (with a model card), LoRA with the adapter-disabled reference
and the merged export; TRL's keys through the config; the DPO checks; every shipped DPO YAML."""

import dataclasses
import json
import logging
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
from trl import DPOConfig

from mini_lm.cli import main as cli
from mini_lm.config import DPO_ARGUMENTS, ConfigError, MiniLMDPOConfig, PreferenceDataArguments, parse_config
from mini_lm.validation import DPO_LOSS_TYPES, validate

from .conftest import REPO, run_card_snippet, run_module_main

DPO = REPO / "recipes/dpo.py"
QUESTIONS = """questions:
  - {id: cn, question: "中国的首都是哪里？", expected: 北京}
  - {id: en, question: "What is the capital of France?", expected: Paris}
"""


def dpo(*argv):
    return run_module_main(DPO, [str(a) for a in argv])


def history(out: Path) -> list[dict]:
    return json.loads((out / "trainer_state.json").read_text())["log_history"]


def make_chat_model(shared_data: Path, out: Path) -> Path:
    """A random-init tiny Qwen2 (hidden 32, 2 layers) with the MiniMind tokenizer and ChatML: the start."""
    from mini_lm.config import ModelArguments
    from mini_lm.models import build_model
    from mini_lm.tokenization import load_tokenizer, save_tokenizer, set_chat_template

    tokenizer = load_tokenizer(shared_data / "tokenizers/minimind")
    set_chat_template(tokenizer, "chatml")
    size = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    torch.manual_seed(0)
    model = build_model(
        ModelArguments(model_family="qwen2", intermediate_size=64, max_position_embeddings=128, **size),
        tokenizer,
    )
    model.save_pretrained(out)
    save_tokenizer(tokenizer, out)
    return out


@pytest.fixture(scope="module")
def chat_model(shared_data, tmp_path_factory) -> Path:
    return make_chat_model(shared_data, tmp_path_factory.mktemp("chat_model"))


@pytest.fixture(scope="module")
def questions(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("questions") / "questions.yaml"
    path.write_text(QUESTIONS, encoding="utf-8")
    return path


def tiny_run(chat_model, data, out, *extra, config="dpo_tiny.yaml"):
    return dpo(
        "--config",
        REPO / "recipes/configs/qwen2" / config,
        "--model_name_or_path",
        chat_model,
        "--train_files",
        data,
        "--max_length",
        "64",
        "--max_train_samples",
        "64",
        "--validation_split",
        "0",
        "--eval_strategy",
        "no",
        "--per_device_train_batch_size",
        "8",
        "--logging_steps",
        "1",
        "--disable_tqdm",
        "true",
        "--output_dir",
        out,
        *extra,
    )


@pytest.mark.slow
def test_tiny_dpo_learns_the_real_preferences_saves_a_loadable_model_and_probes(
    chat_model, questions, shared_data, tmp_path
):
    out = tmp_path / "dpo"
    tiny_run(
        chat_model,
        shared_data / "preference/dpo_zh_demo.json",
        out,
        "--max_steps",
        "20",
        "--learning_rate",
        "3e-3",
        "--save_steps",
        "10",
        "--probe_questions",
        questions,
        "--probe_max_new_tokens",
        "6",
    )
    logs = [h for h in history(out) if "rewards/accuracies" in h]
    first, last = logs[0], logs[-1]
    late = logs[-5:]  # the last 5 steps (5 batches of the same 40-odd training pairs)
    accuracy = sum(h["rewards/accuracies"] for h in late) / len(late)
    margin = sum(h["rewards/margins"] for h in late) / len(late)
    print(
        f"reward accuracy {first['rewards/accuracies']:.2f} -> {accuracy:.2f}, "
        f"margin {first['rewards/margins']:.4f} -> {margin:.3f} (steps 1 -> 16-20)"
    )
    # step 1: the policy is the reference, every reward is 0 (a tie counts as wrong)
    assert first["step"] == 1 and first["rewards/accuracies"] == 0.0 and abs(first["rewards/margins"]) < 1e-6
    assert accuracy >= 0.9 and margin > 1.0, (accuracy, margin)
    assert last["rewards/chosen"] > last["rewards/rejected"]
    assert all(h["tokens_per_second"] > 0 for h in logs)  # the instrumentation next to TRL's metrics

    probes = [json.loads(line) for line in (out / "probes.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted({p["step"] for p in probes}) == [10, 20]  # every DPO checkpoint was probed
    assert {(p["question_id"], p["decoding"]) for p in probes} == {
        (q, d) for q in ("cn", "en") for d in ("greedy", "sampled")
    }

    model = AutoModelForCausalLM.from_pretrained(out)  # plain transformers
    tokenizer = PreTrainedTokenizerFast.from_pretrained(out)
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "你好"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    generated = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert generated.shape[1] > ids["input_ids"].shape[1]
    start = AutoModelForCausalLM.from_pretrained(chat_model)
    assert not torch.equal(start.model.embed_tokens.weight, model.model.embed_tokens.weight)

    card = ModelCard.load(out / "README.md").data.to_dict()["mini_lm"]
    assert card["stage"] == "dpo" and card["steps"] == 20 and card["base_model"] == str(chat_model)
    assert card["data"][0]["records"] == 300 and len(card["data"][0]["sha256"]) == 64
    assert card["probe"]["step"] == 20 and card["loss_type"] == ["sigmoid"]
    assert card["rewards_accuracies"] == last["rewards/accuracies"]
    run_card_snippet(out)  # the card's loading code runs as written


@pytest.mark.slow
def test_lora_dpo_reference_is_the_adapter_disabled_model_and_export_merges(
    chat_model, shared_data, tmp_path, caplog
):
    out, merged = tmp_path / "lora", tmp_path / "merged"
    with caplog.at_level(logging.INFO, logger="mini_lm"):
        tiny_run(
            chat_model,
            shared_data / "preference/v1_dpo_demo.jsonl",
            out,
            "--max_length",
            "128",
            "--max_steps",
            "4",
            "--lora_r",
            "4",
            "--save_strategy",
            "no",
            config="dpo_tiny_lora.yaml",
        )
    assert "reference: the policy with its LoRA adapter disabled" in caplog.text
    assert caplog.text.count("model: Qwen2ForCausalLM") == 1  # one model built: no reference copy
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and not (out / "model.safetensors").exists()
    assert not list(out.glob("ref/*"))  # TRL's "ref" adapter copy is not made on this path
    logs = [h for h in history(out) if "rewards/margins" in h]
    assert len(logs) == 4 and logs[-1]["rewards/margins"] != 0.0  # the adapter moved away from the reference

    assert cli(["export", str(out), "--merge", "--output", str(merged)]) == 0
    card = ModelCard.load(merged / "README.md").data.to_dict()["mini_lm"]
    assert (
        card["stage"] == "merged" and card["adapter_stage"] == "dpo" and card["base_model"] == str(chat_model)
    )
    model = AutoModelForCausalLM.from_pretrained(merged)
    assert not any("lora" in name for name, _ in model.named_parameters())
    assert run_card_snippet(merged) is not None and run_card_snippet(out) is not None  # merged, and via peft


def test_trl_dpo_keys_are_config_keys_and_not_duplicated():
    model, data, lora, train, probe = parse_config(
        DPO_ARGUMENTS,
        ["--config", str(REPO / "recipes/configs/qwen2/dpo_tiny.yaml"), "--loss_type", "sigmoid", "sft"]
        + ["--loss_weights", "1.0", "0.5", "--beta", "0.3", "--precompute_ref_log_probs", "true"],
    )
    assert isinstance(train, MiniLMDPOConfig) and isinstance(train, DPOConfig)
    assert (train.loss_type, train.loss_weights, train.beta, train.precompute_ref_log_probs) == (
        ["sigmoid", "sft"],
        [1.0, 0.5],
        0.3,
        True,
    )
    assert train.max_length == 256 and not train.bf16 and not train.gradient_checkpointing  # CPU-safe
    dpo_fields = {f.name for f in dataclasses.fields(DPOConfig)}
    assert dpo_fields <= {f.name for f in dataclasses.fields(MiniLMDPOConfig)}
    assert not dpo_fields & {f.name for f in dataclasses.fields(PreferenceDataArguments)}
    with pytest.raises(ValueError, match="loss_weights"):  # TRL's own check, through our parser
        parse_config(
            DPO_ARGUMENTS, ["--output_dir", "x", "--loss_type", "sigmoid", "--loss_weights", "1", "2"]
        )


def test_our_list_of_dpo_losses_is_trls():
    help_text = next(f for f in dataclasses.fields(DPOConfig) if f.name == "loss_type").metadata["help"]
    listed = help_text.split("Possible values are:")[1].split(". If")[0]
    assert sorted(DPO_LOSS_TYPES) == sorted(name.strip(" `'") for name in listed.split(","))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["--model_name_or_path", ""], "DPO starts from a trained model"),
        (["--model_family", "bert"], "the BERT adapter has no DPO path"),
        (["--loss_type", "sigmoid", "dpo_plus"], "loss_type: unknown ['dpo_plus']"),
        (["--max_length", "4"], "max_length=4 is too short"),
        (["--lm_loss", "chunked"], "lm_loss: chunked does not apply to DPO"),
    ],
)
def test_bad_dpo_configs_fail_before_any_work(overrides, message):
    parsed = parse_config(
        DPO_ARGUMENTS, ["--config", str(REPO / "recipes/configs/qwen2/dpo_tiny.yaml"), *overrides]
    )
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate(parsed)


@pytest.mark.parametrize(
    "config", sorted(REPO.glob("recipes/configs/*/dpo*.yaml")), ids=lambda p: p.parent.name + "/" + p.name
)
def test_every_dpo_yaml_loads(config, shared_data):
    parsed = parse_config(DPO_ARGUMENTS, ["--config", str(config)])
    model, data, lora, train, probe = validate(parsed, files=False)  # runs/... are earlier steps' outputs
    assert model.model_name_or_path and data.train_files and train.max_length >= 64
    for path in data.train_files:
        if str(shared_data) in path:
            assert Path(path).is_file(), path
    if config.name == "dpo_qwen2.5_0.5b.yaml":  # the GPU recipe: bf16 + ZeRO-2 + FA2 (auto) + RPO-style loss
        assert (
            train.bf16 and train.deepspeed == "ds_configs/zero2.json" and model.attn_implementation == "auto"
        )
        assert train.loss_type == ["sigmoid", "sft"] and (REPO / train.deepspeed).is_file()
    if "lora" in config.name:
        assert lora.use_peft


@pytest.mark.slow
def test_precomputed_reference_keeps_no_second_model_and_evaluates(chat_model, shared_data, tmp_path):
    from mini_lm.callbacks import add_recipe_callbacks, preference_shape
    from mini_lm.config import LoraArguments, ModelArguments
    from mini_lm.data.preference import build_preference_datasets, load_preference_pairs
    from mini_lm.dpo import build_dpo_trainer
    from mini_lm.models import build_model
    from mini_lm.tokenization import load_tokenizer

    data_args = PreferenceDataArguments(
        train_files=[str(shared_data / "preference/dpo_zh_demo.json")],
        validation_split=0.1,
        max_train_samples=24,
    )
    args = MiniLMDPOConfig(
        output_dir=str(tmp_path / "run"),
        precompute_ref_log_probs=True,
        max_length=128,
        per_device_train_batch_size=4,
        max_steps=2,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
    )
    model_args = ModelArguments(model_name_or_path=str(chat_model))
    tokenizer = load_tokenizer(chat_model)
    data = build_preference_datasets(load_preference_pairs(data_args), tokenizer, data_args, args.max_length)
    trainer = build_dpo_trainer(
        model_args,
        LoraArguments(),
        args,
        build_model(model_args, tokenizer),
        tokenizer,
        data.train,
        data.eval,
    )
    assert trainer.ref_model is None and "ref_chosen_logps" in trainer.train_dataset.column_names
    add_recipe_callbacks(trainer, None, preference_shape(args))
    trainer.train()
    metrics = trainer.evaluate()
    assert 0.0 <= metrics["eval_rewards/accuracies"] <= 1.0 and "eval_perplexity" not in metrics
