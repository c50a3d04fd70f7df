"""Shared fixtures. Tests are hermetic: hub access is off, tokenizers are trained in-process or
read from the shared offline data (../shared/data, or $MINI_LM_DATA)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # any hidden download fails loudly
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

REPO = Path(__file__).resolve().parents[1]
# DeepSpeed JIT-compiles a CPU comm op on first use (~1 min): keep it between runs.
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".torch_extensions"))
DATA = Path(os.environ.get("MINI_LM_DATA", REPO.parent / "shared" / "data")).resolve()
os.environ["MINI_LM_DATA"] = str(DATA)  # recipe YAMLs read ${MINI_LM_DATA:-../shared/data}


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The offline data folder. Missing in CI is a failure, not a skip."""
    if not (DATA / "README.md").is_file():
        message = f"shared data folder not found at {DATA} (set MINI_LM_DATA)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return DATA


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory):
    """A 400-token byte-level BPE with ChatML specials, trained in-process on mixed zh/en text."""
    from mini_lm.tokenization import train_bpe_tokenizer

    texts = [
        "王伟出生于1987年3月5日。他毕业于北京大学。",
        "Wei Wang was born on March 5, 1987.",
        "李娜在上海工作。她的专业是数学。",
        "Na Li works in Shanghai. She majored in mathematics.",
        "def add(a, b):\n    return a + b\n",
    ] * 20
    return train_bpe_tokenizer(texts, vocab_size=400, output_dir=tmp_path_factory.mktemp("tok"))


def run_module_main(module_path: Path, argv: list[str]):
    """Import a recipe file (recipes/*.py is not a package) and call its main(argv)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(module_path.stem + "_recipe", module_path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.main(argv)


TINY_BERT_TEXT = (
    "宝玉笑道：“你们来了。”黛玉听了，便说：“好！”凤姐儿也笑了。王夫人问他们在哪里。Hello world, it is fine."
)


@pytest.fixture(scope="session")
def tiny_bert_tokenizer(tmp_path_factory):
    """The BERT adapter's WordPiece tokenizer over a ~60-entry vocab.txt written in-process."""
    from mini_lm.tokenization import bert_tokenizer

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = sorted({c for c in TINY_BERT_TEXT if not c.isspace() and not c.isascii()})
    words = ["hello", "world", "it", "is", "fine", ",", ".", "＂", "!"]  # “” normalize to ＂
    folder = tmp_path_factory.mktemp("bert_vocab")
    (folder / "vocab.txt").write_text("\n".join(specials + chars + words) + "\n", encoding="utf-8")
    return bert_tokenizer(folder)


def tiny_qwen2_config(tokenizer, **overrides):
    """The tests' tiny Qwen2 shape (hidden 32, 2 layers, GQA 4/2) over ``tokenizer``'s vocabulary."""
    from transformers import Qwen2Config

    shape = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return Qwen2Config(**{**shape, **overrides})


def run_card_snippet(model_dir: Path) -> str:
    """Run the "How to load" code of a model card (README.md) as written; return what it printed."""
    import contextlib
    import io
    import re

    card = (Path(model_dir) / "README.md").read_text(encoding="utf-8")
    code = re.search(r"## How to load.*?```python\n(.*?)```", card, re.S).group(1)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, f"{model_dir}/README.md", "exec"), {})
    return printed.getvalue()
