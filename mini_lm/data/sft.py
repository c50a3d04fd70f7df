"""SFT data: conversations -> chat template -> token ids with assistant-only labels.

    chats = load_sft_conversations(data_args, seed=42)
    tokenizer = prepare_sft_tokenizer(model_args, data_args, "runs/sft", chats)
    data = build_sft_datasets(chats, tokenizer, data_args)   # data.train, data.eval, data.audit

Labels work with ANY chat template, not only ones with ``{% generation %}`` markers: each
assistant turn ``i`` is located by rendering ``messages[:i]`` with the generation prompt and
``messages[:i+1]`` through ``tokenizer.apply_chat_template``; the text between the two is the
answer, cut after its end-of-turn token (``<|im_end|>``). The conversation is then tokenized
piece by piece (prompt, answer, prompt, answer, ...), so every answer token is supervised —
all lines of a multi-line or code answer and the closing ``<|im_end|>`` — and every
system/user/template token is -100. Pieces are tokenized exactly as at inference, where the
prompt ending in ``<|im_start|>assistant\\n`` is tokenized on its own. Where a template has
generation markers, the label audit cross-checks both methods.

Tools: a row's ``tools`` go to the template (``apply_chat_template(..., tools=...)``); an
assistant turn making tool calls is an answer like any other (its ``<tool_call>`` text and
``<|im_end|>`` supervised), tool results and the tools list are prompt text (masked). A
template that drops any of them is an error, not a silent loss. Special-token strings inside
the content ("<|im_start|>" in a user message) are encoded as plain text (``Conversation``).
Plain-text samples (role ``text``: TRL's ``text`` and string ``prompt``/``completion``) skip
the template: each piece is encoded as plain text, and eos closes the sample.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass

from datasets import Dataset

from ..config import SFTDataArguments
from ..labels import IGNORE_INDEX
from ..tokenization import (
    GENERATION_MARKER,
    TOOLS_EPILOGUE,
    TOOLS_PREAMBLE,
    ChatTemplateError,
    encode_plain,
    encode_rendered,
    hide_special_texts,
    prepare_tokenizer,
    set_chat_template,
    special_texts,
    stop_token_ids,
)
from ..tool_calls import CLOSE, OPEN, call_text
from .audit import LabelAudit, build_audit
from .chat import (
    TEXT_ROLE,
    ChatData,
    ChatDataError,
    LoadOptions,
    load_conversations,
    row_tools,
    template_messages,
)
from .sft_packing import pack_conversations

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EndOfTurn:
    """Tokens that close an assistant turn: <|im_end|>, eos, <|endoftext|> where the vocab has them."""

    ids: frozenset[int]
    texts: tuple[str, ...]

    @classmethod
    def of(cls, tokenizer) -> EndOfTurn:
        ids = stop_token_ids(tokenizer)  # reads the whole vocab: compute once, not per conversation
        return cls(frozenset(ids), tuple(tokenizer.convert_ids_to_tokens(ids)))


# --------------------------------------------------------------------------- one conversation


def render(
    tokenizer, messages: list[dict], generation_prompt: bool = False, tools: list | None = None
) -> str:
    """The chat template's text for template-ready messages (``chat.template_messages``) and tools."""
    return tokenizer.apply_chat_template(
        messages, tools=tools or None, tokenize=False, add_generation_prompt=generation_prompt
    )


@dataclass
class Conversation:
    """One conversation as the chat template sees it, and, when its content holds special-token
    strings ("<|im_start|>" typed by a user), the same with those hidden (``hide_special_texts``):
    rendered side by side, the hidden copy tells the template's control tokens from the content's
    literal text, which stays plain text."""

    tokenizer: object
    messages: list[dict]
    tools: list[dict] | None = None
    specials: tuple[str, ...] = ()

    def __post_init__(self):
        self.shadow = (
            hide_special_texts([self.messages, self.tools], self.specials) if self.specials else None
        )

    def texts(self, n: int, generation_prompt: bool = False) -> tuple[str, str | None]:
        """(rendering of the first ``n`` messages, the same with the content's specials hidden or None)."""
        text = render(self.tokenizer, self.messages[:n], generation_prompt, self.tools)
        if self.shadow is None:
            return text, None
        shadow = render(self.tokenizer, self.shadow[0][:n], generation_prompt, self.shadow[1])
        if len(shadow) != len(text):
            raise ChatTemplateError(
                "the content holds special-token strings and the chat template changes the content's "
                "length, so they cannot be kept as plain text: remove them from the data"
            )
        return text, shadow

    def encode(self, pieces: list[tuple[str, str | None]]) -> list[list[int]]:
        """Ids of each (text, shadow) piece; one batched call when no content holds a special string."""
        if self.shadow is None:
            return self.tokenizer([text for text, _ in pieces], add_special_tokens=False)["input_ids"]
        return [encode_rendered(self.tokenizer, text, shadow, self.specials) for text, shadow in pieces]


