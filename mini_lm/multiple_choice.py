"""Multiple-choice questions: which choice is right, and the CMMLU benchmark's CSV files.

A multiple-choice record (a probe question, a line of a benchmark JSONL) names its choices and the
right one, as the exact choice text, a 0-based index or a letter:

    resolve_answer("北京", ["成都", "北京", "厦门"], where)  # 1; so are resolve_answer(1, ...) and ("B", ...)

CMMLU (haonan-li/CMMLU, ``DIR/{dev,test}/<subject>.csv``, header ``,Question,A,B,C,D,Answer``)
becomes ``MCItem``s whose prompts are lm-evaluation-harness's ``cmmlu`` task's, character for
character: the subject's description, ``shots`` solved questions from dev (the first ones, lm-eval's
``first_n`` sampler), then the question with its four options and "答案：". The choices scored are
the letters after a space (" A", as lm-eval's target delimiter puts it):

    items = cmmlu_items("../shared/data/eval/cmmlu", subjects=["agronomy"], shots=5, limit=20)
    items[0].prompt[-40:], items[0].choices, items[0].answer   # (... "答案： ", ["A", "B", "C", "D"], 2)

Bad files stop with one line naming the file, the row and what is wrong (``BenchmarkDataError``).
"""

from __future__ import annotations

import csv
import os
import string
from dataclasses import dataclass
from pathlib import Path

BENCHMARKS = ("cmmlu", "mc")  # CMMLU's CSV folder; a multiple-choice JSONL / YAML (mini_lm/evaluation.py)


class BenchmarkDataError(ValueError):
    """A benchmark file or multiple-choice record that cannot be used as written."""


def check_choices(choices, where: str) -> list[str]:
    """The choices of a record: two or more distinct non-empty strings."""
    if (
        not isinstance(choices, list)
        or len(choices) < 2
        or not all(isinstance(c, str) and c.strip() for c in choices)
    ):
        raise BenchmarkDataError(f"{where}: 'choices' must be a list of 2 or more non-empty strings")
    if len(set(choices)) != len(choices):
        raise BenchmarkDataError(f"{where}: 'choices' repeat a choice: {choices}")
    return choices


def resolve_answer(answer, choices: list[str], where: str) -> int:
    """The index of the right choice. ``answer`` is the choice's exact text (which wins when a choice
    is itself a letter), a 0-based index, or a letter A..Z (A: the first choice)."""
    letters = string.ascii_uppercase[: len(choices)]
    if isinstance(answer, str):
        if answer in choices:
            return choices.index(answer)
        if len(answer) == 1 and answer in letters:
            return letters.index(answer)
    elif isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(choices):
        return answer
    raise BenchmarkDataError(
        f"{where}: 'answer' {answer!r} is none of the choices, nor an index 0..{len(choices) - 1}, "
        f"nor a letter {letters[0]}..{letters[-1]}"
    )


@dataclass(frozen=True)
class MCItem:
    """One benchmark question, ready to score: ``prompt`` + each of ``choices``."""

    id: str  # "agronomy/12": subject / row
    subject: str
    question: str  # as shown (CMMLU's Question column)
    prompt: str  # what the model reads before a choice: description, shots, the question
    choices: tuple[str, ...]  # the continuations compared
    answer: int  # index of the right one


# --------------------------------------------------------------------------- CMMLU

CMMLU_HEADER = ["", "Question", "A", "B", "C", "D", "Answer"]
CMMLU_LETTERS = ("A", "B", "C", "D")
MAX_SHOTS = 5  # CMMLU's dev split holds five questions per subject

