"""Chat template rendering and assistant-only labels, on the real Qwen2.5 tokenizer (its own template,
no generation markers) and on a BPE trained here (ChatML with markers): every real SFT file, token
by token; multi-line and code answers; truncation; the label audit and its hard failures."""

import pytest
from datasets import Dataset

from mini_lm.config import SFTDataArguments
from mini_lm.data.audit import LabelAuditError, build_audit, mark_supervised
from mini_lm.data.chat import ChatStats, LoadOptions, load_conversations
from mini_lm.data.sft import EncodeChat, EndOfTurn, encode_conversation, render
from mini_lm.labels import IGNORE_INDEX
from mini_lm.tokenization import (
    CHATML_TEMPLATE,
    IM_END,
    ChatTemplateError,
    load_tokenizer,
    set_chat_template,
    train_bpe_tokenizer,
)

SFT_FILES = ["alpaca_zh_demo.json", "sharegpt_zh_1k.jsonl", "v1_sft_demo.jsonl", "identity.json"]
NO_LIMIT = 1 << 20
PLACEHOLDERS = {"name": "MiniLM", "author": "mini_lm"}
CODE_ANSWER = (
    'Here is the function:\n\n```python\ndef add(a, b):\n    """Sum."""\n    return a + b\n```\n\n'
    "Line after the code.\nAnd a last line."
)


@pytest.fixture(scope="module")
def qwen(shared_data):
    tok = load_tokenizer(shared_data / "tokenizers/qwen2.5")
    set_chat_template(tok, None)  # its own template
    return tok


@pytest.fixture(scope="module")
def trained_dir(shared_data, tmp_path_factory):
    """A BPE trained here on the SFT data itself (ChatML template with generation markers)."""
    chat = load_conversations([str(shared_data / "sft" / f) for f in SFT_FILES])
    texts = [m["content"] for row in chat.dataset["messages"] for m in row]
    out = tmp_path_factory.mktemp("sft_tok")
    train_bpe_tokenizer(texts, vocab_size=3000, output_dir=out)
    return out


@pytest.fixture(scope="module")
def trained(trained_dir):
    tok = load_tokenizer(trained_dir)
    set_chat_template(tok, None)
    return tok


def convo(*pairs, system=None):
    out = [{"role": "system", "content": system, "loss_weight": 1.0}] if system else []
    for q, a in pairs:
        out += [
            {"role": "user", "content": q, "loss_weight": 1.0},
            {"role": "assistant", "content": a, "loss_weight": 1.0},
        ]
    return out


def supervised_runs(row) -> list[list[int]]:
    runs, current = [], []
    for token, label in zip(row["input_ids"], row["labels"]):
        if label != IGNORE_INDEX:
            assert label == token  # a supervised label is the token itself, never shifted
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    return runs + ([current] if current else [])


def assert_labels_exact(tok, messages, row):
    """Token by token: the supervised runs are exactly each answer + <|im_end|>; everything else
    (system, user, role headers, the newline after <|im_end|>) is -100; the ids decode to the render."""
    answers = [m["content"] + IM_END for m in messages if m["role"] == "assistant" and m["loss_weight"]]
    assert [tok.decode(run) for run in supervised_runs(row)] == answers
    assert tok.decode(row["input_ids"]) == render(tok, messages)
    assert row["n_supervised"] == sum(map(len, supervised_runs(row)))
    assert row["n_answers_closed"] == len(answers) and not row["truncated"] and row["drop"] == ""


@pytest.mark.parametrize("name", SFT_FILES)
@pytest.mark.parametrize("tokenizer", ["qwen", "trained"])
def test_every_real_conversation_renders_and_masks_exactly(name, tokenizer, shared_data, request):
    tok = request.getfixturevalue(tokenizer)
    chat = load_conversations([str(shared_data / "sft" / name)], LoadOptions(placeholders=PLACEHOLDERS))
    encoded = chat.dataset.map(EncodeChat(tok, NO_LIMIT), batched=True)
    longest = 0
    for row in encoded:
        assert_labels_exact(tok, row["messages"], row)
        longest = max(longest, len(row["messages"]))
    if name.startswith("sharegpt"):
        assert longest == 330  # the 330-message conversation: all 165 answers supervised
    # pieces are tokenized alone, yet the ids equal the template's own full-text tokenization
    sample = encoded.select(range(0, len(encoded), 25))
    for row in sample:
        assert (
            tok.apply_chat_template(row["messages"], tokenize=True, return_dict=True)["input_ids"]
            == row["input_ids"]
        )


