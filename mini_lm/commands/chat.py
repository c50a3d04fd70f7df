"""mini-lm chat MODEL_DIR: talk to a model in the terminal, multi-turn, tokens streamed as they come.

The conversation is rendered with the tokenizer's own chat template each turn. /reset forgets
the history, /quit (or Ctrl-D) leaves. When the history outgrows the model's context, the oldest
turns are dropped (and the user is told).

With ``--tools tools.json`` (a JSON list of function schemas, bare or OpenAI-wrapped) the tools are
rendered into the prompt; a reply that calls one is shown as ``get_weather(city="Paris")``, and
``/tool RESULT`` gives the model the call's result to answer from.
"""

from __future__ import annotations

import argparse
import sys

from .generate import add_sampling_arguments, new_token_budget, settings_from_args

HELP = "/reset clears the history, /tool RESULT answers a tool call, /quit leaves"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dir", help="a model dir whose tokenizer has a chat template (e.g. after SFT)")
    parser.add_argument("--system", help="system message put before every conversation")
    parser.add_argument("--tools", help="a JSON file: the list of function schemas the model may call")
    add_sampling_arguments(parser, max_new_tokens=256, temperature=0.7)


class ChatSession:
    """Messages of one conversation and the prompt that continues it within the model's context.

    >>> s = ChatSession(tok, system="be brief", max_prompt_tokens=512)
    >>> s.prompt_for("你好")  # '<|im_start|>system\\nbe brief<|im_end|>\\n<|im_start|>user\\n你好...'
    """

    def __init__(
        self,
        tokenizer,
        system: str | None = None,
        max_prompt_tokens: int | None = None,
        tools: list[dict] | None = None,
    ):
        self.tokenizer, self.system, self.max_prompt_tokens = tokenizer, system, max_prompt_tokens
        self.tools = tools
        self.messages: list[dict] = []
        self.dropped_turns = 0  # turns forgotten to fit the context, since the last reset

    def reset(self) -> None:
        self.messages, self.dropped_turns = [], 0

    def prompt_for(self, user_text: str, role: str = "user") -> str:
        """Add the user's message (or, role "tool", a tool result); render the conversation, dropping
        the oldest turns that do not fit."""
        from ..generation import render_chat_prompt

        self.messages.append({"role": role, "content": user_text})
        while True:
            head = [{"role": "system", "content": self.system}] if self.system else []
            prompt = render_chat_prompt(self.tokenizer, head + self.messages, self.tools)
            if self.max_prompt_tokens is None or self._length(prompt) <= self.max_prompt_tokens:
                return prompt
            if len(self.messages) <= 1:
                self.messages.pop()
                raise ValueError(
                    f"this message alone takes more than the {self.max_prompt_tokens} prompt tokens "
                    "the model's context leaves (lower --max-new-tokens or shorten it)"
                )
            del self.messages[0]  # the oldest message, and what answered it (never the new message)
            while len(self.messages) > 1 and self.messages[0]["role"] != "user":
                del self.messages[0]
            self.dropped_turns += 1

    def add_reply(self, text: str) -> list:
        """Add the model's reply; returns the tool calls it makes (``tool_calls.ToolCall``), if any."""
        from ..tool_calls import parse_tool_calls, template_call

        names = {tool["function"]["name"] for tool in self.tools or []}
        parsed = parse_tool_calls(text, names) if names else None
        if not parsed or not parsed.calls:
            self.messages.append({"role": "assistant", "content": text})
            return []
        calls = [template_call(call.name, call.arguments) for call in parsed.calls]
        self.messages.append({"role": "assistant", "content": parsed.content or "", "tool_calls": calls})
        return parsed.calls

    def awaits_tool_result(self) -> bool:
        return bool(self.messages) and bool(self.messages[-1].get("tool_calls"))

    def _length(self, prompt: str) -> int:
        return len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])


def run(args: argparse.Namespace) -> int:
    from ..generation import context_length, load_for_generation, render_chat_prompt

    model, tokenizer = load_for_generation(args.model_dir)
    tools = load_tools(args.tools) if args.tools else None
    if not tokenizer.chat_template:
        raise ValueError(
            f"{args.model_dir}: the tokenizer has no chat template, so there is no chat format to "
            "speak (use `mini-lm generate` for raw continuations)"
        )
    if tools:  # a template that ignores tools: say so now, not at every message
        render_chat_prompt(tokenizer, [{"role": "user", "content": "hi"}], tools)
    limit = context_length(model)
    args.max_new_tokens, note = new_token_budget(args, limit)
    settings = settings_from_args(args, tokenizer)
    session = ChatSession(tokenizer, args.system, limit - settings.max_new_tokens if limit else None, tools)
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
        if line.startswith("/tool"):
            if not session.awaits_tool_result():
                print("(no tool call to answer: /tool RESULT follows a reply that calls a tool)", flush=True)
            else:
                reply(model, tokenizer, session, line.removeprefix("/tool").strip(), settings, role="tool")
            continue
        if line.startswith("/"):
            print(f"(unknown command {line}: {HELP})", flush=True)
            continue
        reply(model, tokenizer, session, line, settings)


def load_tools(path: str) -> list[dict]:
    """tools.json -> OpenAI-wrapped schemas; a one-line error naming the file otherwise."""
    import json
    from pathlib import Path

    from ..tool_calls import openai_tool

    try:
        tools = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"--tools {path}: cannot read a JSON list of function schemas ({err})") from err
    if not isinstance(tools, list) or not tools:
        raise ValueError(f"--tools {path}: must hold a non-empty JSON list of function schemas")
    try:
        return [openai_tool(tool) for tool in tools]
    except ValueError as err:
        raise ValueError(f"--tools {path}: {err}") from err


def reply(model, tokenizer, session: ChatSession, line: str, settings, role: str = "user") -> None:
    """One turn: the streamed answer goes to the terminal as it is generated, then into the history;
    tool calls in it are shown readably."""
    from ..generation import stream
    from ..tool_calls import readable

    dropped = session.dropped_turns
    try:
        prompt = session.prompt_for(line, role)
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
    for call in session.add_reply("".join(pieces)):
        print(f"(tool call: {readable(call)}; answer with /tool RESULT)", flush=True)