# The Chinese subject names of CMMLU's prompts ("以下是关于农学的单项选择题…").
CMMLU_SUBJECTS = {
    "agronomy": "农学",
    "anatomy": "解剖学",
    "ancient_chinese": "古汉语",
    "arts": "艺术学",
    "astronomy": "天文学",
    "business_ethics": "商业伦理",
    "chinese_civil_service_exam": "中国公务员考试",
    "chinese_driving_rule": "中国驾驶规则",
    "chinese_food_culture": "中国饮食文化",
    "chinese_foreign_policy": "中国外交政策",
    "chinese_history": "中国历史",
    "chinese_literature": "中国文学",
    "chinese_teacher_qualification": "中国教师资格",
    "clinical_knowledge": "临床知识",
    "college_actuarial_science": "大学精算学",
    "college_education": "大学教育学",
    "college_engineering_hydrology": "大学工程水文学",
    "college_law": "大学法律",
    "college_mathematics": "大学数学",
    "college_medical_statistics": "大学医学统计",
    "college_medicine": "大学医学",
    "computer_science": "计算机科学",
    "computer_security": "计算机安全",
    "conceptual_physics": "概念物理学",
    "construction_project_management": "建设工程管理",
    "economics": "经济学",
    "education": "教育学",
    "electrical_engineering": "电气工程",
    "elementary_chinese": "小学语文",
    "elementary_commonsense": "小学常识",
    "elementary_information_and_technology": "小学信息技术",
    "elementary_mathematics": "初等数学",
    "ethnology": "民族学",
    "food_science": "食品科学",
    "genetics": "遗传学",
    "global_facts": "全球事实",
    "high_school_biology": "高中生物",
    "high_school_chemistry": "高中化学",
    "high_school_geography": "高中地理",
    "high_school_mathematics": "高中数学",
    "high_school_physics": "高中物理学",
    "high_school_politics": "高中政治",
    "human_sexuality": "人类性行为",
    "international_law": "国际法学",
    "journalism": "新闻学",
    "jurisprudence": "法理学",
    "legal_and_moral_basis": "法律与道德基础",
    "logical": "逻辑学",
    "machine_learning": "机器学习",
    "management": "管理学",
    "marketing": "市场营销",
    "marxist_theory": "马克思主义理论",
    "modern_chinese": "现代汉语",
    "nutrition": "营养学",
    "philosophy": "哲学",
    "professional_accounting": "专业会计",
    "professional_law": "专业法学",
    "professional_medicine": "专业医学",
    "professional_psychology": "专业心理学",
    "public_relations": "公共关系",
    "security_study": "安全研究",
    "sociology": "社会学",
    "sports_science": "体育学",
    "traditional_chinese_medicine": "中医中药",
    "virology": "病毒学",
    "world_history": "世界历史",
    "world_religions": "世界宗教",
}


@dataclass(frozen=True)
class CMMLURow:
    where: str  # "test/agronomy.csv: row 3 (line 4)"
    number: int  # 0-based data row
    question: str
    options: tuple[str, str, str, str]
    answer: int


