import json

import pytest
from transformers import AutoTokenizer

from mini_lm.tokenization import (
    CHATML_TEMPLATE,
    ENDOFTEXT,
    IM_END,
    IM_START,
    SPECIAL_TOKENS,
    TokenizerError,
    autotokenizer_roundtrip_ok,
    document_separator_id,
    load_tokenizer,
    stop_token_ids,
    train_bpe_tokenizer,
)

CHAT = [
    {"role": "system", "content": "你是助手。"},
    {"role": "user", "content": "你好"},
    {"role": "assistant", "content": "你好！\n有什么可以帮你？"},
    {"role": "user", "content": "再见"},
    {"role": "assistant", "content": "def f():\n    return 1"},
]


def test_trained_tokenizer_specials_and_roundtrip(tiny_tokenizer):
    tok = tiny_tokenizer
    assert tok.convert_ids_to_tokens([0, 1, 2]) == [ENDOFTEXT, IM_START, IM_END]
    assert tok.eos_token == tok.pad_token == ENDOFTEXT
    text = "王伟出生于1987年3月5日。Wei Wang works in Shanghai!"
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text
    # specials are single tokens, never split
    assert tok(f"{IM_START}user\nhi{IM_END}")["input_ids"][0] == 1
    assert stop_token_ids(tok) == [0, 2] and document_separator_id(tok) == 0


def test_han_characters_are_single_pre_tokens(tiny_tokenizer):
    # A prompt that stops mid-sentence must tokenize like the same characters inside the sentence.
    full = tiny_tokenizer("王伟出生于北京")["input_ids"]
    prefix = tiny_tokenizer("王伟出生于")["input_ids"]
    assert full[: len(prefix)] == prefix


