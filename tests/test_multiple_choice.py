"""Multiple-choice data: answers given as text / index / letter, CMMLU's CSV files (bad rows named),
lm-eval's cmmlu prompts, the exact test against chance, and the language of a text."""

import itertools
import math
import shutil

import pytest

from mini_lm.metrics import chance_p_value, text_language
from mini_lm.multiple_choice import (
    BenchmarkDataError,
    check_choices,
    cmmlu_items,
    read_cmmlu_csv,
    resolve_answer,
)

HEADER = ",Question,A,B,C,D,Answer\n"


@pytest.mark.parametrize("answer, index", [("北京", 1), (1, 1), ("B", 1), ("A", 0), (0, 0)])
def test_the_answer_is_a_choice_an_index_or_a_letter(answer, index):
    assert resolve_answer(answer, ["成都", "北京", "厦门"], "q") == index


def test_a_choice_that_is_a_letter_wins_over_the_letter_meaning():
    assert resolve_answer("A", ["B", "A"], "q") == 1


@pytest.mark.parametrize("answer", ["上海", 3, -1, "D", True, None, 1.0])
def test_an_answer_that_is_no_choice_names_the_record(answer):
    with pytest.raises(
        BenchmarkDataError,
        match=r"q\.jsonl:4: 'answer' .* is none of the choices, nor an index 0\.\.2, nor a letter A\.\.C",
    ):
        resolve_answer(answer, ["成都", "北京", "厦门"], "q.jsonl:4")


@pytest.mark.parametrize("choices", [["一"], "一二", ["一", ""], ["一", "一"], ["一", 2]])
def test_choices_need_two_distinct_texts(choices):
    with pytest.raises(BenchmarkDataError, match="q: 'choices'"):
        check_choices(choices, "q")


def cmmlu_dir(tmp_path, test_rows: str, dev_rows: str | None = None, subject="agronomy"):
    for split, rows in (("test", test_rows), ("dev", dev_rows)):
        if rows is not None:
            (tmp_path / split).mkdir(exist_ok=True)
            (tmp_path / split / f"{subject}.csv").write_text(HEADER + rows, encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize(
    "rows, message",
    [
        (
            "0,问题一,甲,乙,丙,丁,A\n1,问题二,甲,乙,丙,丁,\n",
            r"agronomy\.csv: row 2 \(line 3\): the Answer is missing, expected one of A, B, C, D",
        ),
        (
            "0,问题一,甲,乙,丙,丁,E\n",
            r"agronomy\.csv: row 1 \(line 2\): the Answer 'E' is not one of A, B, C, D",
        ),
        (
            "0,问题一,甲,乙,丙,A\n",
            r"agronomy\.csv: row 1 \(line 2\): 6 columns, expected 7 \(,Question,A,B,C,D,Answer\)",
        ),
        (
            '0,"问题,一",甲,乙,丙,丁,B\n1,问题,二,甲,乙,丙,丁,B\n',
            r"row 2 \(line 3\): 8 columns, expected 7 .*double quotes",
        ),
        ("0, ,甲,乙,丙,丁,A\n", r"row 1 \(line 2\): the Question column is empty"),
        ("", r"agronomy\.csv: no questions below the header"),
    ],
)
def test_bad_cmmlu_rows_stop_with_the_file_and_row(tmp_path, rows, message):
    data = cmmlu_dir(tmp_path, rows)
    with pytest.raises(BenchmarkDataError, match=message):
        cmmlu_items(data)


def test_a_file_in_another_layout_is_named(tmp_path):
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "x.csv").write_text("question,answer\n1,A\n", encoding="utf-8")
    with pytest.raises(
        BenchmarkDataError,
        match=r"x\.csv: header \['question', 'answer'\], expected ,Question,A,B,C,D,Answer",
    ):
        read_cmmlu_csv(tmp_path / "test" / "x.csv")
    (tmp_path / "test" / "x.csv").write_bytes(HEADER.encode() + "0,问题,甲,乙,丙,丁,A\n".encode("gbk"))
    with pytest.raises(BenchmarkDataError, match=r"x\.csv: not UTF-8 text"):
        read_cmmlu_csv(tmp_path / "test" / "x.csv")