def test_qwen_identity_sample_token_by_token(qwen, shared_data):
    chat = load_conversations(
        [str(shared_data / "sft/identity.json")], LoadOptions(placeholders=PLACEHOLDERS)
    )
    messages = {r["record"]: r["messages"] for r in chat.dataset}[f"{shared_data}/sft/identity.json record 1"]
    row = encode_conversation(qwen, messages, NO_LIMIT, EndOfTurn.of(qwen))
    ids, labels = row["input_ids"], row["labels"]
    im_start, im_end, nl = 151644, 151645, 198
    system, user, assistant = qwen.convert_tokens_to_ids(["system", "user", "assistant"])
    # Qwen's own template adds its default system prompt; "hi" is one token
    assert ids[:3] == [im_start, system, nl]
    header = ids.index(assistant) + 2  # first answer token, after "<|im_start|>assistant\n"
    user_at = ids.index(user)
    assert ids[user_at - 1 : user_at + 4] == [im_start, user, nl, qwen.convert_tokens_to_ids("hi"), im_end]
    assert ids[header - 3 : header] == [im_start, assistant, nl]
    assert all(label == IGNORE_INDEX for label in labels[:header])  # system, user, both headers
    assert labels[header:-1] == ids[header:-1] and ids[-2] == im_end  # answer ... <|im_end|> supervised
    assert ids[-1] == nl and labels[-1] == IGNORE_INDEX  # the newline after <|im_end|> is template text
    assert (
        qwen.decode(ids[header:-1])
        == "Hello! I am MiniLM, an AI assistant developed by mini_lm. How can I assist you today?<|im_end|>"
    )


@pytest.mark.parametrize("tokenizer", ["qwen", "trained"])
def test_multi_line_and_code_answers_fully_supervised(tokenizer, request):
    """The bug elsewhere: masking by searching for a response marker that tokenizes to a bare
    newline supervises only the last line. Every line of every answer must be a target."""
    tok = request.getfixturevalue(tokenizer)
    messages = convo(
        ("写一个函数", CODE_ANSWER), ("再说一遍\n两行", "第一行\n第二行\n\n第三行"), system="你是助手"
    )
    row = encode_conversation(tok, messages, NO_LIMIT, EndOfTurn.of(tok))
    assert_labels_exact(tok, messages, row)
    first = tok.decode(supervised_runs(row)[0])
    for line in CODE_ANSWER.splitlines():
        assert line in first
    n_answer_tokens = sum(
        len(tok(m["content"], add_special_tokens=False)["input_ids"]) + 1
        for m in messages
        if m["role"] == "assistant"
    )
    assert row["n_supervised"] == n_answer_tokens


def test_labels_agree_with_generation_markers_on_real_data(shared_data):
    """Where the template has {% generation %} markers (ChatML here, on the real Qwen2.5 vocabulary),
    apply_chat_template's assistant mask and our prefix-diff labels are identical."""
    qwen = load_tokenizer(shared_data / "tokenizers/qwen2.5")
    set_chat_template(qwen, "chatml")
    chat = load_conversations([str(shared_data / "sft/sharegpt_zh_1k.jsonl")])
    chat.dataset = chat.dataset.select(range(150))
    encoded = chat.dataset.map(EncodeChat(qwen, NO_LIMIT), batched=True)
    audit = build_audit(chat.stats, encoded, qwen, SFTDataArguments(max_length=NO_LIMIT))
    assert audit.marker_check == (150, 0, 0)


def test_answer_with_leading_whitespace_is_tokenized_as_at_inference(trained):
    """Pieces are tokenized alone: the prompt ends exactly as the generation prompt does."""
    messages = convo(("q", "\n\n  indented answer"))
    row = encode_conversation(trained, messages, NO_LIMIT, EndOfTurn.of(trained))
    prompt = trained(render(trained, messages[:1], generation_prompt=True), add_special_tokens=False)[
        "input_ids"
    ]
    assert row["input_ids"][: len(prompt)] == prompt
    assert trained.decode(supervised_runs(row)[0]) == "\n\n  indented answer" + IM_END


def test_minimind_template_without_markers(shared_data):
    tok = load_tokenizer(shared_data / "tokenizers/minimind")
    set_chat_template(tok, None)
    messages = convo(("你好", "你好！\n有什么可以帮你？"), ("1+1=?", "2"))
    assert_labels_exact(tok, messages, encode_conversation(tok, messages, NO_LIMIT, EndOfTurn.of(tok)))


def test_loss_weight_zero_turn_is_context_only(trained):
    messages = convo(("q1", "old answer"), ("q2", "new answer"))
    messages[1]["loss_weight"] = 0.0
    row = encode_conversation(trained, messages, NO_LIMIT, EndOfTurn.of(trained))
    assert [trained.decode(r) for r in supervised_runs(row)] == ["new answer" + IM_END]
    messages[3]["loss_weight"] = 0.0
    assert (
        encode_conversation(trained, messages, NO_LIMIT, EndOfTurn.of(trained))["drop"]
        == "no supervised assistant turn"
    )


# --------------------------------------------------------------------------- truncation


def test_truncation_keeps_whole_exchanges(trained):
    messages = convo(("q1", "a1 " * 5), ("q2", "a2 " * 5), ("q3", "a3 " * 5))
    ends = EndOfTurn.of(trained)
    full = encode_conversation(trained, messages, NO_LIMIT, ends)
    two = encode_conversation(trained, messages[:4], NO_LIMIT, ends)
    row = encode_conversation(trained, messages, len(full["input_ids"]) - 2, ends)
    assert row["truncated"] and row["drop"] == ""
    assert row["input_ids"] == two["input_ids"][:-1]  # two whole exchanges (minus the trailing newline)
    assert row["n_answers_closed"] == 2 and trained.decode(row["input_ids"]).endswith("a2 " * 5 + IM_END)