def render_turn(conv: Conversation, i: int, done: str, ends: EndOfTurn) -> tuple[tuple, tuple]:
    """((prompt text, shadow), (answer text, shadow)) of assistant message ``i``; ``done`` = text
    rendered so far. The answer is cut after its end-of-turn token.

    ChatML, [user "hi", assistant "yo"], i=1, done="" ->
    (("<|im_start|>user\\nhi<|im_end|>\\n<|im_start|>assistant\\n", None), ("yo<|im_end|>", None))
    """
    prompt, prompt_shadow = conv.texts(i, generation_prompt=True)
    full, full_shadow = conv.texts(i + 1)
    if not (prompt.startswith(done) and full.startswith(prompt)):
        raise ChatTemplateError(
            f"the chat template renders message {i} in a way that changes earlier text (it is not "
            "prefix-stable), so assistant turns cannot be located; use another chat_template"
        )
    answer = (full_shadow or full)[len(prompt) :]  # the template's own end of turn, not the content's
    cut = len(prompt) + max(
        (answer.rfind(e) + len(e) for e in ends.texts if e in answer), default=len(answer)
    )
    return (prompt, prompt_shadow), (
        full[len(prompt) : cut],
        full_shadow[len(prompt) : cut] if full_shadow else None,
    )


def check_tool_rendering(conv: Conversation, i: int, context: str, answer: str) -> None:
    """A template without tool support drops the tools, calls or results without a word: say so.

    ``context``: the text rendered since the previous answer, up to assistant message ``i``.
    """
    messages, missing = conv.messages, []
    first = not any(m["role"] == "assistant" for m in messages[:i])
    if first and conv.tools:
        names = [tool["function"]["name"] for tool in conv.tools]
        missing += [f"the tool '{name}' of the tools list" for name in names if name not in context]
    for call in messages[i].get("tool_calls") or []:
        if call["function"]["name"] not in answer:
            missing.append(f"the tool call '{call['function']['name']}' of message {i}")
    previous = max((j for j in range(i) if messages[j]["role"] == "assistant"), default=-1)
    for j in range(previous + 1, i):
        if messages[j]["role"] == "tool" and messages[j]["content"] not in context:
            missing.append(f"the tool result of message {j}")
    if missing:
        raise ChatTemplateError(
            f"the chat template does not render {missing[0]}: use chat_template: chatml, or a "
            "template with tool support (the model's own, e.g. Qwen2.5's)"
        )


def encode_conversation(
    tokenizer, messages: list[dict], max_length: int, ends: EndOfTurn, tools: list | None = None, specials=()
) -> dict:
    """Token ids and labels (-100 outside assistant answers), truncated to whole exchanges.

    ``messages`` and ``tools`` are template-ready (``chat.template_messages`` / ``chat.row_tools``);
    ``specials`` (``special_texts(tokenizer)``) keeps special-token strings in the content plain text.
    Tool calls are answers (supervised); tool results and the tools list are prompt (masked).
    -> {input_ids, labels, n_tokens, n_supervised, n_answers, n_answers_closed, n_tool_calls,
    n_tool_results, truncated, drop}; ``drop`` is the reason a sample has nothing to train on ("" when kept).
    """
    if messages and messages[0]["role"] == TEXT_ROLE:
        return encode_text(tokenizer, messages, max_length)
    conv = Conversation(tokenizer, messages, tools, specials)
    ids, labels, done = [], [], ""
    counts = Counter()
    truncated = False
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        (prompt, prompt_shadow), (answer, answer_shadow) = render_turn(conv, i, done, ends)
        check_tool_rendering(conv, i, prompt[len(done) :], answer)
        new_prompt = (prompt[len(done) :], prompt_shadow[len(done) :] if prompt_shadow else None)
        p_ids, a_ids = conv.encode([new_prompt, (answer, answer_shadow)])
        weight = message.get("loss_weight", 1.0)
        a_labels = a_ids if weight else [IGNORE_INDEX] * len(a_ids)
        if len(ids) + len(p_ids) + len(a_ids) > max_length:
            truncated = True
            if not ids:  # not even the first exchange fits: keep its head (possibly a partial answer)
                ids = (p_ids + a_ids)[:max_length]
                labels = ([IGNORE_INDEX] * len(p_ids) + a_labels)[:max_length]
            break
        ids += p_ids + a_ids
        labels += [IGNORE_INDEX] * len(p_ids) + a_labels
        done = prompt + answer
        counts["tool_results"] = sum(m["role"] == "tool" for m in messages[:i])  # all in the context
        if weight:
            counts["answers"] += 1
            counts["closed"] += bool(a_ids) and a_ids[-1] in ends.ids
            counts["tool_calls"] += len(message.get("tool_calls") or [])
    if not truncated:  # template text after the last answer (ChatML: "\n")
        text, shadow = conv.texts(len(messages))
        (tail,) = conv.encode([(text[len(done) :], shadow[len(done) :] if shadow else None)])
        if len(ids) + len(tail) <= max_length:
            ids += tail
            labels += [IGNORE_INDEX] * len(tail)
    return _encoded(ids, labels, counts, truncated, max_length)


