"""The pretraining recipe run for real (tiny models, CPU): end to end, reporting, resume, bad input."""

import json
import logging
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mini_lm.config import ConfigError
from mini_lm.data.corpus import CorpusError
from mini_lm.data.synthetic import write_world
from mini_lm.tokenization import TokenizerError, load_tokenizer

from .conftest import REPO, run_module_main

RECIPE = REPO / "recipes/pretrain.py"
TINY = [
    "--model_family",
    "qwen2",
    "--hidden_size",
    "32",
    "--num_hidden_layers",
    "2",
    "--num_attention_heads",
    "4",
    "--max_position_embeddings",
    "64",
    "--block_size",
    "32",
    "--tokenizer_vocab_size",
    "320",
    "--per_device_train_batch_size",
    "4",
    "--logging_steps",
    "2",
    "--disable_tqdm",
    "true",
    "--report_to",
    "none",
    "--save_strategy",
    "no",
    "--eval_strategy",
    "no",
    "--probe",
    "false",
]


@pytest.fixture(scope="module")
def bios(tmp_path_factory) -> str:
    return str(write_world(tmp_path_factory.mktemp("world"), seed=0, n_people=30, bios_per_person=2)["bios"])


def pretrain(*argv):
    return run_module_main(RECIPE, [str(a) for a in argv])


def history(out: Path) -> list[dict]:
    return json.loads((out / "trainer_state.json").read_text())["log_history"]