def test_chatml_template_and_assistant_mask(tiny_tokenizer):
    tok = tiny_tokenizer
    text = tok.apply_chat_template(CHAT, tokenize=False)
    assert text.startswith("<|im_start|>system\n你是助手。<|im_end|>\n<|im_start|>user\n你好<|im_end|>\n")
    assert text.endswith("<|im_start|>assistant\ndef f():\n    return 1<|im_end|>\n")
    out = tok.apply_chat_template(CHAT, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    supervised = tok.decode([i for i, m in zip(out["input_ids"], out["assistant_masks"]) if m])
    # both assistant turns, every line, and each closing <|im_end|>; nothing of the user/system turns
    assert supervised == "你好！\n有什么可以帮你？<|im_end|>def f():\n    return 1<|im_end|>"
    prompt = tok.apply_chat_template(CHAT[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize("model_type", ["qwen2", "gpt2"])
def test_saved_model_dir_roundtrips_through_autotokenizer(tiny_tokenizer, tmp_path, model_type):
    tiny_tokenizer.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "王伟 said: 12345 dollars!!  ok\n\n李娜 café"
    assert reloaded(text)["input_ids"] == tiny_tokenizer(text)["input_ids"]
    assert reloaded.chat_template == CHATML_TEMPLATE
    assert autotokenizer_roundtrip_ok(tiny_tokenizer, model_type)


def test_roundtrip_check_catches_a_swapped_pre_tokenizer(shared_data):
    # Negative control: MiniMind's GPT-2-regex tokenizer changes ids when AutoTokenizer rebuilds
    # it as Qwen2Tokenizer, and load_tokenizer (faithful to tokenizer.json) does not.
    minimind = load_tokenizer(shared_data / "tokenizers/minimind")
    assert not autotokenizer_roundtrip_ok(minimind, "qwen2")
    assert autotokenizer_roundtrip_ok(minimind, "gpt2")


def test_real_qwen25_tokenizer_known_ids(shared_data):
    tok = load_tokenizer(shared_data / "tokenizers/qwen2.5")
    assert len(tok) == 151665
    ids = tok("<|im_start|>user\n你好，世界！Hello world<|im_end|>")["input_ids"]
    assert ids == [151644, 872, 198, 108386, 3837, 99489, 6313, 9707, 1879, 151645]
    assert document_separator_id(tok) == 151643  # <|endoftext|>
    assert set(stop_token_ids(tok)) == {151643, 151645}
    assert tok.chat_template and "<|im_start|>" in tok.chat_template


def test_real_gpt2_tokenizer_known_ids(shared_data):
    tok = load_tokenizer(shared_data / "tokenizers/gpt2")
    assert len(tok) == 50257
    assert tok("Hello world")["input_ids"] == [15496, 995]
    assert stop_token_ids(tok) == [50256] and document_separator_id(tok) == 50256


def test_tokenizer_dir_without_files(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(TokenizerError, match="not a tokenizer dir.*notes.txt"):
        load_tokenizer(tmp_path)


def test_tokenizer_path_not_found(tmp_path):
    with pytest.raises(TokenizerError, match="not found"):
        load_tokenizer(tmp_path / "missing" / "tok")


def test_training_needs_text_and_room():
    with pytest.raises(TokenizerError, match="too small"):
        train_bpe_tokenizer(["abc"], vocab_size=100)
    with pytest.raises(TokenizerError, match="empty"):
        train_bpe_tokenizer([], vocab_size=300)


def test_bpe_training_never_learns_pieces_of_special_tokens():
    """TinyStories-style text full of <|endoftext|> once cost vocabulary entries '<|', 'endoft', ..."""
    texts = ["Once upon a time a cat sat.\n<|endoftext|>\nThe dog ran home.<|endoftext|><|im_start|>"] * 200
    tok = train_bpe_tokenizer(texts + ["the cat sat on the mat"] * 50, vocab_size=400)
    pieces = [t for t in tok.get_vocab() if t not in SPECIAL_TOKENS]
    assert not [p for p in pieces if "<|" in p or "|>" in p or "endoft" in p or "im_st" in p]
    assert "Ġdog" in pieces or "Ġcat" in pieces  # it did learn from the rest of the text


def test_a_tokenizer_option_that_another_overrides_is_named(tiny_tokenizer, tmp_path, caplog):
    """tokenizer_vocab_size is silently ignored once a tokenizer path is given; now it says so."""
    import logging

    from mini_lm.config import ModelArguments
    from mini_lm.tokenization import prepare_tokenizer, save_tokenizer

    save_tokenizer(tiny_tokenizer, tmp_path / "tok")
    with caplog.at_level(logging.WARNING, logger="mini_lm"):
        tok = prepare_tokenizer(ModelArguments(tokenizer_name_or_path=str(tmp_path / "tok")), tmp_path, 8000)
    assert len(tok) == len(tiny_tokenizer)
    assert (
        f"tokenizer_vocab_size=8000 is ignored: the tokenizer is loaded from {tmp_path / 'tok'}"
        in caplog.text
    )
    caplog.clear()
    save_tokenizer(tiny_tokenizer, tmp_path / "run" / "tokenizer")  # trained earlier with 400 tokens
    with caplog.at_level(logging.WARNING, logger="mini_lm"):
        prepare_tokenizer(ModelArguments(), tmp_path / "run", 300)
    assert (
        "reusing the tokenizer trained earlier" in caplog.text and "tokenizer_vocab_size=300" in caplog.text
    )


def test_train_tokenizer_cli_reads_structured_corpora(tmp_path, capsys):
    """mini-lm train-tokenizer takes the corpus options too: chinese-poetry JSON, TinyStories text."""
    from mini_lm.cli import main

    poems = [{"paragraphs": ["床前明月光，", "疑是地上霜。"], "rhythmic": "静夜思"}] * 30
    (tmp_path / "poems.json").write_text(json.dumps(poems, ensure_ascii=False), encoding="utf-8")
    (tmp_path / "stories.txt").write_text("Tom ran.\n<|endoftext|>\nAnn sat.\n" * 30, encoding="utf-8")
    out = tmp_path / "tok"
    argv = ["train-tokenizer", "--files", str(tmp_path / "poems.json"), "--vocab-size", "300"]
    assert main([*argv, "--text-template", "{rhythmic}\\n{paragraphs}", "--output", str(out)]) == 0
    assert "sample: '静夜思\\n床前明月光，\\n疑是地上霜。'" in capsys.readouterr().out
    argv = ["train-tokenizer", "--files", str(tmp_path / "stories.txt"), "--vocab-size", "300"]
    assert main([*argv, "--document-separator", "<|endoftext|>", "--output", str(out)]) == 0
    assert "sample: 'Tom ran.'" in capsys.readouterr().out  # a document ends at the separator
    assert not [t for t in load_tokenizer(out).get_vocab() if "<|" in t and t not in SPECIAL_TOKENS]


def test_a_chat_template_file_with_a_bom_renders_without_it(tiny_tokenizer, tmp_path):
    """Read as text files are everywhere: the BOM of a Windows-saved .jinja was rendered into prompts."""
    from mini_lm.tokenization import resolve_chat_template

    path = tmp_path / "chatml.jinja"
    path.write_bytes(b"\xef\xbb\xbf" + CHATML_TEMPLATE.encode())
    template, origin = resolve_chat_template(tiny_tokenizer, str(path))
    assert template == CHATML_TEMPLATE and origin == str(path)
