"""Preference data: a prompt and two answers to it, chosen and rejected, in any common format ->
prompt / chosen / rejected token ids for TRL's ``DPOTrainer``, by the SFT data rules.

    pairs = load_preference_pairs(data_args, seed=42)
    data = build_preference_datasets(pairs, tokenizer, data_args, max_length=1024)
    print(data.audit.render()); data.audit.check()       # data.train / data.eval: prompt_ids, chosen_ids, rejected_ids

Formats (detected per file from its first record, or named in ``data_formats``):

- ``sharegpt_ranking`` (LLaMA-Factory): ``{"conversations": [{from, value}, ...], "chosen": {from: gpt,
  value}, "rejected": {from: gpt, value}}``, optional ``system``;
- ``message_pairs``: ``{"chosen_messages": [...], "rejected_messages": [...]}``, two whole conversations
  that differ only in their last (assistant) message; content may be a list of text parts;
- ``trl``: ``{"prompt": ..., "chosen": ..., "rejected": ...}``, each a string (one user message / one
  assistant answer) or a list of messages; without ``prompt``, ``chosen`` and ``rejected`` are whole
  conversations (TRL's implicit prompt).

Each side of a pair becomes a conversation in one of the SFT formats and goes through the SFT
reader (``mini_lm.data.chat.normalize_record``: roles, turn order, text parts, placeholders, the
system prompt). Then: the answers must be assistant turns, the prompt must hold a non-empty user
message, and both sides must share it. ``loss_weight`` fields are not used: both answers are scored.

Tokens: the prompt is rendered with the chat template up to the assistant header, each answer up to
and including its end-of-turn token (``mini_lm.data.sft.render_turn``, the SFT labels' method), and
the three are tokenized on their own, as at inference. Truncation to ``max_length`` keeps the prompt
whole and cuts the answers to the room left; pairs whose prompt leaves no room are dropped and
counted, and pairs cut on one side only are counted and reported (their log-probabilities then
cover different lengths). Pairs with identical answers teach nothing and are dropped and counted.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

from datasets import Dataset

from ..config import PreferenceDataArguments
from ..tokenization import prepare_tokenizer, set_chat_template, special_texts
from .chat import (
    SHAREGPT_ROLES,
    ChatDataError,
    LoadOptions,
    _per_spec,
    _records,
    apply_weight,
    normalize_record,
    resolve_chat_files,
)
from .preference_audit import IDENTICAL, PreferenceAudit, PreferenceStats, build_preference_audit
from .sft import Conversation, EndOfTurn, render_turn

logger = logging.getLogger(__name__)

PREFERENCE_FORMATS = ("sharegpt_ranking", "message_pairs", "trl")


@dataclass
class PreferencePairs:
    train: Dataset  # prompt: [messages], chosen: message, rejected: message, source, record
    eval: Dataset | None
    stats: PreferenceStats


# --------------------------------------------------------------------------- formats


def detect_preference_format(record: object, where: str) -> str:
    """{"conversations", "chosen"} -> sharegpt_ranking; {"chosen_messages"} -> message_pairs;
    {"chosen", "rejected"} (+ "prompt") -> trl."""
    if isinstance(record, dict):
        if "chosen_messages" in record or "rejected_messages" in record:
            return "message_pairs"
        if "conversations" in record:
            return "sharegpt_ranking"
        if "chosen" in record or "rejected" in record or "prompt" in record:
            return "trl"
        raise ChatDataError(
            f"{where}: cannot tell the preference format from fields {sorted(record)[:8]}: expected "
            "'conversations' + 'chosen' + 'rejected', 'chosen_messages' + 'rejected_messages', or "
            "'prompt' + 'chosen' + 'rejected' (or set data_formats)",
            "unknown format",
        )
    raise ChatDataError(
        f"{where}: a record must be a JSON object, got {type(record).__name__}", "record not an object"
    )


def _get(record: dict, key: str, where: str, fmt: str):
    if key not in record:
        raise ChatDataError(
            f"{where}: missing field '{key}' ({fmt} format; fields: {sorted(record)[:8]})", "missing field"
        )
    return record[key]


def _sharegpt_answer(record: dict, key: str, where: str) -> dict:
    """The chosen / rejected turn of a ranking record: one {from: gpt, value} (or a list holding one)."""
    turn = _get(record, key, where, "sharegpt_ranking")
    if isinstance(turn, list) and len(turn) == 1:
        turn = turn[0]
    if not isinstance(turn, dict):
        raise ChatDataError(f"{where}: {key} must be one {{from, value}} turn", "bad answer")
    speaker = turn.get("from")
    if SHAREGPT_ROLES.get(speaker) != "assistant":
        raise ChatDataError(
            f"{where}: {key} is not an assistant turn: from {speaker!r} (expected 'gpt')",
            "answer not assistant",
        )
    return turn


def from_sharegpt_ranking(record: dict, where: str) -> tuple[str, dict, dict]:
    turns = _get(record, "conversations", where, "sharegpt_ranking")
    chosen, rejected = (_sharegpt_answer(record, key, where) for key in ("chosen", "rejected"))
    if not isinstance(turns, list) or not any(
        isinstance(t, dict) and SHAREGPT_ROLES.get(t.get("from")) != "system" for t in turns
    ):
        raise ChatDataError(f"{where}: empty prompt: 'conversations' holds no user message", "empty prompt")
    side = {k: v for k, v in record.items() if k == "system"}
    return (
        "sharegpt",
        {**side, "conversations": [*turns, chosen]},
        {**side, "conversations": [*turns, rejected]},
    )


def _as_messages(value: object, role: str) -> object:
    """A string is one message of ``role``; anything else is kept for the SFT reader to check."""
    return [{"role": role, "content": value}] if isinstance(value, str) else value


def _last_is_answer(messages: object, where: str, key: str) -> None:
    if not isinstance(messages, list) or not messages:
        raise ChatDataError(f"{where}: field '{key}' must be a non-empty list of messages", "no messages")
    last = messages[-1]
    role = last.get("role") if isinstance(last, dict) else None
    if role != "assistant":
        raise ChatDataError(
            f"{where}: {key} is not an assistant turn: its last message has role {role!r} "
            "(the answer must be the assistant's)",
            "answer not assistant",
        )


def _prompt_part(messages: list, where: str, key: str) -> None:
    if not any(isinstance(m, dict) and m.get("role") != "system" for m in messages[:-1]):
        raise ChatDataError(
            f"{where}: empty prompt: {key} holds no user message before the answer", "empty prompt"
        )


def from_message_pairs(record: dict, where: str) -> tuple[str, dict, dict]:
    sides = {}
    for key in ("chosen_messages", "rejected_messages"):
        messages = _get(record, key, where, "message_pairs")
        _last_is_answer(messages, where, key)
        _prompt_part(messages, where, key)
        sides[key] = {"messages": messages}
    return "messages", sides["chosen_messages"], sides["rejected_messages"]


def from_trl(record: dict, where: str) -> tuple[str, dict, dict]:
    chosen = _as_messages(_get(record, "chosen", where, "trl"), "assistant")
    rejected = _as_messages(_get(record, "rejected", where, "trl"), "assistant")
    for key, answer in (("chosen", chosen), ("rejected", rejected)):
        _last_is_answer(answer, where, key)
    if "prompt" not in record:  # implicit prompt: two whole conversations
        for key, answer in (("chosen", chosen), ("rejected", rejected)):
            _prompt_part(answer, where, key)
        return "messages", {"messages": chosen}, {"messages": rejected}
    prompt = _as_messages(record["prompt"], "user")
    if not isinstance(prompt, list) or not prompt:
        raise ChatDataError(f"{where}: empty prompt: 'prompt' must be a string or messages", "empty prompt")
    if len(chosen) != 1 or len(rejected) != 1:
        raise ChatDataError(
            f"{where}: with a 'prompt', chosen and rejected must each be one assistant message", "bad answer"
        )
    return "messages", {"messages": [*prompt, *chosen]}, {"messages": [*prompt, *rejected]}


PAIR_NORMALIZERS = {
    "sharegpt_ranking": from_sharegpt_ranking,
    "message_pairs": from_message_pairs,
    "trl": from_trl,
}


TOOLS_UNSUPPORTED = "preference pairs with tool calls are not supported yet; train tool use with SFT"


def normalize_pair(record: object, where: str, fmt: str, options: LoadOptions, stats) -> dict:
    """One record -> {prompt: [messages], chosen: message, rejected: message} by the SFT rules."""
    if not isinstance(record, dict):
        raise ChatDataError(
            f"{where}: a record must be a JSON object, got {type(record).__name__}", "record not an object"
        )
    if "tools" in record:  # never dropped silently: the pair renderer has no tools list yet
        raise ChatDataError(f"{where}: tools: {TOOLS_UNSUPPORTED}", "tools in a pair")
    chat_format, chosen_side, rejected_side = PAIR_NORMALIZERS[fmt](record, where)
    chosen, _ = normalize_record(chosen_side, f"{where}: chosen side", chat_format, options, stats)
    rejected, _ = normalize_record(rejected_side, f"{where}: rejected side", chat_format, options, stats)
    for m in (*chosen, *rejected):
        if m.get("tool_calls") or m["role"] == "tool":
            raise ChatDataError(
                f"{where}: the {m['role']} message uses tools: {TOOLS_UNSUPPORTED}", "tools in a pair"
            )
    prompt = [_plain(m) for m in chosen[:-1]]
    if prompt != [_plain(m) for m in rejected[:-1]]:
        raise ChatDataError(
            f"{where}: chosen and rejected differ before their answers: a pair shares one prompt",
            "prompts differ",
        )
    if not prompt or prompt[-1]["role"] != "user" or not prompt[-1]["content"].strip():
        raise ChatDataError(
            f"{where}: empty prompt: the user message before the answers is empty", "empty prompt"
        )
    return {"prompt": prompt, "chosen": _plain(chosen[-1]), "rejected": _plain(rejected[-1])}


def _plain(message: dict) -> dict:
    return {"role": message["role"], "content": message["content"]}


# --------------------------------------------------------------------------- loading


def load_pair_file(path: str, fmt: str, options: LoadOptions, stats: PreferenceStats) -> list[dict]:
    """All usable pairs of one file as rows {prompt, chosen, rejected, source, record}."""
    rows, info = [], {"format": fmt, "records": 0, "kept": 0}
    for where, record in _records(path):
        info["records"] += 1
        if info["records"] == 1 and fmt == "auto":
            fmt = info["format"] = detect_preference_format(record, where)
        try:
            pair = normalize_pair(record, where, fmt, options, stats.chat)
        except ChatDataError as err:
            if not options.skip_invalid:
                raise
            stats.chat.skipped[f"invalid: {err.reason}"] += 1
            logger.warning("skipping invalid record: %s", err)
            continue
        if pair["chosen"]["content"].strip() == pair["rejected"]["content"].strip():
            stats.identical += 1
            continue
        rows.append({**pair, "source": path, "record": where})
    if info["records"] == 0:
        raise ChatDataError(f"{path}: no records")
    info["kept"] = len(rows)
    stats.chat.files[path] = info
    return rows


def load_pairs(
    specs: list[str], args: PreferenceDataArguments, weights: list[float] | None, seed: int
) -> tuple[list[dict], PreferenceStats]:
    """Read and check every spec; repeat each spec's pairs by its weight; shuffle."""
    if not specs:
        raise ChatDataError("no preference data: set train_files")
    options = LoadOptions(
        system_prompt=args.system_prompt, placeholders=args.placeholders, skip_invalid=args.skip_invalid
    )
    formats = _per_spec(args.data_formats or ["auto"], specs, "data_formats")
    weights = _per_spec(weights or [1.0], specs, "mix_weights")
    stats, rng, rows = PreferenceStats(), random.Random(seed), []
    for spec, fmt, weight in zip(specs, formats, weights):
        if fmt != "auto" and fmt not in PREFERENCE_FORMATS:
            raise ChatDataError(
                f"unknown preference format '{fmt}' for {spec} (auto | {' | '.join(PREFERENCE_FORMATS)})"
            )
        spec_rows = [
            row for path in resolve_chat_files(spec) for row in load_pair_file(path, fmt, options, stats)
        ]
        mixed = apply_weight(spec_rows, float(weight), rng)
        stats.chat.mix[spec] = {
            "conversations": len(spec_rows),
            "weight": float(weight),
            "samples": len(mixed),
        }
        rows.extend(mixed)
    if stats.chat.unfilled_placeholders:
        logger.warning("placeholders without a value: %s", dict(stats.chat.unfilled_placeholders))
    if not rows:
        skipped = dict(stats.chat.skipped) | ({IDENTICAL: stats.identical} if stats.identical else {})
        raise ChatDataError(f"no usable preference pairs in {specs}: skipped {skipped}")
    rng.shuffle(rows)
    return rows, stats