@pytest.mark.slow
def test_tiny_qwen2_learns_a_real_corpus_and_reloads_with_plain_transformers(shared_data, tmp_path):
    out = tmp_path / "run"
    metrics = pretrain(
        "--config",
        REPO / "recipes/configs/qwen2/pretrain_tiny.yaml",
        "--output_dir",
        out,
        "--eval_on_start",
        "true",
        "--disable_tqdm",
        "true",
        "--max_steps",
        "150",
        "--eval_steps",
        "75",
        "--save_steps",
        "75",
    )  # half the config's 300 steps: eval loss 8.3 -> 5.5 (measured), the bar below is a 1.2 drop
    evals = [h["eval_loss"] for h in history(out) if "eval_loss" in h]
    start, end = evals[0], metrics["eval_loss"]
    print(f"eval loss {start:.3f} -> {end:.3f}")
    assert start > 8.0  # ~ln(4032): an untrained model
    assert end < start - 1.2, (start, end)
    assert metrics["eval_perplexity"] == pytest.approx(torch.tensor(end).exp().item(), rel=1e-4)
    train_logs = [h for h in history(out) if "loss" in h]
    assert all(h["tokens_per_second"] > 0 for h in train_logs)
    info = json.loads((out / "run_info.json").read_text())
    assert info["world_size"] == 1 and info["tokens_per_step"] == 16 * 128

    # the saved dir is a plain HF checkpoint
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    text = "宝玉笑道：“你们123 hello”"
    assert tokenizer(text)["input_ids"] == load_tokenizer(out / "tokenizer")(text)["input_ids"]
    prompt = tokenizer("宝玉", return_tensors="pt")
    generated = model.generate(**prompt, max_new_tokens=20, do_sample=False)
    continuation = tokenizer.decode(generated[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    print("宝玉" + continuation)
    assert len(continuation) >= 3 and any("\u4e00" <= ch <= "\u9fff" for ch in continuation)


def test_reports_to_wandb_offline_and_tensorboard_with_mfu(bios, tmp_path, monkeypatch):
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "")
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    out = tmp_path / "run"
    pretrain(
        *TINY,
        "--train_files",
        bios,
        "--output_dir",
        out,
        "--max_steps",
        "6",
        "--report_to",
        "wandb,tensorboard",
        "--peak_tflops",
        "0.001",
    )
    runs = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert runs and runs[0].stat().st_size > 0
    assert list((out / "runs").rglob("events.out.tfevents.*"))
    logs = [h for h in history(out) if "loss" in h]
    assert logs and all(0 < h["mfu"] for h in logs)


def test_resume_continues_and_fresh_run_refuses_old_dir(bios, tmp_path):
    out = tmp_path / "run"
    common = [
        *TINY,
        "--train_files",
        bios,
        "--output_dir",
        out,
        "--save_strategy",
        "steps",
        "--save_steps",
        "4",
    ]
    pretrain(*common, "--max_steps", "4")
    assert (out / "checkpoint-4").is_dir()
    with pytest.raises(FileExistsError, match="checkpoint-4.*resume_from_checkpoint last"):
        pretrain(*common, "--max_steps", "8")
    pretrain(*common, "--max_steps", "8", "--resume_from_checkpoint", "last")
    steps = [h["step"] for h in history(out) if "loss" in h]
    assert steps == [2, 4, 6, 8]  # the resumed run kept the first 4 steps' logs and added 4 more
    pretrain(*common, "--max_steps", "2", "--overwrite_output_dir", "true")


@pytest.mark.parametrize(
    "case", ["missing_corpus", "empty_corpus", "unknown_key", "bad_tokenizer_dir", "no_tokenizer"]
)
def test_bad_input_fails_clearly(case, bios, tmp_path):
    out = ["--output_dir", str(tmp_path / "out")]
    if case == "missing_corpus":
        with pytest.raises(CorpusError, match="corpus path not found: .*nowhere.txt"):
            pretrain(*TINY, *out, "--train_files", tmp_path / "nowhere.txt", "--max_steps", "1")
    elif case == "empty_corpus":
        (tmp_path / "empty.jsonl").write_text('{"text": ""}\n{"text": "  "}\n')
        with pytest.raises(CorpusError, match="has no documents"):
            pretrain(*TINY, *out, "--train_files", tmp_path / "empty.jsonl", "--max_steps", "1")
    elif case == "unknown_key":
        cfg = tmp_path / "bad.yaml"
        cfg.write_text(f"train_files: [{bios}]\nhidden_sise: 32\n")
        with pytest.raises(ConfigError, match=r"bad\.yaml.*'hidden_sise' \(did you mean 'hidden_size'\?\)"):
            pretrain("--config", cfg, *out)
    elif case == "bad_tokenizer_dir":
        (tmp_path / "tok").mkdir()
        (tmp_path / "tok" / "config.json").write_text("{}")
        with pytest.raises(TokenizerError, match="not a tokenizer dir"):
            pretrain(*TINY, *out, "--train_files", bios, "--tokenizer_name_or_path", tmp_path / "tok")
    else:
        with pytest.raises(ValueError, match="no tokenizer"):
            pretrain(*TINY, *out, "--train_files", bios, "--tokenizer_vocab_size", "0")


def test_real_users_corpora_train(tmp_path, caplog):
    """A folder as users bring it: chinese-poetry JSON (paragraphs as a list), GBK .txt and .jsonl,
    a BOM-prefixed .tsv, and a README that is not corpus. Once: "has no documents" for the JSON,
    a bare UnicodeDecodeError for the GBK files, the README ignored silently, and 100 passes over
    a tiny corpus without a word."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    poems = [
        {"author": "李白", "paragraphs": ["床前明月光，疑是地上霜。", "举头望明月，低头思故乡。"]},
        {"author": "王之涣", "paragraphs": ["白日依山尽，黄河入海流。", "欲穷千里目，更上一层楼。"]},
    ]
    (folder / "poet.tang.0.json").write_text(json.dumps(poems, ensure_ascii=False), encoding="utf-8")
    story = "话说贾宝玉在家中读书，忽然听见外面有人说话。\r\n黛玉笑道：“你又来了。”\r\n"
    (folder / "gbk.txt").write_bytes((story * 2).encode("gbk"))
    rows = [{"paragraphs": line} for line in story.splitlines()]
    (folder / "gbk.jsonl").write_bytes(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("gbk")
    )
    (folder / "extra.tsv").write_bytes(b"\xef\xbb\xbfparagraphs\n" + "王伟出生于1987年。\n".encode())
    (folder / "README.md").write_text("# not corpus\n", encoding="utf-8")
    out = tmp_path / "run"
    with caplog.at_level(logging.INFO):
        metrics = pretrain(
            *TINY, "--train_files", folder, "--text_field", "paragraphs", "--output_dir", out,
            "--max_steps", "50", "--validation_split", "0",
        )  # fmt: skip
    assert math.isfinite(metrics["train_loss"]) and (out / "model.safetensors").is_file()
    assert "gbk.txt: not UTF-8; decoding as gb18030" in caplog.text
    assert "gbk.jsonl: not UTF-8; decoding as gb18030" in caplog.text
    assert "ignored 1 file(s) of other types: README.md" in caplog.text
    assert "passes over its training data" in caplog.text  # 50 steps x 4 rows over 8 blocks: 25 passes
    vocab = load_tokenizer(out / "tokenizer").get_vocab()
    assert "\ufeff" not in "".join(
        load_tokenizer(out / "tokenizer").convert_ids_to_tokens(list(vocab.values()))
    )
    tok = load_tokenizer(out / "tokenizer")
    assert tok.decode(tok("床前明月光")["input_ids"]) == "床前明月光"