def test_truncation_of_first_exchange_keeps_partial_answer_or_drops(trained):
    messages = convo(("short question", "a long answer " * 20))
    ends = EndOfTurn.of(trained)
    prompt_len = len(trained(render(trained, messages[:1], generation_prompt=True))["input_ids"])
    partial = encode_conversation(trained, messages, prompt_len + 3, ends)
    assert partial["truncated"] and partial["n_supervised"] == 3 and partial["drop"] == ""
    assert len(partial["input_ids"]) == prompt_len + 3 and partial["n_answers_closed"] == 0
    dropped = encode_conversation(trained, messages, prompt_len, ends)
    assert dropped["n_supervised"] == 0 and dropped["drop"] == f"prompt longer than max_length={prompt_len}"


# --------------------------------------------------------------------------- templates


def test_tokenizer_without_chat_template_and_none_configured(shared_data):
    gpt2 = load_tokenizer(shared_data / "tokenizers/gpt2")
    with pytest.raises(
        ChatTemplateError, match="has no chat template and none is configured: set chat_template"
    ):
        set_chat_template(gpt2, None)


def test_chatml_on_a_tokenizer_without_chat_tokens_adds_them(shared_data):
    gpt2 = load_tokenizer(shared_data / "tokenizers/gpt2")
    before = len(gpt2)
    assert set_chat_template(gpt2, "chatml") == "chatml"
    assert len(gpt2) == before + 2 and gpt2.chat_template == CHATML_TEMPLATE
    messages = convo(("Hello", "World\nagain"))
    assert_labels_exact(gpt2, messages, encode_conversation(gpt2, messages, NO_LIMIT, EndOfTurn.of(gpt2)))


def test_template_from_file_and_errors(trained_dir, tmp_path):
    path = tmp_path / "t.jinja"
    path.write_text(CHATML_TEMPLATE.replace("<|im_start|>", "<|im_start|> "))
    tok = load_tokenizer(trained_dir)
    assert set_chat_template(tok, str(path)) == str(path)
    messages = convo(("q", "a"))
    assert_labels_exact(tok, messages, encode_conversation(tok, messages, NO_LIMIT, EndOfTurn.of(tok)))
    with pytest.raises(ChatTemplateError, match="no such file"):
        set_chat_template(tok, str(tmp_path / "missing.jinja"))
    # a template that rewrites earlier turns cannot be used to locate answers
    unstable = (
        "{% for m in messages %}{{ m['role'] }}{{ loop.length }}:{{ m['content'] }}<|im_end|>{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}"
    )
    set_chat_template(tok, unstable)
    with pytest.raises(ChatTemplateError, match="not prefix-stable"):
        encode_conversation(tok, messages, NO_LIMIT, EndOfTurn.of(tok))


# --------------------------------------------------------------------------- audit


def audit_of(tok, conversations, max_length=NO_LIMIT):
    rows = [{"messages": m, "source": "mem", "record": f"mem:{i}"} for i, m in enumerate(conversations)]
    encoded = Dataset.from_list(rows).map(EncodeChat(tok, max_length), batched=True)
    return build_audit(ChatStats(), encoded, tok, SFTDataArguments(max_length=max_length, audit_samples=1))


def test_audit_marks_spans_and_counts(trained):
    audit = audit_of(trained, [convo(("q", "line1\nline2"))] * 3 + [convo(("x" * 200, "y"))], max_length=40)
    text = audit.render()
    assert "<|im_start|>assistant\n⟦line1\nline2<|im_end|>⟧\n" in text
    assert audit.kept == 3 and audit.dropped == {"prompt longer than max_length=40": 1}
    assert "supervised" in text and f"({audit.supervised_fraction:.1%})" in text
    assert 0 < audit.supervised_fraction < 0.5 and audit.answers_closed == 3
    audit.check()


def test_audit_fails_when_every_sample_is_too_long(trained):
    audit = audit_of(trained, [convo(("a very long question " * 10, "a"))] * 2, max_length=12)
    assert audit.kept == 0
    with pytest.raises(LabelAuditError, match="no trainable sample: all 2 dropped \\(prompt longer than"):
        audit.check()


def test_audit_fails_when_no_end_of_turn_is_supervised(trained_dir):
    tok = load_tokenizer(trained_dir)
    tok.chat_template = (
        "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    audit = audit_of(tok, [convo(("q", "a"))])
    assert audit.supervised > 0 and audit.answers_closed == 0
    with pytest.raises(LabelAuditError, match="never learn to stop"):
        audit.check()


def test_mark_supervised():
    class Chars:  # a stand-in tokenizer: one character per id
        def decode(self, ids, skip_special_tokens=False):
            return "".join(chr(i) for i in ids)

    ids = [ord(c) for c in "ab12c"]
    assert (
        mark_supervised(Chars(), ids, [IGNORE_INDEX, IGNORE_INDEX, ids[2], ids[3], IGNORE_INDEX]) == "ab⟦12⟧c"
    )
