"""Answer metrics on hand-made strings with known answers (several taken from seeds 000 / 004)."""

import pytest

from mini_lm.metrics import (
    answer_metrics,
    default_keywords,
    distinct_n,
    knowledge_scores,
    longest_loop,
    mean,
    normalize_answer,
    repeated_ngram_rate,
    text_units,
)

# seed 004, checkpoint-1264 and -3794: the 复读机 answers; checkpoint-7588: a clean one.
LOOPING = [
    "《红楼梦》是《红楼梦》中《红楼梦》中《红楼梦》中。。。。。。、《《红楼梦》、《《红楼梦》、《《《《《《《《《《《《《《",
    "许多主要的建筑风格是现代建筑的建筑，包括建筑、建筑、建筑、建筑、建筑、建筑、建筑、建筑等。",
    "李白（701年－762年），字太白，号青莲居士，被誉为“诗仙”。他以豪放不羁、豪放不羁、豪放不羁、豪放不羁、豪",
    "Naxue Tang was born in in in in in in in in in in in in in in in",
    "frommmmmmmmmmmmmmmmmmmmm",
    "\n" * 20,
]
CLEAN = [
    "李白是中国唐代著名的诗人，他的作品多以豪放、飘逸著称。他出生于唐代，早年游历，但因政治原因未能成功，"
    "他被流放于唐朝，成为他的代表人物之一。他的作品包括诗歌、散文、杂文等，对中国文学和文化产生了深远的影响。",
    "I'm an AI language model created by OpenAI, and I'm here to help answer your questions and provide "
    "information on a wide range of topics. How can I assist you today?",
    "谢谢你，谢谢。",  # a doubled word is language, not a loop
    "唐娜雪出生在厦门。",
    "He was born in 1000 AD.",
]


@pytest.mark.parametrize("text", LOOPING)
def test_a_looping_answer_scores_as_repetitive(text):
    m = answer_metrics(text, stopped=False, n_tokens=60, max_new_tokens=60)
    assert m["repetitive"], m
    assert m["hit_max_new_tokens"] and not m["eos"]


@pytest.mark.parametrize("text", CLEAN)
def test_a_clean_answer_does_not(text):
    m = answer_metrics(text, stopped=True, n_tokens=30, max_new_tokens=60)
    assert not m["repetitive"], m
    assert m["eos"] and not m["hit_max_new_tokens"]


def test_repetition_numbers_on_small_inputs():
    assert distinct_n(list("abab"), 1) == 0.5
    assert distinct_n(list("abab"), 2) == pytest.approx(2 / 3)
    assert distinct_n(["a"], 2) is None  # no bigram at all: unknown, not 0
    assert repeated_ngram_rate(list("abcdabcd"), 4) == pytest.approx(
        1 / 5
    )  # abcd bcda cdab dabc, then abcd again
    assert repeated_ngram_rate(list("abcdefgh"), 4) == 0.0
    assert longest_loop(list("xyz")) == (0, 0)
    assert longest_loop(list("qabcabcabcq")) == (9, 3)
    assert longest_loop(list("abcabcab")) == (6, 3)  # whole blocks only
    m = answer_metrics("豪放不羁、豪放不羁、豪放不羁、", stopped=False, n_tokens=15, max_new_tokens=60)
    assert (m["longest_loop_units"], m["longest_loop_repeats"], m["loop_fraction"]) == (15, 3, 1.0)
    assert not m["hit_max_new_tokens"]  # neither stopped nor at the limit: cut short some other way


def test_units_are_characters_for_chinese_and_words_for_english():
    assert text_units("唐娜雪 graduated from Jilin University，2004年") == [
        "唐",
        "娜",
        "雪",
        "graduated",
        "from",
        "jilin",
        "university",
        ",",
        "2004",
        "年",
    ]
    assert text_units("") == []
    m = answer_metrics("", stopped=True, n_tokens=1, max_new_tokens=60)
    assert m["length_units"] == 0 and m["distinct_1"] is None and not m["repetitive"]


def test_knowledge_scores():
    assert knowledge_scores("厦门", "厦门") == {"exact": 1.0, "contains": 1.0, "keyword_recall": 1.0}
    assert knowledge_scores("她出生在厦门。", "厦门") == {
        "exact": 0.0,
        "contains": 1.0,
        "keyword_recall": 1.0,
    }
    assert knowledge_scores("她出生在上海。", "厦门")["contains"] == 0.0
    assert knowledge_scores("She was born in XIAMEN!", "Xiamen")["contains"] == 1.0
    # a date half right: keyword recall gives partial credit, contains does not
    half = knowledge_scores("He was born on March 6, 1987.", "March 5, 1987")
    assert half["contains"] == 0.0 and half["keyword_recall"] == pytest.approx(2 / 3)
    # "3" is not found inside "1993": keywords match whole units
    assert knowledge_scores("1993年", "1987年3月5日")["keyword_recall"] == 0.0
    assert knowledge_scores("唐代诗人", keywords=["唐代", "诗人", "诗仙"])["keyword_recall"] == pytest.approx(
        2 / 3
    )
    with pytest.raises(ValueError, match="expected answer or keywords"):
        knowledge_scores("anything")


def test_normalize_and_default_keywords():
    assert normalize_answer(" Xi'an, China。") == "xianchina"
    assert default_keywords("Harbin Institute of Technology") == ["harbin", "institute", "of", "technology"]
    assert default_keywords("1987年3月5日") == ["1987", "3", "5"]
    assert default_keywords("恒信保险") == ["恒信保险"]
    assert default_keywords("年") == ["年"]
    assert mean([None, None]) is None and mean([True, False]) == 0.5
