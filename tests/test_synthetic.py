import json

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
