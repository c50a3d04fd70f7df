"""Preference pairs from a model's own answers: ask it the questions of a Q/A file, and pair each
wrong or repetitive answer it gives (rejected) with the reference answer (chosen).

    model, tokenizer = load_for_generation("runs/quickstart/sft")
    pairs, stats = self_pairs(model, tokenizer, read_qa("world/qa_sft.jsonl"), PairSettings(samples=2))
    write_pairs(pairs, "runs/quickstart/preference.jsonl")

A Q/A record is ``{"messages": [..., user, assistant], "expected": "厦门", ...}`` (the synthetic
world's qa_*.jsonl): the last message is the reference answer, ``expected`` the fact it must state.
Answers are scored by the probe metrics (``knowledge_contains``, ``repetitive``), so "wrong" and
"repetitive" mean what the checkpoint probes report. Pairs are written in TRL's conversational
format (``prompt`` / ``chosen`` / ``rejected`` message lists) with the record's other fields and
the ``reason`` the answer was rejected; ``recipes/dpo.py`` reads them as they are.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .generation import GenerationSettings, generate, render_chat_prompt
from .probe_metrics import Answer, score_answer
from .probing import load_questions
from .records import read_records

logger = logging.getLogger(__name__)


class QAError(ValueError):
    """A Q/A record that cannot be asked or checked; the message names file, line and field."""


@dataclass
class PairSettings:
    samples: int = 2  # sampled answers per question, on top of the greedy one
    temperature: float = 1.0  # sampling as the model would be used, so its usual mistakes show
    top_k: int = 0
    max_new_tokens: int = 40
    per_question: int = 1  # distinct rejected answers kept per question
    batch_size: int = 64
    seed: int = 0


def read_qa(path: str | Path, limit: int | None = None) -> list[dict]:
    """Q/A records with a user question, a reference answer and ``expected``; errors name the line."""
    rows = []
    for where, record in read_records(path):
        messages = record.get("messages") if isinstance(record, dict) else None
        if not (
            isinstance(messages, list) and len(messages) >= 2 and messages[-1].get("role") == "assistant"
        ):
            raise QAError(f"{where}: 'messages' must end with [..., user, assistant] (the reference answer)")
        if not isinstance(record.get("expected"), str) or not record["expected"].strip():
            raise QAError(f"{where}: missing field 'expected' (the fact a right answer states)")
        rows.append({**record, "where": where})
        if limit and len(rows) >= limit:
            break
    if not rows:
        raise QAError(f"{path}: no Q/A records")
    return rows


def exclude_probed(qa: list[dict], probe_questions: str | Path) -> tuple[list[dict], set]:
    """Leave out every record about a subject (``person_id``) that the probe file asks a chat question
    about, so that the probes measure people the pairs never mention. Returns (kept, subjects left out).

    A record without ``person_id`` is left out only when its own question is a probe question.
    """
    asked = {q.text for q in load_questions(probe_questions) if q.mode == "chat"}
    hit = [r for r in qa if r["messages"][-2]["content"] in asked]
    subjects = {r["person_id"] for r in hit if "person_id" in r}
    kept = [r for r in qa if r not in hit and r.get("person_id", object()) not in subjects]
    return kept, subjects


def rejection_reasons(
    text: str, stopped: bool, n_tokens: int, max_new_tokens: int, expected: str
) -> list[str]:
    """[] for a good answer; else "wrong" (the expected fact is missing) and / or "repetitive"."""
    scores = score_answer(Answer(text, stopped, n_tokens, max_new_tokens, expected))
    return [
        name
        for name, bad in (("wrong", not scores["knowledge_contains"]), ("repetitive", scores["repetitive"]))
        if bad
    ]


def self_pairs(model, tokenizer, qa: list[dict], settings: PairSettings) -> tuple[list[dict], Counter]:
    """Greedy + ``samples`` sampled answers per question -> pairs (reference, bad answer); counts."""
    prompts = [render_chat_prompt(tokenizer, r["messages"][:-1]) for r in qa]
    decodings = [GenerationSettings(do_sample=False, max_new_tokens=settings.max_new_tokens)] + [
        GenerationSettings(
            do_sample=True,
            temperature=settings.temperature,
            top_k=settings.top_k,
            max_new_tokens=settings.max_new_tokens,
            seed=settings.seed + i,
        )
        for i in range(settings.samples)
    ]
    rejected: list[dict[str, list[str]]] = [{} for _ in qa]  # per question: answer -> reasons
    stats = Counter(questions=len(qa))
    for decoding in decodings:
        for record, found, result in zip(
            qa, rejected, generate(model, tokenizer, prompts, decoding, settings.batch_size)
        ):
            stats["answers"] += 1
            reasons = rejection_reasons(
                result.text,
                result.stopped,
                len(result.token_ids),
                decoding.max_new_tokens,
                record["expected"],
            )
            stats.update(reasons or ["good"])
            # An empty answer is bad too, but no usable rejected turn (the SFT rules refuse empty answers).
            if reasons and result.text.strip() and len(found) < settings.per_question:
                found.setdefault(result.text.strip(), reasons)
    pairs = [
        pair(record, text, reasons) for record, found in zip(qa, rejected) for text, reasons in found.items()
    ]
    stats["pairs"] = len(pairs)
    stats["questions without a bad answer"] = sum(not found for found in rejected)
    return pairs, stats


def pair(record: dict, rejected: str, reasons: list[str]) -> dict:
    """TRL's conversational preference record, keeping the Q/A record's other fields."""
    extra = {k: v for k, v in record.items() if k not in ("messages", "where")}
    return {
        "prompt": record["messages"][:-1],
        "chosen": [record["messages"][-1]],
        "rejected": [{"role": "assistant", "content": rejected}],
        "reason": "+".join(reasons),
        **extra,
    }


def write_pairs(pairs: list[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs)
    return path


def format_stats(stats: Counter) -> str:
    """One line: how the model answered and how many pairs that made."""
    answers = max(stats["answers"], 1)
    return (
        f"{stats['questions']} questions, {stats['answers']} answers: good {stats['good'] / answers:.0%}, "
        f"wrong {stats['wrong'] / answers:.0%}, repetitive {stats['repetitive'] / answers:.0%} -> "
        f"{stats['pairs']} pairs ({stats['questions without a bad answer']} questions always answered well)"
    )