def read_cmmlu_csv(path: str | os.PathLike) -> list[CMMLURow]:
    """The rows of one CMMLU CSV file, checked: header, seven columns, an answer letter A..D."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header != CMMLU_HEADER:
                raise BenchmarkDataError(
                    f"{path}: header {header}, expected {','.join(CMMLU_HEADER)} (CMMLU's CSV layout)"
                )
            rows, row = [], 0
            for row, cells in enumerate(reader, start=1):
                rows.append(_cmmlu_row(cells, f"{path}: row {row} (line {reader.line_num})", row - 1))
    except UnicodeDecodeError as err:
        raise BenchmarkDataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    if not rows:
        raise BenchmarkDataError(f"{path}: no questions below the header")
    return rows


def _cmmlu_row(cells: list[str], where: str, number: int) -> CMMLURow:
    if len(cells) != len(CMMLU_HEADER):
        raise BenchmarkDataError(
            f"{where}: {len(cells)} columns, expected {len(CMMLU_HEADER)} ({','.join(CMMLU_HEADER)}); "
            "a comma inside a field needs the field in double quotes"
        )
    _, question, *options, answer = cells
    if not question.strip():
        raise BenchmarkDataError(f"{where}: the Question column is empty")
    if answer.strip() not in CMMLU_LETTERS:
        found = f"{answer!r} is not" if answer.strip() else "is missing, expected"
        raise BenchmarkDataError(f"{where}: the Answer {found} one of {', '.join(CMMLU_LETTERS)}")
    return CMMLURow(where, number, question, tuple(options), CMMLU_LETTERS.index(answer.strip()))


def cmmlu_subjects(data_dir: str | os.PathLike, split: str = "test") -> list[str]:
    """Subjects with a ``split`` file in a CMMLU folder, sorted."""
    folder = Path(data_dir) / split
    found = sorted(p.stem for p in folder.glob("*.csv")) if folder.is_dir() else []
    if not found:
        raise BenchmarkDataError(
            f"{folder}: no CMMLU {split} files (*.csv); --data names the folder holding dev/ and test/"
        )
    return found


def cmmlu_question(row: CMMLURow) -> str:
    """lm-eval's cmmlu doc_to_text: the question, its options A..D, then "答案："."""
    options = "".join(f"\n{letter}. {text}" for letter, text in zip(CMMLU_LETTERS, row.options))
    return f"{row.question.strip()}{options}\n答案："


def cmmlu_description(subject: str) -> str:
    return f"以下是关于{CMMLU_SUBJECTS.get(subject, subject)}的单项选择题，请直接给出正确答案的选项。\n\n"


def cmmlu_items(
    data_dir: str | os.PathLike,
    subjects: list[str] | None = None,
    shots: int = 0,
    limit: int | None = None,
    split: str = "test",
) -> list[MCItem]:
    """CMMLU questions of ``subjects`` (default: every subject of ``split``), the first ``limit`` of
    each, with ``shots`` solved dev questions before each (0..5)."""
    if not 0 <= shots <= MAX_SHOTS:
        raise BenchmarkDataError(f"shots must be in 0..{MAX_SHOTS} (CMMLU's dev questions), got {shots}")
    if limit is not None and limit < 1:
        raise BenchmarkDataError(f"limit must be >= 1 question per subject, got {limit}")
    available = cmmlu_subjects(data_dir, split)
    unknown = [s for s in subjects or [] if s not in available]
    if unknown:
        raise BenchmarkDataError(
            f"{Path(data_dir) / split}: no subject(s) {unknown}; available: {', '.join(available)}"
        )
    items = []
    for subject in subjects or available:
        rows = read_cmmlu_csv(Path(data_dir) / split / f"{subject}.csv")[:limit]
        context = cmmlu_description(subject) + _shots(Path(data_dir), subject, shots)
        items += [
            MCItem(
                id=f"{subject}/{row.number}",
                subject=subject,
                question=row.question,
                # the trailing space is lm-eval's target delimiter: the scorer moves it into the
                # continuation, so " A" is scored after "答案：" exactly as lm-eval scores it
                prompt=context + cmmlu_question(row) + " ",
                choices=CMMLU_LETTERS,
                answer=row.answer,
            )
            for row in rows
        ]
    return items


def _shots(data_dir: Path, subject: str, shots: int) -> str:
    """The first ``shots`` dev questions, solved, each followed by a blank line (lm-eval's few-shot
    delimiter)."""
    if not shots:
        return ""
    path = data_dir / "dev" / f"{subject}.csv"
    if not path.is_file():
        raise BenchmarkDataError(f"{path}: not found; {shots}-shot prompts need the subject's dev file")
    rows = read_cmmlu_csv(path)
    if len(rows) < shots:
        raise BenchmarkDataError(f"{path}: {len(rows)} questions, fewer than the {shots} shots asked for")
    return "".join(f"{cmmlu_question(row)} {CMMLU_LETTERS[row.answer]}\n\n" for row in rows[:shots])
