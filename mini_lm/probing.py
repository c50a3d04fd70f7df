"""Checkpoint probes: fixed questions, answered by a model at each checkpoint, scored and stored.

    questions = load_questions("world/probe_questions.yaml")        # or None: the built-in set
    records = probe_model(model, tokenizer, questions, decoding_settings(ProbeArguments()))
    ProbeStore("runs/x").append(150, records)   # checkpoint-150/probe.jsonl + probes.jsonl
    summarize(records)["probe/greedy/knowledge_contains"]   # mini_lm.probe_metrics: what is scored, how

A questions file (YAML or JSON; JSONL with one question per line also works, e.g. the synthetic
world's completions.jsonl / qa_heldout.jsonl):

    questions:
      - prompt: 中国的历史              # raw continuation (pretraining), as in seed 000
      - question: 李白是谁？            # chat: one user turn, rendered with the chat template
        expected: 诗仙                  # optional: knowledge score (exact / contains / keywords)
        keywords: [唐代, 诗人]           # optional: default derived from expected
        group: heldout                  # optional: knowledge is also reported per group
      - messages: [{role: system, content: ...}, {role: user, content: ...}]
        id: sys-q                       # optional stable id; default: the question text
      - question: 王伟出生在哪里？        # multiple choice (raw 'prompt' or chat): not generated but
        choices: [成都, 北京, 厦门]       #   scored, each choice by its log-likelihood after the
        answer: 北京                    #   prompt (mini_lm/scoring.py); answer: the text, 1, or "B"
    multiple_choice: [...]              # optional: more multiple-choice questions (synth-world's)

Multiple-choice records carry the pseudo-decoding ``likelihood`` (``CHOICE_DECODING``): the
answer is the choice with the highest log-likelihood per character, and ``mc_accuracy``,
``mc_chance`` and the significance of beating chance are summarized (mini_lm/probe_metrics.py).

The built-in set follows the run's language (``probe_language: auto``): the training data the
Trainer holds is decoded (a sample of its rows) and classified by ``metrics.text_language``
(share of Han characters among the units: >= 80% Chinese, <= 20% English, else both); without
training data, the tokenizer's vocabulary: "en" when under 1% of its entries are Chinese, else both.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from .config import ProbeArguments
from .errors import UserError
from .generation import GenerationSettings, generate, render_chat_prompt
from .metrics import text_language
from .multiple_choice import BenchmarkDataError, check_choices, resolve_answer
from .probe_metrics import CHOICE_DECODING, Answer, score_answer
from .records import RecordError, read_records
from .scoring import ChoiceScore, best_choice, score_choices
from .text_files import read_text

DEFAULT_QUESTIONS = Path(__file__).parent / "assets" / "probe_questions.yaml"
RUN_FILE = "probes.jsonl"  # run level: every checkpoint's answers
CHECKPOINT_FILE = "probe.jsonl"  # inside checkpoint-N: that checkpoint's answers
CONFIG_FILE = "probe_config.json"  # the questions and settings a run probes with (reused offline)


class ProbeConfigError(UserError, ValueError):
    """A probe questions file or probe setting that cannot be used as written."""


@dataclass
class ProbeQuestion:
    id: str
    mode: str  # "raw" | "chat"
    text: str  # what is shown: the raw prompt, or the last user message
    messages: list[dict] = field(default_factory=list)  # chat mode only
    expected: str | None = None
    keywords: list[str] | None = None
    group: str | None = None
    choices: list[str] | None = None  # multiple choice: scored by likelihood, not generated
    answer: int | None = None  # multiple choice: index of the right choice
    lang: str | None = None  # "zh" | "en": the built-in set is filtered by the run's language

    @property
    def kind(self) -> str:
        return "choice" if self.choices is not None else "generation"

    def render(self, tokenizer) -> str:
        return render_chat_prompt(tokenizer, self.messages) if self.mode == "chat" else self.text


# --------------------------------------------------------------------------- questions


def load_questions(path: str | os.PathLike | None = None) -> list[ProbeQuestion]:
    """Questions from a YAML / JSON / JSONL file (None: the built-in seed-000 / seed-004 set)."""
    path = Path(path) if path else DEFAULT_QUESTIONS
    if not path.is_file():
        raise ProbeConfigError(f"probe questions file not found: {path}")
    if path.suffix == ".jsonl":
        try:
            located = list(read_records(path))
        except RecordError as err:
            raise ProbeConfigError(str(err)) from err
        where, raw = [at for at, _ in located], [record for _, record in located]
    else:
        text = read_text(path)  # a BOM or a GBK file, as every user file (mini_lm/text_files.py)
        data = _parse_json(text, str(path)) if path.suffix == ".json" else _parse_yaml(text, path)
        raw, where = _question_lists(data, path)
    questions = [_parse_question(record, at) for record, at in zip(raw, where)]
    if not questions:
        raise ProbeConfigError(f"{path}: no questions")
    seen: dict[str, str] = {}
    for question, at in zip(questions, where):
        key = f"{question.kind}:{question.mode}:{question.id}"
        if key in seen:
            raise ProbeConfigError(
                f"{at}: duplicate question id {question.id!r} (first at {seen[key]}); "
                "give each question a distinct 'id'"
            )
        seen[key] = at
    return questions


def _question_lists(data, path: Path) -> tuple[list, list[str]]:
    """A list of questions, or a mapping with ``questions:`` and/or ``multiple_choice:`` lists."""
    if not isinstance(data, dict):
        data = {"questions": data}
    if not any(isinstance(data.get(key), list) for key in ("questions", "multiple_choice")):
        raise ProbeConfigError(f"{path}: expected a list of questions (or a mapping with 'questions:')")
    raw, where = [], []
    for key, name in (("questions", "question"), ("multiple_choice", "multiple_choice question")):
        for i, record in enumerate(data.get(key) or []):
            at = f"{path}: {name} {i + 1}"
            if key == "multiple_choice" and not (isinstance(record, dict) and "choices" in record):
                raise ProbeConfigError(f"{at}: needs 'choices' and 'answer'")
            raw.append(record)
            where.append(at)
    return raw, where


def _parse_json(text: str, where: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ProbeConfigError(f"{where}: not valid JSON ({err.msg}, line {err.lineno})") from err


def _parse_yaml(text: str, path: Path):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ProbeConfigError(f"{path}: not valid YAML: {err}") from err


_KNOWN_FIELDS = {
    "id",
    "prompt",
    "question",
    "messages",
    "expected",
    "keywords",
    "group",
    "split",
    "person_id",
    "lang",
    "attribute",
    "mode",
    "choices",
    "answer",
}


def _parse_question(record, where: str) -> ProbeQuestion:
    """One record -> ProbeQuestion. ``prompt`` is raw mode; ``question`` / ``messages`` chat mode.
    A trailing assistant turn in ``messages`` (a reference answer, as in qa_*.jsonl) is dropped."""
    if not isinstance(record, dict):
        raise ProbeConfigError(f"{where}: a question must be a mapping, got {type(record).__name__}")
    unknown = sorted(set(record) - _KNOWN_FIELDS)
    if unknown:
        raise ProbeConfigError(f"{where}: unknown field(s) {unknown}; known: {sorted(_KNOWN_FIELDS)}")
    given = [k for k in ("prompt", "question", "messages") if k in record]
    if len(given) != 1:
        raise ProbeConfigError(
            f"{where}: needs exactly one of 'prompt' (raw continuation), 'question' or "
            f"'messages' (chat), got {given or 'none'}"
        )
    if "prompt" in record:
        mode, messages, text = "raw", [], _string(record, "prompt", where)
    else:
        messages = (
            [{"role": "user", "content": _string(record, "question", where)}]
            if "question" in record
            else _messages(record["messages"], where)
        )
        mode, text = "chat", messages[-1]["content"]
    keywords = record.get("keywords")
    if keywords is not None and (
        not isinstance(keywords, list) or not all(isinstance(k, str) for k in keywords)
    ):
        raise ProbeConfigError(f"{where}: 'keywords' must be a list of strings")
    expected = record.get("expected")
    group = record.get("group", record.get("split"))
    choices, answer = _choices(record, where)
    if choices is not None:
        expected = choices[answer]  # what a right answer reads: shown in the report
    return ProbeQuestion(
        id=str(record.get("id", text)),
        mode=mode,
        text=text,
        messages=messages,
        expected=None if expected is None else str(expected),
        keywords=keywords or None,
        group=None if group is None else str(group),
        choices=choices,
        answer=answer,
        lang=None if record.get("lang") is None else str(record["lang"]),
    )


def _choices(record: dict, where: str) -> tuple[list[str] | None, int | None]:
    """(choices, index of the right one) of a multiple-choice record; (None, None) otherwise."""
    if "choices" not in record:
        if "answer" in record:
            raise ProbeConfigError(
                f"{where}: 'answer' belongs to a multiple-choice question (with 'choices'); "
                "the reference of a generated answer is 'expected'"
            )
        return None, None
    if "answer" not in record:
        raise ProbeConfigError(f"{where}: a multiple-choice question needs 'answer' (the right choice)")
    try:
        choices = check_choices(record["choices"], where)
        return choices, resolve_answer(record["answer"], choices, where)
    except BenchmarkDataError as err:
        raise ProbeConfigError(str(err)) from err


def _string(record: dict, key: str, where: str) -> str:
    value = record[key]
    if not isinstance(value, str) or not value.strip():
        raise ProbeConfigError(f"{where}: '{key}' must be a non-empty string")
    return value


def _messages(messages, where: str) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise ProbeConfigError(f"{where}: 'messages' must be a non-empty list of {{role, content}}")
    for i, m in enumerate(messages):
        if (
            not isinstance(m, dict)
            or not isinstance(m.get("role"), str)
            or not isinstance(m.get("content"), str)
        ):
            raise ProbeConfigError(f"{where}: messages[{i}] needs string 'role' and 'content'")
    if messages[-1]["role"] == "assistant":
        messages = messages[:-1]  # the reference answer: the model is to produce it
    if not messages or messages[-1]["role"] != "user":
        raise ProbeConfigError(f"{where}: 'messages' must end with a user turn")
    return messages


def check_questions_fit(
    questions: list[ProbeQuestion], tokenizer, max_new_tokens: int, max_positions: int | None = None
) -> None:
    """Fail before training, not at the first save: chat questions need a chat template, and every
    prompt plus its answer must fit the model's positions (GPT-2's learned positions would crash)."""
    chat = [q for q in questions if q.mode == "chat"]
    if chat and not getattr(tokenizer, "chat_template", None):
        raise ProbeConfigError(
            f"{len(chat)} probe question(s) are chat questions (e.g. {chat[0].text!r}) but the tokenizer has no "
            "chat template: use raw 'prompt' questions (probe_questions: FILE) or a tokenizer with a template"
        )
    if not max_positions:
        return
    prompts = {id(q): _tokens(tokenizer, q.render(tokenizer)) for q in questions}

    def answer(q: ProbeQuestion) -> int:  # generated tokens, or the longest choice's
        return max_new_tokens if q.kind == "generation" else max(_tokens(tokenizer, c) for c in q.choices)

    longest = max(questions, key=lambda q: prompts[id(q)] + answer(q))
    n = prompts[id(longest)]
    if n + answer(longest) > max_positions:
        what, fix = (
            (
                f"with probe_max_new_tokens={max_new_tokens}",
                f"lower probe_max_new_tokens to {max(max_positions - n, 0)}, ",
            )
            if longest.kind == "generation"
            else ("with its longest choice", "shorten its choices, ")
        )
        raise ProbeConfigError(
            f"probe question {longest.text!r} is {n} tokens; {what} it exceeds the model's {max_positions} "
            f"positions: {fix}shorten the question, or set probe: false"
        )


def _tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def save_probe_config(
    run_dir: str | os.PathLike, questions: list[ProbeQuestion], args: ProbeArguments
) -> None:
    """Record what a run probes with, so ``mini-lm probe RUN_DIR`` asks the same by default."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    data = {"settings": asdict(args), "questions": [asdict(q) for q in questions]}
    Path(run_dir, CONFIG_FILE).write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")


