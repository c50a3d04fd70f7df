"""How mature is an answer? Pure text metrics for the checkpoint probes: repetition and knowledge.

Text is cut into *units*: every Chinese character, every run of letters or digits, every other
non-space symbol, every line break. Units make the metrics independent of the model's tokenizer, so checkpoints of
differently tokenized runs compare, and Chinese is measured per character (as seed 000 reads it).

    answer_metrics("建筑、建筑、建筑、建筑", stopped=False, n_tokens=60, max_new_tokens=60)["repetitive"]  # True
    knowledge_scores("他出生在厦门。", expected="厦门")["contains"]                                 # 1.0
    chance_p_value(9, [0.25] * 10) < SIGNIFICANCE     # 9 of 10 four-way questions right: not luck
    text_language(["王伟出生于厦门。"])                                                            # "zh"
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

# A Han character | a line break | a run of letters/digits (apostrophes inside words: "Xi'an") | any
# other symbol. Line breaks count so that an answer of 20 empty lines reads as the loop it is.
_HAN_CLASS = r"[\u3400-\u9fff\uf900-\ufaff]"
_WORD = rf"(?:(?!{_HAN_CLASS})[^\W_])+"
_UNIT = re.compile(rf"{_HAN_CLASS}|\n|{_WORD}(?:'{_WORD})*|[^\w\s]|_")
_STUTTER = re.compile(r"([^\W\d_])\1\1")  # "frommmmm": a word with a tripled letter is a character loop
_HAN = re.compile(_HAN_CLASS)

# An answer is repetitive (复读机) when a quarter of its 4-grams repeat earlier ones, or when one
# loop (a block repeated back to back) spans 10+ units and either repeats 3+ times or covers half
# the answer. Calibrated on seed 004's answers: "建筑、建筑、…" and "豪放不羁、豪放不羁、…" count,
# "谢谢你，谢谢" and seed 000's step-5000 prose do not.
REPETITIVE_4GRAM_RATE = 0.25
LOOP_MIN_UNITS = 10
LOOP_MIN_REPEATS = 3
LOOP_MIN_FRACTION = 0.5


def text_units(text: str) -> list[str]:
    r"""Split text into comparison units, lower-cased; a word with a letter tripled ("frommmm")
    splits into characters so that the loop inside it shows.

    >>> text_units("王伟 was born in Xi'an, 1987年"), text_units("ok\nfrommm")
    (['王', '伟', 'was', 'born', 'in', "xi'an", ',', '1987', '年'], ['ok', '\n', 'f', 'r', 'o', 'm', 'm', 'm'])
    """
    units = []
    for unit in _UNIT.findall(unicodedata.normalize("NFKC", text).lower()):
        units.extend(unit if len(unit) > 2 and _STUTTER.search(unit) else [unit])
    return units


def ngrams(units: list[str], n: int) -> list[tuple[str, ...]]:
    """Consecutive n-unit tuples.

    >>> ngrams(["a", "b", "c"], 2)
    [('a', 'b'), ('b', 'c')]
    """
    return [tuple(units[i : i + n]) for i in range(len(units) - n + 1)]


def distinct_n(units: list[str], n: int) -> float | None:
    """Unique n-grams / all n-grams (Li et al. 2016); None when the text has no n-gram.

    >>> distinct_n(["a", "b", "a", "b"], 1), distinct_n(["a", "b", "a", "b"], 2)
    (0.5, 0.6666666666666666)
    """
    grams = ngrams(units, n)
    return len(set(grams)) / len(grams) if grams else None


def repeated_ngram_rate(units: list[str], n: int = 4) -> float | None:
    """Share of n-grams that already occurred earlier in the text; None without any n-gram.

    >>> repeated_ngram_rate(list("abcabcabc"), 3)  # abc bca cab, then 4 repeats of those
    0.5714285714285714
    """
    grams = ngrams(units, n)
    return 1 - len(set(grams)) / len(grams) if grams else None


def longest_loop(units: list[str]) -> tuple[int, int]:
    """The longest span made of one block repeated back to back (at least twice):
    (units covered, block length); (0, 0) when nothing repeats.

    >>> longest_loop(list("xx建筑、建筑、建筑、y"))  # "建筑、" three times beats "xx"
    (9, 3)
    """
    best = (0, 0)
    n = len(units)
    for period in range(1, n // 2 + 1):
        run = 0  # consecutive i with units[i] == units[i + period]
        for i in range(n - period):
            run = run + 1 if units[i] == units[i + period] else 0
            covered = run + period
            # A full second copy exists once run >= period; keep whole blocks only.
            if run >= period and covered - covered % period > best[0]:
                best = (covered - covered % period, period)
    return best


def answer_metrics(text: str, stopped: bool, n_tokens: int, max_new_tokens: int) -> dict:
    """Repetition and length metrics of one generated answer (the continuation only).

    ``stopped``: the model emitted a stop token (EOS / <|im_end|>); ``n_tokens``: new tokens.

    >>> m = answer_metrics("他出生在厦门。", stopped=True, n_tokens=8, max_new_tokens=60)
    >>> m["distinct_1"], m["repetitive"], m["eos"], m["hit_max_new_tokens"]
    (1.0, False, True, False)
    """
    units = text_units(text)
    loop_units, loop_period = longest_loop(units)
    loop_repeats = loop_units // loop_period if loop_period else 0
    loop_fraction = loop_units / len(units) if units else 0.0
    rep4 = repeated_ngram_rate(units, 4)
    looping = loop_units >= LOOP_MIN_UNITS and (
        loop_repeats >= LOOP_MIN_REPEATS or loop_fraction >= LOOP_MIN_FRACTION
    )
    return {
        "length_tokens": n_tokens,
        "length_units": len(units),
        "distinct_1": distinct_n(units, 1),
        "distinct_2": distinct_n(units, 2),
        "repeated_4gram_rate": rep4,
        "longest_loop_units": loop_units,
        "longest_loop_repeats": loop_repeats,
        "loop_fraction": loop_fraction,
        "repetitive": looping or (rep4 or 0.0) >= REPETITIVE_4GRAM_RATE,
        "eos": stopped,
        "hit_max_new_tokens": not stopped and n_tokens >= max_new_tokens,
    }


def normalize_answer(text: str) -> str:
    """Lower-case, NFKC, punctuation and spaces removed: what "the same answer" compares.

    >>> normalize_answer(" Xi'an, China。")
    'xianchina'
    """
    text = unicodedata.normalize("NFKC", text).lower()
    return "".join(ch for ch in text if ch.isalnum())


def default_keywords(expected: str) -> list[str]:
    """Keywords of an expected answer when none are given: its word and number units, each run of
    Chinese characters as one keyword; lone characters such as 年 only when nothing else is left.

    >>> default_keywords("March 5, 1987"), default_keywords("1987年3月5日"), default_keywords("北京大学")
    (['march', '5', '1987'], ['1987', '3', '5'], ['北京大学'])
    """
    words: list[str] = []
    previous_han = False
    for unit in text_units(expected):
        han = bool(_HAN.fullmatch(unit))
        if han and previous_han:
            words[-1] += unit
        elif unit.isalnum():
            words.append(unit)
        previous_han = han
    longer = [w for w in words if not (len(w) == 1 and _HAN.fullmatch(w))]
    return longer or words


def _contains_units(haystack: list[str], needle: list[str]) -> bool:
    k = len(needle)
    return k > 0 and any(haystack[i : i + k] == needle for i in range(len(haystack) - k + 1))


def knowledge_scores(answer: str, expected: str | None = None, keywords: Iterable[str] | None = None) -> dict:
    """Does the answer state the expected fact?

    exact: the whole answer equals the expected one (normalized); contains: the expected answer
    appears in it; keyword_recall: share of keywords (default: ``default_keywords(expected)``)
    found as whole units ("3" does not match inside "1993").

    >>> knowledge_scores("她1987年3月6日出生。", expected="1987年3月5日")
    {'exact': 0.0, 'contains': 0.0, 'keyword_recall': 0.6666666666666666}
    """
    if expected is None and not keywords:
        raise ValueError("knowledge_scores needs an expected answer or keywords")
    norm = normalize_answer(answer)
    scores: dict[str, float] = {}
    if expected is not None:
        target = normalize_answer(expected)
        scores["exact"] = float(norm == target)
        scores["contains"] = float(bool(target) and target in norm)
    words = list(keywords) if keywords else default_keywords(expected or "")
    units = text_units(answer)
    found = [_contains_units(units, text_units(word)) for word in words]
    scores["keyword_recall"] = sum(found) / len(found) if found else 0.0
    return scores


def mean(values: Iterable[float | bool | None]) -> float | None:
    """Mean of the values that are not None; None when there are none.

    >>> mean([1.0, None, 0.0, True])
    0.6666666666666666
    """
    present = [float(v) for v in values if v is not None]
    return sum(present) / len(present) if present else None


# --------------------------------------------------------------------------- chance

SIGNIFICANCE = 0.05  # multiple-choice accuracy "beats chance" when its p-value is below this


def chance_p_value(correct: int, chances: Sequence[float]) -> float:
    """One-sided exact p-value: the probability of getting at least ``correct`` questions right by
    guessing, question i being right by chance with probability ``chances[i]`` (1 / its number of
    choices). That is the upper tail of a Poisson-binomial distribution, a plain binomial when every
    question has as many choices; questions with equal chances are summed as one binomial (log
    space, so thousands of questions neither overflow nor underflow) and the groups convolved.

    >>> round(chance_p_value(3, [0.25] * 4), 4), chance_p_value(0, [0.5, 0.25])  # 4 x .25^3 x .75 + .25^4
    (0.0508, 1.0)
    """
    if not 0 <= correct <= len(chances):
        raise ValueError(f"correct must be in 0..{len(chances)}, got {correct}")
    if not all(0 < p < 1 for p in chances):
        raise ValueError("every chance level must be in (0, 1): a question needs 2+ choices")
    pmf = np.ones(1)
    for p, n in Counter(chances).items():
        k = np.arange(n + 1)
        log_pmf = (
            math.lgamma(n + 1)
            - np.array([math.lgamma(j + 1) + math.lgamma(n - j + 1) for j in k])
            + k * math.log(p)
            + (n - k) * math.log1p(-p)
        )
        pmf = np.convolve(pmf, np.exp(log_pmf))
    return float(min(1.0, pmf[correct:].sum()))


# --------------------------------------------------------------------------- language

# A text is Chinese ("zh") when at least this share of its units (a Han character, or a word of
# another script) are Han characters, not Chinese ("en") at or below NOT_CHINESE; in between "mixed".
CHINESE_AT_LEAST = 0.8
NOT_CHINESE_AT_MOST = 0.2


def text_language(texts: Iterable[str]) -> str:
    """ "zh", "en" or "mixed" (also for no text at all): the share of Han characters among the units
    that are a Han character or a word. Units, not characters, so one Chinese character weighs as
    much as one English word (both carry about one word's meaning).

    >>> text_language(["王伟出生于厦门。"]), text_language(["Wei Wang was born in Xiamen (厦门) in 1987 and studied law."])
    ('zh', 'en')
    """
    han = words = 0
    for text in texts:
        for unit in _UNIT.findall(text):
            if _HAN.fullmatch(unit):
                han += 1
            elif unit[0].isalpha():
                words += 1
    if not han + words:
        return "mixed"
    share = han / (han + words)
    return "zh" if share >= CHINESE_AT_LEAST else "en" if share <= NOT_CHINESE_AT_MOST else "mixed"
