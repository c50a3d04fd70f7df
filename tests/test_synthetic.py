import json
import re

import pytest

from mini_lm.data.synthetic import ATTRIBUTES, generate_world, write_biography, write_world


def read(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def test_same_seed_same_world(tmp_path):
    a = write_world(tmp_path / "a", seed=3, n_people=30)
    b = write_world(tmp_path / "b", seed=3, n_people=30)
    c = write_world(tmp_path / "c", seed=4, n_people=30)
    for name in a:
        assert a[name].read_bytes() == b[name].read_bytes(), name
    assert a["bios"].read_bytes() != c["bios"].read_bytes()


def test_names_unique_and_split():
    world = generate_world(seed=0, n_people=300, heldout_fraction=0.5)
    assert len({p.name_zh for p in world.people}) == 300 and len({p.name_en for p in world.people}) == 300
    assert sum(p.split == "heldout" for p in world.people) == 150


def test_biographies_state_every_fact():
    import random

    person = generate_world(seed=1, n_people=5).people[2]
    rng = random.Random(0)
    for lang in ("zh", "en"):
        bios = {write_biography(person, lang, rng) for _ in range(6)}
        assert len(bios) > 1  # phrasing/order vary
        for bio in bios:
            assert person.name(lang) in bio
            for attr in ATTRIBUTES:
                assert person.facts(lang)[attr] in bio, (attr, bio)


def test_qa_and_completion_files(tmp_path):
    paths = write_world(tmp_path, seed=0, n_people=20, bios_per_person=2)
    people = {p["id"]: p for p in read(paths["people"])}
    assert len(read(paths["bios"])) == 20 * 2 * 2
    sft, heldout = read(paths["qa_sft"]), read(paths["qa_heldout"])
    assert {r["person_id"] for r in sft}.isdisjoint({r["person_id"] for r in heldout})
    for record in sft + heldout:
        user, assistant = record["messages"]
        assert user["role"] == "user" and assistant["role"] == "assistant"
        person = people[record["person_id"]]
        assert record["expected"] == person["facts"][record["lang"]][record["attribute"]]
        assert record["expected"] in assistant["content"]
    for record in read(paths["completions"]):
        assert record["prompt"].startswith(people[record["person_id"]]["name_" + record["lang"]])


def test_augmented_and_mixed_worlds_are_deterministic(tmp_path):
    options = dict(seed=3, n_people=30, bios_per_person=3, fullname=True, mix_qa=True)
    a, b = write_world(tmp_path / "a", **options), write_world(tmp_path / "b", **options)
    for name in a:
        assert a[name].read_bytes() == b[name].read_bytes(), name
    plain = write_world(tmp_path / "plain", seed=3, n_people=30, bios_per_person=3)
    assert a["bios"].read_bytes() != plain["bios"].read_bytes()
    for name in (
        "qa_sft",
        "qa_heldout",
        "completions",
        "mc_questions",
        "people",
    ):  # augmentation is pretraining only
        assert a[name].read_bytes() == plain[name].read_bytes(), name


def test_fullname_names_the_person_in_every_sentence():
    import random

    world = generate_world(seed=1, n_people=20)
    for lang, end in (("zh", "。"), ("en", ". ")):
        rng = random.Random(0)
        counts = {
            fullname: [write_biography(p, lang, rng, fullname).count(p.name(lang)) for p in world.people]
            for fullname in (False, True)
        }
        assert counts[True] == [len(ATTRIBUTES)] * len(world.people)  # one sentence per fact, each named
        assert min(counts[False]) >= 1 and sum(counts[False]) < len(ATTRIBUTES) * len(world.people)
        for p in world.people:
            bio = write_biography(p, lang, rng, fullname=True)
            assert all(p.facts(lang)[attr] in bio for attr in ATTRIBUTES)
            assert len([s for s in bio.split(end) if s]) == len(ATTRIBUTES)


def test_mixed_pretraining_holds_only_the_sft_half_qa(tmp_path):
    mixed = write_world(tmp_path / "mixed", seed=0, n_people=20, bios_per_person=2, mix_qa=True)
    plain = write_world(tmp_path / "plain", seed=0, n_people=20, bios_per_person=2)
    split = {p["id"]: p["split"] for p in read(mixed["people"])}
    texts, bios = read(mixed["pretrain"]), read(mixed["bios"])
    qa = [t for t in texts if t["kind"] == "qa"]
    assert len(qa) == len(read(mixed["qa_sft"])) and len(texts) == len(bios) + len(qa)
    assert {split[t["person_id"]] for t in qa} == {"sft"}  # held-out Q/A never reaches training
    answers = {r["messages"][1]["content"] for r in read(mixed["qa_sft"])}
    assert all(
        t["text"].split("\n")[1].split("：" if t["lang"] == "zh" else ": ", 1)[1] in answers for t in qa
    )
    assert [t["text"] for t in texts if t["kind"] == "bio"] != [b["text"] for b in bios]  # shuffled among Q/A
    assert sorted(t["text"] for t in texts if t["kind"] == "bio") == sorted(b["text"] for b in bios)
    assert [t["text"] for t in read(plain["pretrain"])] == [b["text"] for b in read(plain["bios"])]


def test_multiple_choice_distractors(tmp_path):
    paths = write_world(tmp_path, seed=0, n_people=20, n_choices=4)
    people = read(paths["people"])
    questions = read(paths["mc_questions"])
    assert len(questions) == 20 * len(ATTRIBUTES) * 2 * 2  # every fact, zh + en, raw + chat
    positions = set()
    for q in questions:
        person = people[q["person_id"]]
        value = person["facts"][q["lang"]][q["attribute"]]
        others = {p["facts"][q["lang"]][q["attribute"]] for p in people if p["id"] != person["id"]}
        assert q["group"] == person["split"] and len(q["choices"]) == 4 == len(set(q["choices"]))
        assert q["choices"].count(q["answer"]) == 1
        positions.add(q["choices"].index(q["answer"]))
        if "prompt" in q:
            assert q["answer"] == value and set(q["choices"]) - {value} <= others - {value}
            assert q["prompt"].endswith(" ") == (q["lang"] == "en")  # the space goes with the value
        else:
            assert value in q["answer"] and all(person["name_" + q["lang"]] in c for c in q["choices"])
    assert positions == {0, 1, 2, 3}
    # the same options, in the same order, in both languages and both modes
    by_fact = {}
    for q in questions:
        key = (q["person_id"], q["attribute"])
        by_fact.setdefault(key, set()).add(q["choices"].index(q["answer"]))
    assert all(len(index) == 1 for index in by_fact.values())


def test_tiny_world_still_has_distinct_choices():
    from mini_lm.data.synthetic import multiple_choice_questions

    world = generate_world(seed=0, n_people=2)
    for q in multiple_choice_questions(world, n_choices=5):
        assert len(set(q["choices"])) == 5 and q["choices"].count(q["answer"]) == 1
    with pytest.raises(ValueError, match="n_choices"):
        multiple_choice_questions(world, n_choices=1)


def test_probe_file_keeps_generation_questions_and_adds_multiple_choice(tmp_path):
    import yaml

    from mini_lm.probing import load_questions

    paths = write_world(tmp_path, seed=0, n_people=20)
    data = yaml.safe_load(paths["probe_questions"].read_text(encoding="utf-8"))
    kinds = [q.kind for q in load_questions(paths["probe_questions"])]  # the loader reads both lists
    assert kinds.count("generation") == len(data["questions"]) == 48 and kinds.count("choice") == 48
    mc = data["multiple_choice"]
    assert len(mc) == 48 and {q["group"] for q in mc} == {"sft", "heldout"}
    for q in mc:
        assert set(q) == {"id", "choices", "answer", "group"} | (
            {"prompt"} if "prompt" in q else {"question"}
        )
        assert q["answer"] in q["choices"]
    all_mc = {q["id"] + ("/raw" if "prompt" in q else "/chat"): q for q in read(paths["mc_questions"])}
    for q in mc:
        full = all_mc[q["id"] + ("/raw" if "prompt" in q else "/chat")]
        assert {k: full[k] for k in q} == q


def test_synth_world_command_flags(tmp_path, capsys):
    from mini_lm.cli import main

    out = tmp_path / "w"
    assert (
        main(["synth-world", "--out", str(out), "--people", "10", "--fullname", "--mix-qa", "--choices", "3"])
        == 0
    )
    assert "48 + 48 multiple-choice" in capsys.readouterr().out
    assert len(read(out / "mc_questions.jsonl")[0]["choices"]) == 3
    assert {t["kind"] for t in read(out / "pretrain.jsonl")} == {"bio", "qa"}
    assert main(["synth-world", "--out", str(out), "--bios-per-person", "0"]) == 2


def test_distractors_are_as_common_as_answers():
    """Distractors drawn per person, not per distinct value: knowing which values are common does not
    tell the answer (uniform over distinct values made distractors ~10% rarer than answers here)."""
    from collections import Counter

    from mini_lm.data.synthetic import CATALOGUES, fact_value, multiple_choice_questions

    world = generate_world(seed=0, n_people=200)
    popularity = {a: Counter(fact_value(a, getattr(p, a), "en") for p in world.people) for a in CATALOGUES}
    answers, distractors = [], []
    for q in multiple_choice_questions(world, langs=("en",)):
        if "prompt" in q and q["attribute"] in CATALOGUES:
            count = popularity[q["attribute"]]
            answers.append(count[q["answer"]])
            distractors += [count[c] for c in q["choices"] if c != q["answer"]]
    mean_answer, mean_distractor = sum(answers) / len(answers), sum(distractors) / len(distractors)
    assert abs(mean_answer - mean_distractor) / mean_answer < 0.05


def sentences(bio: str) -> list[str]:
    return [s for s in re.split(r"(?<=[。.])[ \n]?", bio) if s]


def test_varied_templates_add_phrasings_with_the_name_mid_sentence_and_line_breaks():
    import random

    from mini_lm.data.synthetic import EXTRA_BIO_TEMPLATES

    world = generate_world(seed=2, n_people=30)
    for lang in ("zh", "en"):
        rng = random.Random(0)
        bios = [write_biography(p, lang, rng, fullname=True, varied_templates=True) for p in world.people]
        plain = [write_biography(p, lang, rng, fullname=True) for p in world.people]
        for p, bio in zip(world.people, bios):
            assert bio.count(p.name(lang)) == len(sentences(bio)) == len(ATTRIBUTES)
            assert all(p.facts(lang)[attr] in bio for attr in ATTRIBUTES)
        mid = [
            s for bio, p in zip(bios, world.people) for s in sentences(bio) if not s.startswith(p.name(lang))
        ]
        assert mid and all(
            s.startswith(p.name(lang)) for bio, p in zip(plain, world.people) for s in sentences(bio)
        )
        first_words = {t.split("{n}")[0] for ts in EXTRA_BIO_TEMPLATES[lang].values() for t in ts}
        assert any(s.startswith(w) for s in mid for w in first_words if w)
        # both token forms of a name: after a space (" Wei", as in questions) and at a line start
        # ("Wei", as an answer starts); the plain paragraph has no line break
        assert all("\n" not in bio for bio in plain) and sum("\n" in bio for bio in bios) > len(bios) // 2
    # with pronouns, a sentence starts with a capital and a pronoun mid-sentence stays lower case
    rng = random.Random(1)
    for p in world.people:
        for sentence in sentences(write_biography(p, "en", rng, varied_templates=True)):
            assert sentence[0].isupper()
            if p.name_en not in sentence:  # a pronoun sentence ("He" is also a surname)
                assert " He " not in sentence and " She " not in sentence, sentence