def load_probe_config(run_dir: str | os.PathLike) -> tuple[ProbeArguments, list[ProbeQuestion]] | None:
    path = Path(run_dir, CONFIG_FILE)
    if not path.is_file():
        return None
    data = _parse_json(path.read_text(encoding="utf-8"), str(path))
    return ProbeArguments(**data["settings"]), [ProbeQuestion(**q) for q in data["questions"]]


# --------------------------------------------------------------------------- decoding


# --------------------------------------------------------------------------- language


def for_language(questions: list[ProbeQuestion], language: str) -> list[ProbeQuestion]:
    """The questions of one language ("zh" / "en"; questions without ``lang`` always stay);
    "mixed" and "all" keep every question."""
    if language not in ("zh", "en"):
        return questions
    return [q for q in questions if q.lang in (None, language)]


def data_language(dataset, tokenizer, rows: int = 64) -> str | None:
    """The language of tokenized training data: ``rows`` rows spread over it, decoded and classified
    by ``metrics.text_language``; None when the dataset has no rows to read."""
    try:
        n = len(dataset)
        sample = [dataset[i] for i in range(0, n, max(1, n // rows))][:rows]
    except (TypeError, NotImplementedError):  # an IterableDataset: its first rows
        sample = [row for _, row in zip(range(rows), dataset)]
    texts = [
        tokenizer.decode(row["input_ids"], skip_special_tokens=True) for row in sample if "input_ids" in row
    ]
    return text_language(texts) if texts else None


def tokenizer_language(tokenizer, tokens: int = 5000) -> str:
    """What a vocabulary can tell (up to ``tokens`` entries spread over it): "en" when under 1% of
    them hold a Chinese character (GPT-2's), else "mixed" (byte-level BPEs of Chinese corpora hold
    many English pieces too, so a vocabulary never proves a run Chinese-only)."""
    size = len(tokenizer)
    pieces = [tokenizer.decode([i]) for i in range(0, size, max(1, size // tokens))]
    chinese = sum(text_language([p]) == "zh" for p in pieces)
    return "mixed" if chinese >= 0.01 * len(pieces) else "en"


def decoding_settings(args: ProbeArguments) -> dict[str, GenerationSettings]:
    """Named decodings from ProbeArguments: greedy and/or sampled (seed 000's defaults)."""
    common = dict(
        max_new_tokens=args.probe_max_new_tokens,
        repetition_penalty=args.probe_repetition_penalty,
        seed=args.probe_seed,
    )
    known = {
        "greedy": lambda: GenerationSettings(do_sample=False, **common),
        "sampled": lambda: GenerationSettings(
            do_sample=True,
            temperature=args.probe_temperature,
            top_k=args.probe_top_k,
            top_p=args.probe_top_p,
            **common,
        ),
    }
    unknown = [d for d in args.probe_decoding if d not in known]
    if unknown or not args.probe_decoding:
        raise ProbeConfigError(
            f"probe_decoding: unknown {unknown or 'empty list'}; choose from {sorted(known)}"
        )
    return {name: known[name]() for name in dict.fromkeys(args.probe_decoding)}


# --------------------------------------------------------------------------- probing


def probe_model(
    model,
    tokenizer,
    questions: list[ProbeQuestion],
    decodings: dict[str, GenerationSettings],
    batch_size: int = 32,
) -> list[dict]:
    """Every question under every decoding -> one record each, with the settings and metrics;
    multiple-choice questions are not generated but scored, once (``choice_records``)."""
    generated = [q for q in questions if q.kind == "generation"]
    prompts = [q.render(tokenizer) for q in generated]
    records = []
    for name, settings in decodings.items() if generated else ():
        results = generate(model, tokenizer, prompts, settings, batch_size=batch_size)
        for question, result in zip(generated, results):
            records.append(
                answer_record(question, name, settings, result.text, result.stopped, len(result.token_ids))
            )
    return records + choice_records(
        model, tokenizer, [q for q in questions if q.kind == "choice"], batch_size
    )


def choice_records(model, tokenizer, questions: list[ProbeQuestion], batch_size: int = 32) -> list[dict]:
    """Multiple-choice questions scored by log-likelihood: one record each (``choice_record``).
    ``batch_size`` counts prompt+choice rows per forward."""
    if not questions:
        return []
    prompts = [q.render(tokenizer) for q in questions]
    scores = score_choices(model, tokenizer, prompts, [q.choices for q in questions], batch_size=batch_size)
    return [choice_record(q, s) for q, s in zip(questions, scores)]


CHOICE_SETTINGS = {"scored": "log-likelihood of each choice", "picked_by": "log-likelihood per character"}


def choice_record(question: ProbeQuestion, scores: list[ChoiceScore]) -> dict:
    """One multiple-choice answer: the choice picked (highest log-likelihood per character, lm-eval's
    acc_norm; ``mc_accuracy_sum``: by the summed log-likelihood, its acc), every choice's
    log-likelihood, and the registry's choice metrics."""
    predicted, predicted_sum = best_choice(scores, "char"), best_choice(scores, "sum")
    scored = Answer(
        question.choices[predicted],
        stopped=False,
        n_tokens=0,
        max_new_tokens=0,
        expected=question.expected,
        choices=question.choices,
        answer_index=question.answer,
        predicted=predicted,
        predicted_sum=predicted_sum,
    )
    return {
        "question_id": question.id,
        "mode": question.mode,
        "question": question.text,
        "group": question.group,
        "expected": question.expected,
        "keywords": None,
        "decoding": CHOICE_DECODING,
        "settings": CHOICE_SETTINGS,
        "answer": question.choices[predicted],
        "choices": question.choices,
        "answer_index": question.answer,
        "choice_logprobs": [s.logprob for s in scores],
        "choice_tokens": [s.n_tokens for s in scores],
        "truncated": any(s.truncated for s in scores),
        **score_answer(scored),
    }


def probe_checkpoint(
    model,
    tokenizer,
    questions: list[ProbeQuestion],
    decodings: dict[str, GenerationSettings],
    step: int,
    log_history: list[dict],
    epoch: float | None = None,
    batch_size: int = 32,
) -> list[dict]:
    """``probe_model`` records tagged with the checkpoint: step, epoch, train/eval loss at that step."""
    context = {
        "step": step,
        "checkpoint": f"checkpoint-{step}",
        "epoch": epoch,
        **losses_at(log_history, step),
    }
    return [{**context, **r} for r in probe_model(model, tokenizer, questions, decodings, batch_size)]


def answer_record(
    question: ProbeQuestion,
    decoding: str,
    settings: GenerationSettings,
    answer: str,
    stopped: bool,
    n_tokens: int,
) -> dict:
    """One probe answer with every registered metric (mini_lm/probe_metrics.py) that applies to it:
    flat, so JSONL / tables / pandas read it directly."""
    scored = Answer(answer, stopped, n_tokens, settings.max_new_tokens, question.expected, question.keywords)
    return {
        "question_id": question.id,
        "mode": question.mode,
        "question": question.text,
        "group": question.group,
        "expected": question.expected,
        "keywords": question.keywords,
        "decoding": decoding,
        "settings": settings.to_dict(),
        "answer": answer,
        **score_answer(scored),
    }


def losses_at(log_history: list[dict], step: int) -> dict[str, float | None]:
    """Latest train loss and eval loss logged at or before ``step`` (what seed 000 prints per sample).

    [{"step": 10, "loss": 3.0}, {"step": 20, "loss": 2.0}, {"step": 20, "eval_loss": 2.5}], 20
    -> {"train_loss": 2.0, "eval_loss": 2.5}
    """
    found: dict[str, float | None] = {"train_loss": None, "eval_loss": None}
    for entry in log_history:
        if entry.get("step", 0) > step:
            continue
        if "loss" in entry:
            found["train_loss"] = entry["loss"]
        if "eval_loss" in entry:
            found["eval_loss"] = entry["eval_loss"]
    return found


# --------------------------------------------------------------------------- storage


def record_key(record: dict) -> tuple:
    return record["step"], record["mode"], record["question_id"], record["decoding"]


def expected_keys(questions: list[ProbeQuestion], decodings, step: int) -> set[tuple]:
    """The record keys a complete probe of checkpoint ``step`` writes."""
    return {
        record_key({"step": step, "mode": q.mode, "question_id": q.id, "decoding": d})
        for q in questions
        for d in (decodings if q.kind == "generation" else [CHOICE_DECODING])
    }


def read_probe_records(path: str | os.PathLike) -> list[dict]:
    """A probes JSONL (run or checkpoint level); lines torn by a crash are skipped and counted."""
    path = Path(path)
    return [record for _, record in read_records(path, skip_bad_lines=True)] if path.is_file() else []


def _write_atomic(path: Path, records: list[dict]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    os.replace(tmp, path)


class ProbeStore:
    """probes.jsonl (run level) and checkpoint-N/probe.jsonl; one entry per (step, question, decoding).

    Appending is the common path (cheap, and a crash leaves at most one torn line, which readers
    skip). ``compact`` rewrites the file atomically: newest entry per key, optional cut-off step.
    """

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / RUN_FILE

    def records(self) -> list[dict]:
        """Entries in file order, the newest one per key."""
        latest = {record_key(r): r for r in read_probe_records(self.path)}
        return list(latest.values())

    def append(self, step: int, records: list[dict], checkpoint_dir: str | os.PathLike | None = None) -> None:
        if checkpoint_dir is not None:
            _write_atomic(Path(checkpoint_dir) / CHECKPOINT_FILE, records)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            if f.tell() and not self._ends_with_newline():
                f.write("\n")  # after a torn last line (crash mid-write), start a fresh line
            f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
            f.flush()
            os.fsync(f.fileno())

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def compact(self, keep_until_step: int | None = None) -> int:
        """Drop duplicates, torn lines, and entries after ``keep_until_step`` (a resumed run restarts
        its timeline there). Returns how many entries were dropped."""
        if not self.path.is_file():
            return 0
        lines = sum(1 for line in self.path.open(encoding="utf-8") if line.strip())
        kept = [r for r in self.records() if keep_until_step is None or r["step"] <= keep_until_step]
        if len(kept) != lines:
            _write_atomic(self.path, kept)
        return lines - len(kept)

    def keys_at(self, step: int) -> set[tuple]:
        return {record_key(r) for r in self.records() if r["step"] == step}