def encode_text(tokenizer, messages: list[dict], max_length: int) -> dict:
    """A plain-text sample (TRL text, or a string prompt + completion): no chat template; each
    piece encoded as plain text on its own (as a prompt is at inference), eos closing the last;
    labels follow each piece's loss_weight (text: all; prompt-completion: the completion + eos)."""
    if tokenizer.eos_token_id is None:
        raise ChatDataError("plain-text SFT samples need a tokenizer with an eos token to end them")
    ids, labels = [], []
    for k, m in enumerate(messages):
        piece = encode_plain(tokenizer, m["content"]) + (
            [tokenizer.eos_token_id] if k == len(messages) - 1 else []
        )
        ids += piece
        labels += piece if m["loss_weight"] else [IGNORE_INDEX] * len(piece)
    truncated = len(ids) > max_length
    ids, labels = ids[:max_length], labels[:max_length]
    supervised = messages[-1]["loss_weight"] and labels and labels[-1] != IGNORE_INDEX
    counts = Counter(answers=int(bool(supervised)), closed=int(bool(supervised) and not truncated))
    return _encoded(ids, labels, counts, truncated, max_length)


def _encoded(ids: list[int], labels: list[int], counts: Counter, truncated: bool, max_length: int) -> dict:
    n_supervised = sum(label != IGNORE_INDEX for label in labels)
    drop = ""
    if n_supervised == 0:
        drop = f"prompt longer than max_length={max_length}" if truncated else "no supervised assistant turn"
    return {
        "input_ids": ids,
        "labels": labels,
        "n_tokens": len(ids),
        "n_supervised": n_supervised,
        "n_answers": counts["answers"],
        "n_answers_closed": counts["closed"],
        "n_tool_calls": counts["tool_calls"],
        "n_tool_results": counts["tool_results"],
        "truncated": truncated,
        "drop": drop,
    }


@dataclass
class EncodeChat:
    """``datasets.map`` function: rows -> encode_conversation columns (picklable for num_proc)."""

    tokenizer: object
    max_length: int

    def __call__(self, batch: dict) -> dict:
        ends, specials = EndOfTurn.of(self.tokenizer), special_texts(self.tokenizer)
        rows = []
        tools = batch.get("tools") or [None] * len(batch["messages"])
        for messages, row_tool, where in zip(batch["messages"], tools, batch["record"]):
            try:
                rows.append(
                    encode_conversation(
                        self.tokenizer,
                        template_messages(messages),
                        self.max_length,
                        ends,
                        row_tools(row_tool),
                        specials,
                    )
                )
            except Exception as err:  # a template error deep in jinja: say which record
                raise ChatDataError(f"{where}: could not render with the chat template: {err}") from err
        return {key: [row[key] for row in rows] for key in rows[0]}


# --------------------------------------------------------------------------- datasets


@dataclass
class SFTConversations:
    train: ChatData
    eval: ChatData | None


@dataclass
class SFTData:
    train: Dataset  # input_ids, labels (+ position_ids when packed)
    eval: Dataset | None
    audit: LabelAudit


