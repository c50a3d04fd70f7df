"""recipes/mlm.py, the BERT adapter's training: windows, collator, configs, bad input, a real run."""

import json
import math

import pytest
import torch
from datasets import Dataset

from mini_lm.cli import main as cli
from mini_lm.config import MLM_ARGUMENTS, ConfigError, parse_config
from mini_lm.data.next_token import NextTokenCollator, cut_windows
from mini_lm.generation import GenerationSettings, generate, load_for_generation
from mini_lm.validation import validate

from .conftest import REPO, TINY_BERT_TEXT, run_module_main

RECIPE = REPO / "recipes/mlm.py"
CONFIGS = sorted((REPO / "recipes/configs/bert").glob("*.yaml"))


def mlm(*argv):
    return run_module_main(RECIPE, [str(a) for a in argv])


def test_cut_windows_and_collator(tiny_bert_tokenizer):
    blocks = Dataset.from_dict({"input_ids": [[5, 6, 7, 8], [9, 10], [11, 12, 13, 14]]})
    rows = cut_windows(blocks, min_context=3, seed=0)
    assert rows[0] == {"input_ids": [5, 6, 7], "labels": 8}
    assert rows[1] == {"input_ids": [9], "labels": 10}  # a short tail block keeps what it has
    varied = cut_windows(Dataset.from_dict({"input_ids": [list(range(20, 33))] * 200}), min_context=1, seed=0)
    lengths = [len(r) for r in varied["input_ids"]]
    assert set(lengths) == set(range(1, 13))  # uniform over 1..12
    assert all(
        r["labels"] == 32 and r["input_ids"] == list(range(32 - len(r["input_ids"]), 32)) for r in varied
    )
    assert (
        cut_windows(Dataset.from_dict({"input_ids": [list(range(20, 33))] * 200}), 1, seed=0)["input_ids"]
        == varied["input_ids"]
    )  # seeded: the same rows every run and every epoch
    batch = NextTokenCollator(tiny_bert_tokenizer)([rows[0], rows[1]])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [0, 0, 9]]  # left-padded
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]] and batch["labels"].tolist() == [8, 10]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_every_bert_yaml_parses_and_checks(config, shared_data):
    model, data, mlm_args, train, _ = validate(parse_config(MLM_ARGUMENTS, ["--config", str(config)]))
    assert model.model_family == "bert" and (shared_data / "tokenizers/bert-base-chinese/vocab.txt").samefile(
        f"{model.tokenizer_name_or_path}/vocab.txt"
    )
    if config.name == "mlm_seed.yaml":  # seed 001: max_len 15, batch 64, lr 1e-5, 50,000 samples, 20 epochs
        assert (mlm_args.max_len, train.per_device_train_batch_size, train.learning_rate) == (15, 64, 1e-5)
        assert (mlm_args.max_train_samples, train.num_train_epochs, model.hidden_size) == (50000, 20, 768)


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory, tiny_bert_tokenizer) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("mlm")
    corpus = folder / "corpus.txt"
    corpus.write_text((TINY_BERT_TEXT + "\n") * 40, encoding="utf-8")
    vocab = folder / "vocab"
    tiny_bert_tokenizer.save_pretrained(vocab)  # a saved adapter tokenizer dir works as the vocabulary
    return str(corpus), str(vocab)


TINY = [
    "--model_family",
    "bert",
    "--hidden_size",
    "32",
    "--num_hidden_layers",
    "2",
    "--num_attention_heads",
    "4",
    "--max_position_embeddings",
    "16",
    "--max_len",
    "10",
    "--per_device_train_batch_size",
    "8",
    "--disable_tqdm",
    "true",
    "--report_to",
    "none",
    "--save_strategy",
    "no",
    "--logging_steps",
    "2",
]


def test_tiny_run_saves_a_dir_that_generates(tiny_corpus, tmp_path):
    corpus, vocab = tiny_corpus
    out = tmp_path / "run"
    metrics = mlm(
        *TINY,
        "--train_files",
        corpus,
        "--tokenizer_name_or_path",
        vocab,
        "--output_dir",
        out,
        "--max_steps",
        "4",
        "--validation_split",
        "0.1",
        "--eval_strategy",
        "steps",
        "--eval_steps",
        "4",
    )
    assert math.isfinite(metrics["eval_loss"])
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "bert_next_token" and config["context_window"] == 7  # max_len 10 - 3
    assert json.loads((out / "run_info.json").read_text())["global_batch_size"] == 8
    model, tok = load_for_generation(str(out))
    result = generate(model, tok, ["宝玉笑道"], GenerationSettings(do_sample=False, max_new_tokens=5))[0]
    assert len(result.token_ids) == 5


