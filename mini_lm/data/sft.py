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
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

from datasets import Dataset

from ..config import SFTDataArguments
from ..labels import IGNORE_INDEX
from ..tokenization import (
    GENERATION_MARKER,
    ChatTemplateError,
    prepare_tokenizer,
    set_chat_template,
    stop_token_ids,
)
from .audit import LabelAudit, build_audit
from .chat import ChatData, ChatDataError, LoadOptions, load_conversations
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


def render(tokenizer, messages: list[dict], generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def render_turn(tokenizer, messages: list[dict], i: int, done: str, ends: EndOfTurn) -> tuple[str, str]:
    """(prompt text, answer text) of assistant message ``i``; ``done`` = text rendered so far.

    ChatML, [user "hi", assistant "yo"], i=1, done="" ->
    ("<|im_start|>user\\nhi<|im_end|>\\n<|im_start|>assistant\\n", "yo<|im_end|>")
    """
    prompt = render(tokenizer, messages[:i], generation_prompt=True)
    full = render(tokenizer, messages[: i + 1])
    if not (prompt.startswith(done) and full.startswith(prompt)):
        raise ChatTemplateError(
            f"the chat template renders message {i} in a way that changes earlier text (it is not "
            "prefix-stable), so assistant turns cannot be located; use another chat_template"
        )
    answer = full[len(prompt) :]
    cut = max((answer.rfind(e) + len(e) for e in ends.texts if e in answer), default=len(answer))
    return prompt, answer[:cut]


def encode_conversation(tokenizer, messages: list[dict], max_length: int, ends: EndOfTurn) -> dict:
    """Token ids and labels (-100 outside assistant answers), truncated to whole exchanges.

    -> {input_ids, labels, n_tokens, n_supervised, n_answers, n_answers_closed, truncated, drop}; ``drop`` is
    the reason a sample has nothing to train on ("" when it is kept).
    """
    ids, labels, done = [], [], ""
    n_answers = closed = 0
    truncated = False
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt, answer = render_turn(tokenizer, messages, i, done, ends)
        p_ids, a_ids = tokenizer([prompt[len(done) :], answer], add_special_tokens=False)["input_ids"]
        a_labels = a_ids if message.get("loss_weight", 1.0) else [IGNORE_INDEX] * len(a_ids)
        if len(ids) + len(p_ids) + len(a_ids) > max_length:
            truncated = True
            if not ids:  # not even the first exchange fits: keep its head (possibly a partial answer)
                ids = (p_ids + a_ids)[:max_length]
                labels = ([IGNORE_INDEX] * len(p_ids) + a_labels)[:max_length]
            break
        ids += p_ids + a_ids
        labels += [IGNORE_INDEX] * len(p_ids) + a_labels
        done = prompt + answer
        if message.get("loss_weight", 1.0):
            n_answers += 1
            closed += bool(a_ids) and a_ids[-1] in ends.ids
    if not truncated:  # template text after the last answer (ChatML: "\n")
        tail = tokenizer(render(tokenizer, messages)[len(done) :], add_special_tokens=False)["input_ids"]
        if len(ids) + len(tail) <= max_length:
            ids += tail
            labels += [IGNORE_INDEX] * len(tail)
    n_supervised = sum(label != IGNORE_INDEX for label in labels)
    drop = ""
    if n_supervised == 0:
        drop = f"prompt longer than max_length={max_length}" if truncated else "no supervised assistant turn"
    return {
        "input_ids": ids,
        "labels": labels,
        "n_tokens": len(ids),
        "n_supervised": n_supervised,
        "n_answers": n_answers,
        "n_answers_closed": closed,
        "truncated": truncated,
        "drop": drop,
    }


@dataclass
class EncodeChat:
    """``datasets.map`` function: messages -> encode_conversation columns (picklable for num_proc)."""

    tokenizer: object
    max_length: int

    def __call__(self, batch: dict) -> dict:
        ends = EndOfTurn.of(self.tokenizer)
        rows = []
        for messages, where in zip(batch["messages"], batch["record"]):
            try:
                rows.append(encode_conversation(self.tokenizer, messages, self.max_length, ends))
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
    """Every message content (and the role names), for training a tokenizer on SFT data."""
    yield "system user assistant\n"
    for messages in chat.dataset["messages"]:
        for m in messages:
            yield m["content"]


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