def load_preference_pairs(args: PreferenceDataArguments, seed: int = 42) -> PreferencePairs:
    """train_files mixed and shuffled; validation_files or a validation_split of distinct records held out."""
    rows, stats = load_pairs(args.train_files, args, args.mix_weights, seed)
    evaluation = None
    if args.validation_files:
        evaluation, _ = load_pairs(args.validation_files, args, None, seed)
    elif args.validation_split > 0:
        rows, evaluation = _hold_out(rows, args.validation_split, seed)
    if args.max_train_samples is not None:
        rows = rows[: args.max_train_samples]
    return PreferencePairs(
        Dataset.from_list(rows), Dataset.from_list(evaluation) if evaluation else None, stats
    )


def _hold_out(rows: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """All repeats of the held-out records leave training; one copy of each is the eval set."""
    distinct = sorted({r["record"] for r in rows})
    n_eval = max(1, round(len(distinct) * fraction))
    if n_eval >= len(distinct):
        raise ChatDataError(f"{len(distinct)} pairs: too few to hold out {n_eval} for validation")
    held = set(random.Random(seed).sample(distinct, n_eval))
    first = {r["record"]: r for r in reversed(rows) if r["record"] in held}
    return [r for r in rows if r["record"] not in held], [first[k] for k in sorted(first)]


def prepare_preference_tokenizer(model_args, data_args: PreferenceDataArguments, output_dir: str):
    """The model's tokenizer (an SFT model saves its chat template with it), or chat_template's."""
    tokenizer = prepare_tokenizer(model_args, output_dir)
    origin = set_chat_template(tokenizer, data_args.chat_template)
    logger.info("chat template: %s", origin)
    return tokenizer


# --------------------------------------------------------------------------- tokens


def encode_pair(tokenizer, pair: dict, max_length: int, ends: EndOfTurn, specials=()) -> dict:
    """Prompt / chosen / rejected ids, answers cut to the room the whole prompt leaves.

    ``specials`` (``special_texts(tokenizer)``) keeps special-token strings in the content plain text.

    -> {prompt_ids, chosen_ids, rejected_ids, cut: "" | "both" | "chosen" | "rejected", chosen_closed,
    rejected_closed, drop}; ``drop`` names why a pair has nothing to compare ("" when it is kept).
    """
    n = len(pair["prompt"])
    chosen_conv = Conversation(tokenizer, [*pair["prompt"], pair["chosen"]], specials=specials)
    rejected_conv = Conversation(tokenizer, [*pair["prompt"], pair["rejected"]], specials=specials)
    prompt, chosen = render_turn(chosen_conv, n, "", ends)
    _, rejected = render_turn(rejected_conv, n, "", ends)
    p_ids, c_ids = chosen_conv.encode([prompt, chosen])  # literal "<|im_start|>" in content stays text
    (r_ids,) = rejected_conv.encode([rejected])
    room = max_length - len(p_ids)
    cut = {"chosen": len(c_ids) > room, "rejected": len(r_ids) > room}
    c_ids, r_ids = c_ids[: max(room, 0)], r_ids[: max(room, 0)]
    return {
        "prompt_ids": p_ids,
        "chosen_ids": c_ids,
        "rejected_ids": r_ids,
        "cut": "both" if all(cut.values()) else next((k for k, v in cut.items() if v), ""),
        "chosen_closed": bool(c_ids) and c_ids[-1] in ends.ids,
        "rejected_closed": bool(r_ids) and r_ids[-1] in ends.ids,
        "drop": f"prompt longer than max_length={max_length}" if room < 1 else "",
    }


@dataclass
class EncodePairs:
    """``datasets.map`` function: pairs -> encode_pair columns (picklable for num_proc)."""

    tokenizer: object
    max_length: int

    def __call__(self, batch: dict) -> dict:
        ends, specials = EndOfTurn.of(self.tokenizer), special_texts(self.tokenizer)
        rows = []
        for prompt, chosen, rejected, where in zip(
            batch["prompt"], batch["chosen"], batch["rejected"], batch["record"]
        ):
            pair = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
            try:
                rows.append(encode_pair(self.tokenizer, pair, self.max_length, ends, specials))
            except Exception as err:  # a template error deep in jinja: say which record
                raise ChatDataError(f"{where}: could not render with the chat template: {err}") from err
        return {key: [row[key] for row in rows] for key in rows[0]}


# --------------------------------------------------------------------------- datasets


@dataclass
class PreferenceData:
    train: Dataset  # prompt_ids, chosen_ids, rejected_ids: what TRL's DataCollatorForPreference takes
    eval: Dataset | None
    audit: PreferenceAudit


def encode_pairs(pairs: Dataset, tokenizer, max_length: int, num_proc: int | None) -> Dataset:
    return pairs.map(EncodePairs(tokenizer, max_length), batched=True, num_proc=num_proc, desc="render pairs")


def build_preference_datasets(
    pairs: PreferencePairs,
    tokenizer,
    args: PreferenceDataArguments,
    max_length: int,
    num_proc: int | None = None,
) -> PreferenceData:
    """Encode, audit, and drop the pairs with no room for an answer."""
    encoded = encode_pairs(pairs.train, tokenizer, max_length, num_proc)
    audit = build_preference_audit(pairs.stats, encoded, tokenizer, max_length, args.audit_samples)
    evaluation = None
    if pairs.eval is not None:
        evaluation = _trainable(encode_pairs(pairs.eval, tokenizer, max_length, num_proc))
        audit.eval_pairs = len(evaluation)
        if len(evaluation) == 0:
            raise ChatDataError(
                f"no usable eval pair: all {len(pairs.eval)} dropped (prompts longer than max_length={max_length}?)"
            )
    return PreferenceData(_trainable(encoded), evaluation, audit)


def _trainable(encoded: Dataset) -> Dataset:
    kept = encoded.filter(lambda drop: not drop, input_columns="drop", desc="drop pairs without room")
    return kept.select_columns(["prompt_ids", "chosen_ids", "rejected_ids"])