def test_checkpoints_of_the_bert_adapter_are_probed(tiny_corpus, tmp_path, caplog):
    """The checkpoint probe goes through the one generation path, so it needs nothing BERT-specific:
    raw prompts are answered at every save; the built-in chat questions are skipped and counted
    (a WordPiece vocabulary has no chat template)."""
    corpus, vocab = tiny_corpus
    out = tmp_path / "run"
    with caplog.at_level("WARNING", logger="mini_lm"):
        mlm(
            *TINY,
            "--train_files",
            corpus,
            "--tokenizer_name_or_path",
            vocab,
            "--output_dir",
            out,
            "--max_steps",
            "4",
            "--save_strategy",
            "steps",
            "--save_steps",
            "2",
            "--probe_max_new_tokens",
            "6",
            "--probe_decoding",
            "greedy",
        )
    assert "built-in chat questions skipped, the tokenizer has no chat template" in caplog.text
    probes = [json.loads(line) for line in (out / "probes.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted({p["step"] for p in probes}) == [2, 4] and {p["mode"] for p in probes} == {"raw"}
    assert all((out / f"checkpoint-{step}/probe.jsonl").is_file() for step in (2, 4))
    assert all(p["length_tokens"] == 6 or p["eos"] for p in probes)  # it generated, left to right


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--model_family", "qwen2"], "trains the BERT adapter: set model_family: bert"),
        (["--max_len", "3"], "max_len=3 leaves no context"),
        (["--min_context", "8"], r"min_context=8 must be in \[1, max_len - 3 = 7\]"),
        (["--max_len", "17"], "max_len=17 exceeds max_position_embeddings=16"),
        (["--block_size", "64"], "set max_len instead of block_size"),
        (["--tokenizer_name_or_path", ""], "no vocabulary"),
        (["--eval_strategy", "steps", "--validation_split", "0"], "no validation data"),
    ],
)
def test_bad_config_fails_clearly(tiny_corpus, tmp_path, extra, message):
    corpus, vocab = tiny_corpus
    with pytest.raises(ConfigError, match=message):
        mlm(
            *TINY,
            "--train_files",
            corpus,
            "--tokenizer_name_or_path",
            vocab,
            "--output_dir",
            tmp_path,
            *extra,
        )


def next_token_loss(model, windows: list[list[int]], shuffle_contexts: bool = False) -> float:
    """Mean loss of each window's last token given the rest; shuffled: given another window's rest."""
    contexts = torch.tensor([w[:-1] for w in windows])
    if shuffle_contexts:
        contexts = contexts[torch.randperm(len(contexts), generator=torch.Generator().manual_seed(0))]
    with torch.no_grad():
        return model(input_ids=contexts, labels=torch.tensor([w[-1] for w in windows])).loss.item()


@pytest.mark.slow
def test_tiny_bert_learns_the_next_character_of_a_real_novel(shared_data, tmp_path, capsys):
    out = tmp_path / "run"
    metrics = mlm(
        "--config",
        REPO / "recipes/configs/bert/mlm_tiny.yaml",
        "--output_dir",
        out,
        "--eval_on_start",
        "true",
        "--disable_tqdm",
        "true",
    )
    evals = [
        h["eval_loss"]
        for h in json.loads((out / "trainer_state.json").read_text())["log_history"]
        if "eval_loss" in h
    ]
    start, end = evals[0], metrics["eval_loss"]
    report = [f"eval next-token loss {start:.3f} -> {end:.3f}"]
    assert start > 9.5  # ~ln(21,128): untrained
    assert end < start - 3.0, (start, end)

    # It reads its context: held-out windows score better with their own context than with another's.
    model, tok = load_for_generation(str(out))
    text = (shared_data / "corpus/zh/hongloumeng.txt").read_text(encoding="utf-8")[-60000:]
    ids = tok(text, add_special_tokens=False)["input_ids"]
    windows = [ids[i : i + 13] for i in range(0, len(ids) - 13, 13)][:1024]
    own, other = next_token_loss(model, windows), next_token_loss(model, windows, shuffle_contexts=True)
    report.append(f"held-out loss with its own context {own:.3f}, with a shuffled context {other:.3f}")
    assert own < other - 0.05, (own, other)

    # ... and writes through the shared generate path and the CLI
    results = generate(
        model, tok, ["宝玉笑道：", "黛玉听了，"], GenerationSettings(do_sample=False, max_new_tokens=20)
    )
    report += [r.prompt + r.text for r in results]
    with capsys.disabled():
        print("\n" + "\n".join(report))
    for r in results:
        assert len(r.token_ids) >= 5 and any("\u4e00" <= ch <= "\u9fff" or ch in "，。" for ch in r.text)
    capsys.readouterr()
    assert cli(["generate", str(out), "--prompt", "宝玉笑道：", "--greedy", "--max-new-tokens", "20"]) == 0
    assert capsys.readouterr().out.startswith(f"[宝玉笑道：] -> 宝玉笑道：{results[0].text}\n")
