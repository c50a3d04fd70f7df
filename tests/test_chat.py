"""`mini-lm chat`: the session's history and context budget, and a real terminal session (pty)."""

import json
import os
import re
import select
import subprocess
import sys
import time

import pytest

from mini_lm.commands.chat import ChatSession
from mini_lm.generation import GenerationSettings, generate, load_for_generation, render_chat_prompt

from .conftest import REPO, run_module_main

# what the tiny chat model is trained to answer; "我叫什么" needs the history to be answered right
ALONE = {"你好": "你好！我是小模型。", "我叫小明": "好的，小明。", "我叫什么": "我不知道。"}
AFTER_NAME = "你叫小明。"


def reply_to(history: list[str], question: str) -> str:
    return AFTER_NAME if question == "我叫什么" and "我叫小明" in history else ALONE[question]


def test_session_keeps_history_resets_and_fits_the_context(tiny_tokenizer):
    session = ChatSession(tiny_tokenizer, system="简短回答")
    first = session.prompt_for("你好")
    assert first == render_chat_prompt(
        tiny_tokenizer, [{"role": "system", "content": "简短回答"}, {"role": "user", "content": "你好"}]
    )
    session.add_reply("你好！")
    second = session.prompt_for("你是谁")
    assert (
        second.startswith(first)
        and "你好！<|im_end|>" in second
        and second.endswith("<|im_start|>assistant\n")
    )
    session.reset()
    assert session.prompt_for("你好") == first
    # a budget that holds the system message and about one turn: the oldest turn goes first
    tight = ChatSession(
        tiny_tokenizer, system="简短回答", max_prompt_tokens=len(tiny_tokenizer(first)["input_ids"]) + 30
    )
    for turn in range(4):
        tight.prompt_for(f"第{turn}个问题")
        tight.add_reply("好的")
    assert tight.dropped_turns >= 2 and tight.messages[0]["content"] != "第0个问题"
    assert tight.prompt_for("再问")[: len("<|im_start|>system\n简短回答")] == "<|im_start|>system\n简短回答"
    with pytest.raises(ValueError, match="this message alone takes more than"):
        tight.prompt_for("长" * 200)


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory) -> str:
    """A tiny Qwen2 pretrained on ChatML conversations until it answers as ``reply_to`` says."""
    folder = tmp_path_factory.mktemp("chat")

    def turn(question, answer):
        return f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n{answer}<|im_end|>\n"

    lines = [turn(q, a) for q, a in ALONE.items()]
    lines += [turn(q1, ALONE[q1]) + turn(q2, reply_to([q1], q2)) for q1 in ALONE for q2 in ALONE if q1 != q2]
    data = folder / "chats.jsonl"
    data.write_text(
        "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in lines * 20), encoding="utf-8"
    )
    out = folder / "model"
    run_module_main(
        REPO / "recipes/pretrain.py",
        [
            "--model_family",
            "qwen2",
            "--hidden_size",
            "64",
            "--num_hidden_layers",
            "2",
            "--num_attention_heads",
            "4",
            "--max_position_embeddings",
            "128",
            "--train_files",
            str(data),
            "--tokenizer_vocab_size",
            "300",
            "--parse_special_tokens",  # the ChatML in these texts is meant as control tokens
            "true",
            "--block_size",
            "128",
            "--validation_split",
            "0",
            "--eval_strategy",
            "no",
            "--save_strategy",
            "no",
            "--per_device_train_batch_size",
            "8",
            "--learning_rate",
            "3e-3",
            "--warmup_steps",
            "10",
            "--max_steps",
            "150",
            "--logging_steps",
            "50",
            "--disable_tqdm",
            "true",
            "--report_to",
            "none",
            "--output_dir",
            str(out),
        ],
    )
    return str(out)


class Terminal:
    """A child process on a pseudo-terminal: what a person at a keyboard would see and type."""

    def __init__(self, argv: list[str]):
        self.master, slave = os.openpty()
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, close_fds=True, cwd=REPO)
        os.close(slave)
        self.seen = b""

    def expect(self, text: str, timeout: float = 180.0) -> str:
        """Read until ``text`` appears; return (and consume) everything up to and including it."""
        deadline = time.time() + timeout
        while text.encode() not in self.seen:
            left = deadline - time.time()
            if left <= 0 or self.proc.poll() is not None and not select.select([self.master], [], [], 0)[0]:
                raise AssertionError(
                    f"never saw {text!r}; the terminal shows:\n{self.seen.decode(errors='replace')}"
                )
            if select.select([self.master], [], [], min(left, 1.0))[0]:
                try:
                    self.seen += os.read(self.master, 4096)
                except OSError:  # the child closed the terminal
                    pass
        head, _, self.seen = self.seen.partition(text.encode())
        return head.decode() + text

    def type(self, line: str) -> None:
        os.write(self.master, (line + "\n").encode())


def answer_in(screen: str) -> str:
    return re.search(r"assistant> (.*?)\r?\n", screen).group(1)


@pytest.mark.slow
def test_chat_in_a_real_terminal(chat_model):
    model, tok = load_for_generation(chat_model)
    settings = GenerationSettings(do_sample=False, max_new_tokens=24)

    def expected(messages):
        return generate(model, tok, [render_chat_prompt(tok, messages)], settings)[0].text

    term = Terminal(
        [sys.executable, "-m", "mini_lm.cli", "chat", chat_model, "--greedy", "--max-new-tokens", "24"]
    )
    assert "/reset clears the history" in term.expect("user> ")
    term.type("我叫小明")
    first = answer_in(term.expect("user> "))
    assert first == ALONE["我叫小明"]  # it answers
    term.type("我叫什么")
    second = answer_in(term.expect("user> "))
    assert second == AFTER_NAME  # ... from the history it keeps
    history = [
        {"role": "user", "content": "我叫小明"},
        {"role": "assistant", "content": first},
        {"role": "user", "content": "我叫什么"},
    ]
    assert second == expected(history)  # the streamed answer is the shared generate path's
    term.type("/reset")
    assert "(history cleared)" in term.expect("user> ")
    term.type("我叫什么")
    assert answer_in(term.expect("user> ")) == ALONE["我叫什么"] == expected(history[2:])  # forgotten
    term.type("/quit")
    assert term.proc.wait(timeout=60) == 0