def load_sft_conversations(args: SFTDataArguments, seed: int = 42) -> SFTConversations:
    """Read and mix train_files; hold out validation_files or a validation_split of conversations.

    A held-out conversation never appears in training, even when its file's weight repeats it.
    """
    options = LoadOptions(
        formats=args.data_formats,
        system_prompt=args.system_prompt,
        placeholders=args.placeholders,
        max_turns=args.max_turns,
        skip_invalid=args.skip_invalid,
    )
    train = load_conversations(args.train_files, options, args.mix_weights, seed=seed)
    evaluation = None
    if args.validation_files:
        evaluation = load_conversations(args.validation_files, options, seed=seed)
    elif args.validation_split > 0:
        train, evaluation = split_conversations(train, args.validation_split, seed)
    if args.max_train_samples is not None:
        train.dataset = train.dataset.select(range(min(args.max_train_samples, len(train.dataset))))
    return SFTConversations(train, evaluation)


def split_conversations(chat: ChatData, fraction: float, seed: int) -> tuple[ChatData, ChatData]:
    """Hold out ``fraction`` of the distinct records: all their repeats leave training, one copy of
    each becomes the eval set. 100 records, 0.1 -> (90 records' rows, 10 rows)."""
    records = chat.dataset["record"]
    distinct = sorted(set(records))
    n_eval = max(1, round(len(distinct) * fraction))
    if n_eval >= len(distinct):
        raise ChatDataError(f"{len(distinct)} conversations: too few to hold out {n_eval} for validation")
    held = set(random.Random(seed).sample(distinct, n_eval))
    first = {r: i for i, r in reversed(list(enumerate(records))) if r in held}
    train = [i for i, r in enumerate(records) if r not in held]
    return (
        ChatData(chat.dataset.select(train), chat.stats),
        ChatData(chat.dataset.select(sorted(first.values())), chat.stats),
    )


def conversation_texts(chat: ChatData):
    """Every message content, tool call and tools list (and the role names and tool markup the
    template adds), for training a tokenizer on SFT data."""
    yield "system user assistant\n"
    for messages, tools in zip(chat.dataset["messages"], chat.dataset["tools"]):
        if tools:
            yield TOOLS_PREAMBLE + tools + TOOLS_EPILOGUE
        for m in messages:
            if m["role"] == "tool":
                yield f"<tool_response>\n{m['content']}\n</tool_response>"
            else:
                yield m["content"]
            for call in m["tool_calls"] or []:
                function = call["function"]
                yield f"{OPEN}\n{call_text(function['name'], function['arguments'])}\n{CLOSE}"


def prepare_sft_tokenizer(model_args, data_args: SFTDataArguments, output_dir: str, chats: SFTConversations):
    """The configured tokenizer (or one trained on the conversations) with the chat template installed."""
    tokenizer = prepare_tokenizer(
        model_args, output_dir, data_args.tokenizer_vocab_size, conversation_texts(chats.train)
    )
    origin = set_chat_template(tokenizer, data_args.chat_template)
    logger.info(
        "chat template: %s (%s generation markers)",
        origin,
        "with" if GENERATION_MARKER.search(tokenizer.chat_template) else "without",
    )
    return tokenizer


def encode_chats(chat: ChatData, tokenizer, args: SFTDataArguments) -> Dataset:
    return chat.dataset.map(
        EncodeChat(tokenizer, args.max_length), batched=True, num_proc=args.num_proc, desc="render + label"
    )


def build_sft_datasets(chats: SFTConversations, tokenizer, args: SFTDataArguments) -> SFTData:
    """Encode, audit, drop samples with nothing to learn, and (with ``packing``) pack into rows."""
    encoded = encode_chats(chats.train, tokenizer, args)
    audit = build_audit(chats.train.stats, encoded, tokenizer, args)
    train = _trainable(encoded)
    evaluation = _trainable(encode_chats(chats.eval, tokenizer, args)) if chats.eval else None
    if evaluation is not None:
        audit.eval_samples = len(evaluation)
        if len(evaluation) == 0:
            raise ChatDataError(
                f"no usable eval conversation: all {len(chats.eval.dataset)} dropped "
                f"(longer prompts than max_length={args.max_length}?)"
            )
    if args.packing:
        train = pack_conversations(train, args.max_length)
        evaluation = pack_conversations(evaluation, args.max_length) if evaluation is not None else None
    return SFTData(train, evaluation, audit)


def _trainable(encoded: Dataset) -> Dataset:
    kept = encoded.filter(lambda drop: not drop, input_columns="drop", desc="drop unsupervised")
    return kept.select_columns(["input_ids", "labels"])