def test_cmmlu_prompts_are_lm_evals_with_shots_from_dev(tmp_path):
    data = cmmlu_dir(tmp_path, " 0,问题一 ,甲,乙,丙,丁,C\n1,问题二,子,丑,寅,卯,A\n", "0,例题,一,二,三,四,D\n")
    zero, one = cmmlu_items(data), cmmlu_items(data, shots=1, limit=1)
    head = "以下是关于农学的单项选择题，请直接给出正确答案的选项。\n\n"
    assert (
        zero[0].prompt == head + "问题一\nA. 甲\nB. 乙\nC. 丙\nD. 丁\n答案： "
    )  # Question.strip(), then " A"
    assert (zero[0].choices, zero[0].answer, zero[1].answer, zero[1].id) == (
        ("A", "B", "C", "D"),
        2,
        0,
        "agronomy/1",
    )
    assert (
        one[0].prompt == head + "例题\nA. 一\nB. 二\nC. 三\nD. 四\n答案： D\n\n" + zero[0].prompt[len(head) :]
    )
    assert len(one) == 1


def test_cmmlu_subjects_shots_and_limits_are_checked(tmp_path, shared_data):
    data = shared_data / "eval" / "cmmlu"
    with pytest.raises(
        BenchmarkDataError, match=r"no subject\(s\) \['agronom'\]; available: agronomy, anatomy"
    ):
        cmmlu_items(data, subjects=["agronom"])
    with pytest.raises(BenchmarkDataError, match=r"shots must be in 0\.\.5"):
        cmmlu_items(data, subjects=["agronomy"], shots=6)
    with pytest.raises(BenchmarkDataError, match=r"cmmlu_copy/test: no CMMLU test files"):
        cmmlu_items(tmp_path / "cmmlu_copy")
    (tmp_path / "cmmlu_copy" / "test").mkdir(parents=True)
    shutil.copy(data / "test" / "agronomy.csv", tmp_path / "cmmlu_copy" / "test")
    with pytest.raises(BenchmarkDataError, match=r"dev/agronomy\.csv: not found; 5-shot prompts need"):
        cmmlu_items(tmp_path / "cmmlu_copy", shots=5)
    items = cmmlu_items(data, subjects=["agronomy", "anatomy"], shots=5, limit=3)
    assert [i.id for i in items] == [f"{s}/{n}" for s in ("agronomy", "anatomy") for n in range(3)]
    assert all(i.prompt.count("答案：") == 6 for i in items)  # five solved, then the question


def brute_force_tail(correct: int, chances: list[float]) -> float:
    """P(at least ``correct`` right) by enumerating every outcome."""
    total = 0.0
    for outcome in itertools.product([0, 1], repeat=len(chances)):
        if sum(outcome) >= correct:
            total += math.prod(p if o else 1 - p for o, p in zip(outcome, chances))
    return total


@pytest.mark.parametrize(
    "correct, chances",
    [
        (3, [0.25] * 4),
        (0, [0.25] * 4),
        (4, [0.25] * 4),
        (5, [0.25, 0.5, 0.2, 0.25, 0.5, 1 / 3, 0.25, 0.5]),
        (2, [0.5, 0.1]),
    ],
)
def test_the_test_against_chance_is_the_exact_poisson_binomial_tail(correct, chances):
    assert chance_p_value(correct, chances) == pytest.approx(brute_force_tail(correct, chances), rel=1e-9)


def test_the_test_against_chance_on_a_benchmark_sized_set():
    # CMMLU's 11,528 test questions: 27% right is luck-compatible? Normal approximation as a cross-check.
    n, p = 11528, 0.25
    z = lambda k: (k - 0.5 - n * p) / math.sqrt(n * p * (1 - p))  # noqa: E731  continuity-corrected
    for k in (2900, 2950, 3000):
        assert chance_p_value(k, [p] * n) == pytest.approx(0.5 * math.erfc(z(k) / math.sqrt(2)), rel=0.05)
    assert chance_p_value(3100, [p] * n) < 1e-5 and chance_p_value(2800, [p] * n) > 0.9
    with pytest.raises(ValueError, match="2\\+ choices"):
        chance_p_value(1, [1.0])


@pytest.mark.parametrize(
    "texts, language",
    [
        (["满纸荒唐言，一把辛酸泪。都云作者痴，谁解其中味？"], "zh"),
        (["First Citizen: Before we proceed any further, hear me speak."], "en"),
        (["王伟出生于厦门。", "Wei Wang was born in Xiamen."], "mixed"),
        (["", "123 !!"], "mixed"),  # nothing to tell: keep every question
        (["他用Python写代码，每天学习机器学习的新方法。"], "zh"),  # a few English words
    ],
)
def test_the_language_of_a_text(texts, language):
    assert text_language(texts) == language
