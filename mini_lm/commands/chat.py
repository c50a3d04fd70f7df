"""mini-lm chat MODEL_DIR: talk to a model in the terminal, multi-turn, tokens streamed as they come.

The conversation is rendered with the tokenizer's own chat template each turn. /reset forgets
the history, /quit (or Ctrl-D) leaves. When the history outgrows the model's context, the oldest
turns are dropped (and the user is told).
"""

from __future__ import annotations

import argparse
import sys

from .generate import add_sampling_arguments, new_token_budget, settings_from_args

HELP = "/reset clears the history, /quit leaves"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dir", help="a model dir whose tokenizer has a chat template (e.g. after SFT)")
    parser.add_argument("--system", help="system message put before every conversation")
    add_sampling_arguments(parser, max_new_tokens=256, temperature=0.7)


class ChatSession:
    """Messages of one conversation and the prompt that continues it within the model's context.

    >>> s = ChatSession(tok, system="be brief", max_prompt_tokens=512)
    >>> s.prompt_for("你好")  # '<|im_start|>system\\nbe brief<|im_end|>\\n<|im_start|>user\\n你好...'
    """

    def __init__(self, tokenizer, system: str | None = None, max_prompt_tokens: int | None = None):
        from ..generation import render_chat_prompt

        self.tokenizer, self.system, self.max_prompt_tokens = tokenizer, system, max_prompt_tokens
        self._render = render_chat_prompt
        self.messages: list[dict] = []
        self.dropped_turns = 0  # turns forgotten to fit the context, since the last reset

    def reset(self) -> None:
        self.messages, self.dropped_turns = [], 0

    def prompt_for(self, user_text: str) -> str:
        """Add the user's message; render the conversation, dropping the oldest turns that do not fit."""
        from ..generation import render_chat_prompt

        self.messages.append({"role": "user", "content": user_text})
        while True:
            head = [{"role": "system", "content": self.system}] if self.system else []
            prompt = render_chat_prompt(self.tokenizer, head + self.messages)
            if self.max_prompt_tokens is None or self._length(prompt) <= self.max_prompt_tokens:
                return prompt
            if len(self.messages) <= 1:
                self.messages.pop()
                raise ValueError(
                    f"this message alone takes more than the {self.max_prompt_tokens} prompt tokens "
                    "the model's context leaves (lower --max-new-tokens or shorten it)"
                )
            del self.messages[0]  # the oldest message, and the reply to it (never the new message)
            if len(self.messages) > 1 and self.messages[0]["role"] == "assistant":
                del self.messages[0]
            self.dropped_turns += 1

    def add_reply(self, text: str) -> None:
        self.messages.append({"role": "assistant", "content": text})

    def _length(self, prompt: str) -> int:
        return len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])


def run(args: argparse.Namespace) -> int:
    from ..generation import context_length, load_for_generation

    model, tokenizer = load_for_generation(args.model_dir)
    if not tokenizer.chat_template:
        raise ValueError(
            f"{args.model_dir}: the tokenizer has no chat template, so there is no chat format to "
            "speak (use `mini-lm generate` for raw continuations)"
        )
    limit = context_length(model)
    args.max_new_tokens, note = new_token_budget(args, limit)
    settings = settings_from_args(args, tokenizer)
    session = ChatSession(tokenizer, args.system, limit - settings.max_new_tokens if limit else None)
    print(f"mini-lm chat with {args.model_dir} ({type(model).__name__}). {HELP}.", flush=True)
    print(f"(replies up to {settings.max_new_tokens} new tokens{f' ({note})' if note else ''})", flush=True)
    while True:
        try:
            line = input("user> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if not line:
            continue
        if line in ("/quit", "/exit"):
            return 0
        if line == "/reset":
            session.reset()
            print("(history cleared)", flush=True)
            continue
        if line.startswith("/"):
            print(f"(unknown command {line}: {HELP})", flush=True)
            continue
        reply(model, tokenizer, session, line, settings)


def reply(model, tokenizer, session: ChatSession, line: str, settings) -> None:
    """One turn: the streamed answer goes to the terminal as it is generated, then into the history."""
    from ..generation import stream

    dropped = session.dropped_turns
    try:
        prompt = session.prompt_for(line)
    except ValueError as err:
        print(f"(skipped: {err})", flush=True)
        return
    if session.dropped_turns > dropped:
        print(f"(forgot the {session.dropped_turns - dropped} oldest turn(s) to fit the context)", flush=True)
    sys.stdout.write("assistant> ")
    pieces = []
    for piece in stream(model, tokenizer, prompt, settings):
        sys.stdout.write(piece)
        sys.stdout.flush()
        pieces.append(piece)
    sys.stdout.write("\n")
    session.add_reply("".join(pieces))
