"""A small synthetic world of fictional people: biographies to pretrain on, Q/A pairs to extract.

The knowledge-storage / knowledge-extraction setting (Allen-Zhu & Li, "Physics of Language
Models 3.1"): each person has six facts; biographies state them in shuffled order with
several phrasings, in Chinese and English; Q/A pairs ask for one fact each. Q/A of the
``sft`` half of the people is for fine-tuning; the ``heldout`` half measures whether the
model learned to *extract* knowledge it only saw in biographies.

Everything is derived from one ``random.Random(seed)``: the same seed gives the same files.

    world = generate_world(seed=0, n_people=2)
    world.people[0].name_zh, world.people[0].facts("en")["birthplace"]   # ('王明华', 'Chengdu')
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path

SURNAMES = [
    ("王", "Wang"),
    ("李", "Li"),
    ("张", "Zhang"),
    ("刘", "Liu"),
    ("陈", "Chen"),
    ("杨", "Yang"),
    ("黄", "Huang"),
    ("赵", "Zhao"),
    ("吴", "Wu"),
    ("周", "Zhou"),
    ("徐", "Xu"),
    ("孙", "Sun"),
    ("马", "Ma"),
    ("朱", "Zhu"),
    ("胡", "Hu"),
    ("郭", "Guo"),
    ("何", "He"),
    ("林", "Lin"),
    ("高", "Gao"),
    ("罗", "Luo"),
    ("郑", "Zheng"),
    ("梁", "Liang"),
    ("谢", "Xie"),
    ("宋", "Song"),
    ("唐", "Tang"),
    ("韩", "Han"),
    ("冯", "Feng"),
    ("邓", "Deng"),
    ("曹", "Cao"),
    ("彭", "Peng"),
]
# (character, pinyin, m / f / n for neutral)
GIVEN = [
    ("伟", "wei", "m"),
    ("强", "qiang", "m"),
    ("军", "jun", "m"),
    ("杰", "jie", "m"),
    ("涛", "tao", "m"),
    ("磊", "lei", "m"),
    ("斌", "bin", "m"),
    ("浩", "hao", "m"),
    ("鹏", "peng", "m"),
    ("刚", "gang", "m"),
    ("勇", "yong", "m"),
    ("峰", "feng", "m"),
    ("建", "jian", "m"),
    ("志", "zhi", "m"),
    ("国", "guo", "m"),
    ("芳", "fang", "f"),
    ("娜", "na", "f"),
    ("敏", "min", "f"),
    ("静", "jing", "f"),
    ("丽", "li", "f"),
    ("艳", "yan", "f"),
    ("霞", "xia", "f"),
    ("婷", "ting", "f"),
    ("雪", "xue", "f"),
    ("琳", "lin", "f"),
    ("玲", "ling", "f"),
    ("颖", "ying", "f"),
    ("慧", "hui", "f"),
    ("萍", "ping", "f"),
    ("燕", "yan", "f"),
    ("明", "ming", "n"),
    ("华", "hua", "n"),
    ("文", "wen", "n"),
    ("佳", "jia", "n"),
    ("欣", "xin", "n"),
    ("晓", "xiao", "n"),
    ("思", "si", "n"),
    ("雨", "yu", "n"),
    ("嘉", "jia", "n"),
    ("子", "zi", "n"),
    ("一", "yi", "n"),
    ("安", "an", "n"),
    ("宁", "ning", "n"),
    ("乐", "le", "n"),
    ("天", "tian", "n"),
]
CITIES = [
    ("北京", "Beijing"),
    ("上海", "Shanghai"),
    ("广州", "Guangzhou"),
    ("深圳", "Shenzhen"),
    ("杭州", "Hangzhou"),
    ("南京", "Nanjing"),
    ("成都", "Chengdu"),
    ("重庆", "Chongqing"),
    ("武汉", "Wuhan"),
    ("西安", "Xi'an"),
    ("天津", "Tianjin"),
    ("苏州", "Suzhou"),
    ("长沙", "Changsha"),
    ("郑州", "Zhengzhou"),
    ("青岛", "Qingdao"),
    ("厦门", "Xiamen"),
    ("昆明", "Kunming"),
    ("大连", "Dalian"),
    ("哈尔滨", "Harbin"),
    ("沈阳", "Shenyang"),
    ("济南", "Jinan"),
    ("合肥", "Hefei"),
    ("福州", "Fuzhou"),
    ("南昌", "Nanchang"),
    ("贵阳", "Guiyang"),
    ("兰州", "Lanzhou"),
    ("拉萨", "Lhasa"),
    ("海口", "Haikou"),
    ("宁波", "Ningbo"),
    ("太原", "Taiyuan"),
]
UNIVERSITIES = [
    ("北京大学", "Peking University"),
    ("清华大学", "Tsinghua University"),
    ("复旦大学", "Fudan University"),
    ("浙江大学", "Zhejiang University"),
    ("南京大学", "Nanjing University"),
    ("武汉大学", "Wuhan University"),
    ("中山大学", "Sun Yat-sen University"),
    ("四川大学", "Sichuan University"),
    ("山东大学", "Shandong University"),
    ("厦门大学", "Xiamen University"),
    ("同济大学", "Tongji University"),
    ("南开大学", "Nankai University"),
    ("吉林大学", "Jilin University"),
    ("西安交通大学", "Xi'an Jiaotong University"),
    ("哈尔滨工业大学", "Harbin Institute of Technology"),
    ("兰州大学", "Lanzhou University"),
]
MAJORS = [
    ("计算机科学", "computer science"),
    ("数学", "mathematics"),
    ("物理学", "physics"),
    ("化学", "chemistry"),
    ("生物学", "biology"),
    ("经济学", "economics"),
    ("法学", "law"),
    ("历史学", "history"),
    ("哲学", "philosophy"),
    ("医学", "medicine"),
    ("建筑学", "architecture"),
    ("机械工程", "mechanical engineering"),
    ("新闻学", "journalism"),
    ("心理学", "psychology"),
    ("音乐", "music"),
    ("土木工程", "civil engineering"),
]
COMPANIES = [
    ("星河科技", "Xinghe Technology"),
    ("云帆网络", "Yunfan Networks"),
    ("青松医药", "Qingsong Pharmaceuticals"),
    ("蓝海物流", "Lanhai Logistics"),
    ("金桥银行", "Jinqiao Bank"),
    ("天工机械", "Tiangong Machinery"),
    ("明德教育", "Mingde Education"),
    ("长风航空", "Changfeng Airlines"),
    ("华彩传媒", "Huacai Media"),
    ("绿野农业", "Lvye Agriculture"),
    ("北辰能源", "Beichen Energy"),
    ("东岳汽车", "Dongyue Motors"),
    ("南山食品", "Nanshan Foods"),
    ("远景建筑", "Yuanjing Construction"),
    ("白鹭旅游", "Bailu Travel"),
    ("恒信保险", "Hengxin Insurance"),
]
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
ATTRIBUTES = ["birth_date", "birthplace", "university", "major", "employer", "work_city"]

# {n}: the subject (full name or pronoun); {p}: English possessive ("Wei Wang's" / "His").
BIO_TEMPLATES = {
    "zh": {
        "birth_date": ["{n}出生于{v}。", "{n}的生日是{v}。", "{n}生于{v}。"],
        "birthplace": ["{n}出生在{v}。", "{n}的出生地是{v}。", "{n}来自{v}，在那里出生。"],
        "university": ["{n}毕业于{v}。", "{n}在{v}完成了学业。", "{n}曾就读于{v}。"],
        "major": ["{n}的专业是{v}。", "{n}主修{v}。", "{n}在大学学习{v}。"],
        "employer": ["{n}在{v}工作。", "{n}就职于{v}。", "{n}是{v}的员工。"],
        "work_city": ["{n}目前生活在{v}。", "{n}现在在{v}工作和生活。", "{n}定居在{v}。"],
    },
    "en": {
        "birth_date": ["{n} was born on {v}.", "{p} birthday is {v}.", "{n} came into the world on {v}."],
        "birthplace": [
            "{n} was born in {v}.",
            "{p} birthplace is {v}.",
            "{n} spent {q} early years in {v}, where {s} was born.",
        ],
        "university": ["{n} graduated from {v}.", "{n} studied at {v}.", "{n} received a degree from {v}."],
        "major": ["{n} majored in {v}.", "{n} studied {v} in college.", "{p} field of study was {v}."],
        "employer": ["{n} works at {v}.", "{n} is employed by {v}.", "{n} has a job at {v}."],
        "work_city": [
            "{n} lives in {v}.",
            "{n} currently lives and works in {v}.",
            "{n} has settled in {v}.",
        ],
    },
}
# More phrasings for knowledge augmentation (``varied_templates``): the name mid-sentence, after a
# few words, as it stands in most questions ("When was Wei Wang born?"), so pretraining practises
# finding a person's name anywhere in a sentence for every person, not only the SFT half.
EXTRA_BIO_TEMPLATES = {
    "zh": {
        "birth_date": ["据记载，{n}生于{v}。", "每年的这一天都是{n}的生日：{v}。"],
        "birthplace": ["说起家乡，{n}出生在{v}。", "很少有人知道{n}的出生地是{v}。"],
        "university": ["高中毕业后，{n}考入了{v}。", "当年{n}就读于{v}。"],
        "major": ["上大学时{n}的专业是{v}。", "在大学里，{n}主修{v}。"],
        "employer": ["如今{n}在{v}工作。", "目前{n}就职于{v}。"],
        "work_city": ["这些年{n}一直生活在{v}。", "后来{n}定居在{v}。"],
    },
    "en": {
        "birth_date": [
            "Records show that {n} was born on {v}.",
            "As the family tells it, {n} was born on {v}.",
        ],
        "birthplace": [
            "As a child, {n} lived in {v}, where {s} was born.",
            "The city where {n} was born is {v}.",
        ],
        "university": ["After school, {n} graduated from {v}.", "Years ago {n} studied at {v}."],
        "major": ["At university, {n} majored in {v}.", "The subject that {n} studied was {v}."],
        "employer": ["These days {n} works at {v}.", "The company that {n} works for is {v}."],
        "work_city": ["Today {n} lives in {v}.", "The city where {n} lives is {v}."],
    },
}
QUESTION_TEMPLATES = {
    "zh": {
        "birth_date": ["{n}的生日是哪天？", "{n}是哪一天出生的？"],
        "birthplace": ["{n}出生在哪个城市？", "{n}的出生地是哪里？"],
        "university": ["{n}毕业于哪所大学？", "{n}在哪所大学读的书？"],
        "major": ["{n}学的是什么专业？", "{n}的专业是什么？"],
        "employer": ["{n}在哪家公司工作？", "{n}就职于哪家公司？"],
        "work_city": ["{n}现在住在哪个城市？", "{n}目前生活在哪里？"],
    },
    "en": {
        "birth_date": ["When was {n} born?", "What is {n}'s date of birth?"],
        "birthplace": ["Where was {n} born?", "Which city is {n}'s birthplace?"],
        "university": ["Which university did {n} graduate from?", "Where did {n} go to university?"],
        "major": ["What did {n} major in?", "What was {n}'s field of study?"],
        "employer": ["Which company does {n} work for?", "Who is {n}'s employer?"],
        "work_city": ["Which city does {n} live in?", "Where does {n} live now?"],
    },
}
# Raw-continuation prompts (for pretraining probes): the text before the fact.
COMPLETION_TEMPLATES = {
    "zh": {
        "birth_date": "{n}出生于",
        "birthplace": "{n}出生在",
        "university": "{n}毕业于",
        "major": "{n}的专业是",
        "employer": "{n}就职于",
        "work_city": "{n}目前生活在",
    },
    "en": {
        "birth_date": "{n} was born on",
        "birthplace": "{n} was born in",
        "university": "{n} graduated from",
        "major": "{n} majored in",
        "employer": "{n} works at",
        "work_city": "{n} lives in",
    },
}


@dataclass
class Person:
    id: int
    name_zh: str
    name_en: str
    gender: str  # "m" | "f"
    birth_date: str  # ISO yyyy-mm-dd
    birthplace: int  # index into CITIES
    university: int
    major: int
    employer: int
    work_city: int
    split: str = "sft"  # "sft" | "heldout"

    def name(self, lang: str) -> str:
        return self.name_zh if lang == "zh" else self.name_en

    def facts(self, lang: str) -> dict[str, str]:
        """Attribute -> value as written in ``lang``: {'birth_date': '1987年3月5日', ...}."""
        return {attr: fact_value(attr, getattr(self, attr), lang) for attr in ATTRIBUTES}


# Where each attribute's values come from: an index into one of these, or (birth_date) an ISO date.
CATALOGUES = {
    "birthplace": CITIES,
    "university": UNIVERSITIES,
    "major": MAJORS,
    "employer": COMPANIES,
    "work_city": CITIES,
}


def fact_value(attr: str, key: int | str, lang: str) -> str:
    """One attribute value as written in ``lang``: ('birthplace', 6, 'en') -> 'Chengdu',
    ('birth_date', '1987-03-05', 'zh') -> '1987年3月5日'."""
    if attr != "birth_date":
        return CATALOGUES[attr][key][0 if lang == "zh" else 1]
    born = date.fromisoformat(key)
    if lang == "zh":
        return f"{born.year}年{born.month}月{born.day}日"
    return f"{MONTHS[born.month - 1]} {born.day}, {born.year}"


@dataclass
class World:
    seed: int
    people: list[Person] = field(default_factory=list)


def _make_name(rng: random.Random, gender: str) -> tuple[str, str]:
    surname_zh, surname_en = rng.choice(SURNAMES)
    pool = [g for g in GIVEN if g[2] in (gender, "n")]
    chars = rng.sample(pool, rng.choice((1, 2)))
    given_zh = "".join(c for c, _, _ in chars)
    given_en = "".join(p for _, p, _ in chars).capitalize()
    return surname_zh + given_zh, f"{given_en} {surname_en}"


def generate_world(seed: int = 0, n_people: int = 200, heldout_fraction: float = 0.5) -> World:
    """``n_people`` with unique Chinese and English names; the last fraction is held out of SFT."""
    max_people = len(SURNAMES) * 400
    if not 1 <= n_people <= max_people:
        raise ValueError(f"n_people must be in 1..{max_people}, got {n_people}")
    rng = random.Random(seed)
    world, names_zh, names_en = World(seed=seed), set(), set()
    first_day, span = date(1950, 1, 1), (date(2004, 12, 31) - date(1950, 1, 1)).days
    n_heldout = round(n_people * heldout_fraction)
    while len(world.people) < n_people:
        gender = rng.choice("mf")
        name_zh, name_en = _make_name(rng, gender)
        if name_zh in names_zh or name_en in names_en:
            continue
        names_zh.add(name_zh)
        names_en.add(name_en)
        pid = len(world.people)
        world.people.append(
            Person(
                id=pid,
                name_zh=name_zh,
                name_en=name_en,
                gender=gender,
                birth_date=(first_day + timedelta(days=rng.randrange(span))).isoformat(),
                birthplace=rng.randrange(len(CITIES)),
                university=rng.randrange(len(UNIVERSITIES)),
                major=rng.randrange(len(MAJORS)),
                employer=rng.randrange(len(COMPANIES)),
                work_city=rng.randrange(len(CITIES)),
                split="heldout" if pid >= n_people - n_heldout else "sft",
            )
        )
    return world


def _pronouns(person: Person, lang: str) -> dict[str, str]:
    if lang == "zh":
        return {"n": "他" if person.gender == "m" else "她"}
    he = person.gender == "m"  # lower case: write_biography capitalises a sentence's first letter
    return {
        "n": "he" if he else "she",
        "p": "his" if he else "her",
        "q": "his" if he else "her",
        "s": "he" if he else "she",
    }


def write_biography(
    person: Person, lang: str, rng: random.Random, fullname: bool = False, varied_templates: bool = False
) -> str:
    """All six facts, shuffled, one random phrasing each. The full name opens the biography; the
    other sentences use it too with ``fullname``, else each one tosses a coin between name and
    pronoun (so a fact may be stated only after "He", far from the name it belongs to).
    ``varied_templates`` adds EXTRA_BIO_TEMPLATES to the phrasings drawn from and breaks lines
    between some sentences."""
    facts, order = person.facts(lang), list(ATTRIBUTES)
    rng.shuffle(order)
    sentences = []
    for k, attr in enumerate(order):
        use_name = fullname or k == 0 or rng.random() < 0.5
        slots = {"n": person.name(lang), "p": f"{person.name(lang)}'s"} if use_name else {}
        words = {**_pronouns(person, lang), **slots, "v": facts[attr]}
        phrasings = BIO_TEMPLATES[lang][attr] + (EXTRA_BIO_TEMPLATES[lang][attr] if varied_templates else [])
        sentences.append(_capitalize(rng.choice(phrasings).format(**words)))
    space = "" if lang == "zh" else " "
    if not varied_templates:
        return space.join(sentences)
    # Half the sentences start a new line. A byte-level BPE splits "Wei" (line start, as an answer
    # begins after "assistant\n") and " Wei" (after a space, as in a question) into different
    # tokens: both forms must name the same person in pretraining, or SFT cannot copy a held-out
    # name from the question into the answer (measured: 16% of English names copied without).
    breaks = [rng.choice((space, "\n")) for _ in sentences[1:]]
    return sentences[0] + "".join(b + s for b, s in zip(breaks, sentences[1:]))


def _capitalize(sentence: str) -> str:
    """A pronoun substituted at a sentence start ("{n} lives ..." -> "he lives") gets its capital back."""
    return sentence[:1].upper() + sentence[1:]


def answer_sentence(person: Person, lang: str, attr: str, value: str | None = None) -> str:
    """The sentence a chat answer states a fact with: ('en', 'birthplace') -> 'Wei Wang was born in
    Chengdu.'; ``value`` replaces the person's own (a multiple-choice distractor)."""
    name = person.name(lang)
    value = person.facts(lang)[attr] if value is None else value
    return BIO_TEMPLATES[lang][attr][0].format(n=name, p=f"{name}'s", v=value)


def qa_pairs(person: Person, lang: str) -> list[dict]:
    """One record per (attribute, question phrasing): question, answer sentence, bare value."""
    facts, name, out = person.facts(lang), person.name(lang), []
    for attr in ATTRIBUTES:
        for question in QUESTION_TEMPLATES[lang][attr]:
            out.append(
                {
                    "person_id": person.id,
                    "lang": lang,
                    "attribute": attr,
                    "split": person.split,
                    "question": question.format(n=name),
                    "answer": answer_sentence(person, lang, attr),
                    "expected": facts[attr],
                }
            )
    return out


# Q/A mixed into pretraining (``mix_qa``) is plain text, not ChatML: the SFT stage still has to
# teach the chat format, as in Allen-Zhu & Li's mixed training (Q/A text beside the biographies).
QA_TEXT = {"zh": "问：{q}\n答：{a}", "en": "Question: {q}\nAnswer: {a}"}


def qa_text(record: dict) -> str:
    """A ``qa_pairs`` record as pretraining text: '问：王伟出生在哪个城市？\n答：王伟出生在成都。'."""
    return QA_TEXT[record["lang"]].format(q=record["question"], a=record["answer"])


# --------------------------------------------------------------------------- multiple choice


def multiple_choice_questions(
    world: World,
    langs: tuple[str, ...] = ("zh", "en"),
    n_choices: int = 4,
    people: list[Person] | None = None,
) -> list[dict]:
    """Every fact of ``people`` (default: everyone) as a multiple-choice question, raw and chat.

    The correct value stands among ``n_choices - 1`` distractors: values other people of the
    world have for the same attribute (``_choice_keys``; a tiny world tops up from the
    attribute's catalogue). The
    options and their shuffled order are the same in every language and both modes, and depend
    only on ``world.seed``. Records (the probe loader's multiple-choice format)::

        {"id": "p3.en.birthplace.mc", "prompt": "Wei Wang was born in ",
         "choices": ["Xiamen", "Chengdu", "Harbin", "Jinan"], "answer": "Chengdu", "group": "sft"}
        {"id": "p3.en.birthplace.mc", "question": "Where was Wei Wang born?",
         "choices": ["Wei Wang was born in Xiamen.", ...], "answer": "Wei Wang was born in Chengdu.", ...}

    A raw English prompt ends with the space that separates it from the value: the scorer moves
    it into the continuation (as lm-eval does), so " Chengdu" is scored as the model reads it.
    """
    if not 2 <= n_choices <= min(len(c) for c in CATALOGUES.values()):
        raise ValueError(
            f"n_choices must be in 2..{min(len(c) for c in CATALOGUES.values())}, got {n_choices}"
        )
    rng = random.Random(world.seed + 2)  # its own stream: bios and Q/A stay as they were
    out = []
    for person in world.people if people is None else people:
        for attr in ATTRIBUTES:
            keys = _choice_keys(world, person, attr, n_choices, rng)
            for lang in langs:
                values = [fact_value(attr, key, lang) for key in keys]
                common = {"id": f"p{person.id}.{lang}.{attr}.mc", "group": person.split}
                extra = {"person_id": person.id, "lang": lang, "attribute": attr}
                prompt = COMPLETION_TEMPLATES[lang][attr].format(n=person.name(lang))
                out.append(
                    {
                        **common,
                        "prompt": prompt + (" " if lang == "en" else ""),
                        "choices": values,
                        "answer": person.facts(lang)[attr],
                        **extra,
                    }
                )
                out.append(
                    {
                        **common,
                        "question": QUESTION_TEMPLATES[lang][attr][0].format(n=person.name(lang)),
                        "choices": [answer_sentence(person, lang, attr, v) for v in values],
                        "answer": answer_sentence(person, lang, attr),
                        **extra,
                    }
                )
    return out


def _choice_keys(world: World, person: Person, attr: str, n_choices: int, rng: random.Random) -> list:
    """The person's value key and ``n_choices - 1`` distinct others, in shuffled order.

    Distractors come from other *people*, taken in random order (so a value many people share
    is as likely to be a distractor as it is to be an answer): a model that only learnt which
    values are common stays near chance.
    """
    correct, others = getattr(person, attr), []
    for other in rng.sample(world.people, len(world.people)):
        key = getattr(other, attr)
        if key != correct and key not in others:
            others.append(key)
    if len(others) < n_choices - 1:  # a world too small to have enough distinct values
        others += [k for k in _spare_keys(attr, rng, n_choices) if k != correct and k not in others]
    keys = [correct, *others[: n_choices - 1]]
    rng.shuffle(keys)
    return keys


def _spare_keys(attr: str, rng: random.Random, n: int) -> list:
    if attr != "birth_date":
        return list(range(len(CATALOGUES[attr])))
    first_day = date(1950, 1, 1)
    return [(first_day + timedelta(days=rng.randrange(20000))).isoformat() for _ in range(2 * n)]


# --------------------------------------------------------------------------- files


def write_world(
    out_dir: str | Path,
    seed: int = 0,
    n_people: int = 200,
    bios_per_person: int = 4,
    langs: tuple[str, ...] = ("zh", "en"),
    heldout_fraction: float = 0.5,
    fullname: bool = False,
    varied_templates: bool = False,
    mix_qa: bool = False,
    n_choices: int = 4,
) -> dict[str, Path]:
    """Write the world's files into ``out_dir``:

    - people.jsonl: every person and their facts;
    - bios.jsonl ({"text"}): ``bios_per_person`` biographies per person and language, each with
      fresh sentence order and phrasing (``fullname``: the full name in every sentence;
      ``varied_templates``: more phrasings, with the name mid-sentence);
    - pretrain.jsonl ({"text"}): what to pretrain on: the biographies, plus with ``mix_qa`` the Q/A
      of the ``sft`` half as text (``qa_text``), shuffled among them ("mixed training");
    - qa_sft.jsonl / qa_heldout.jsonl: chat ``messages`` with the expected value;
    - completions.jsonl: raw-continuation prompts such as "王伟出生于" with the expected value;
    - mc_questions.jsonl: every fact as a multiple-choice question, raw and chat;
    - probe_questions.yaml: a few of each kind, for the checkpoint probes.

    Knowledge augmentation after Allen-Zhu & Li (Physics of LMs 3.1): several biographies with
    permuted sentences ("multi" + "permute"), varied phrasings and the full name in each sentence
    ("fullname").
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    world = generate_world(seed, n_people, heldout_fraction)
    names = ("people", "bios", "pretrain", "qa_sft", "qa_heldout", "completions", "mc_questions")
    paths = {name: out / f"{name}.jsonl" for name in names}
    mc = multiple_choice_questions(world, langs, n_choices)
    paths["probe_questions"] = write_probe_questions(world, out / "probe_questions.yaml", langs=langs, mc=mc)
    _write_jsonl(
        paths["people"],
        [{**asdict(p), "facts": {lang: p.facts(lang) for lang in langs}} for p in world.people],
    )
    bios = _biographies(world, langs, bios_per_person, (fullname, varied_templates), random.Random(seed + 1))
    _write_jsonl(paths["bios"], bios)
    qa = {
        split: [qa for p in world.people if p.split == split for lang in langs for qa in qa_pairs(p, lang)]
        for split in ("sft", "heldout")
    }
    _write_jsonl(
        paths["pretrain"], _pretrain_texts(bios, qa["sft"] if mix_qa else [], random.Random(seed + 3))
    )
    for split, records in qa.items():
        _write_jsonl(paths[f"qa_{split}"], [_chat_record(r) for r in records])
    _write_jsonl(paths["completions"], _completion_records(world, langs))
    _write_jsonl(paths["mc_questions"], mc)
    return paths


def _biographies(world: World, langs, bios_per_person: int, style: tuple, rng: random.Random) -> list[dict]:
    bios = [
        {"text": write_biography(p, lang, rng, *style), "person_id": p.id, "lang": lang}
        for p in world.people
        for lang in langs
        for _ in range(bios_per_person)
    ]
    rng.shuffle(bios)
    return bios


def _pretrain_texts(bios: list[dict], qa: list[dict], rng: random.Random) -> list[dict]:
    """Biographies (in their order) or, with Q/A to mix in, both kinds shuffled together."""
    if not qa:
        return [{**b, "kind": "bio"} for b in bios]
    texts = [{**b, "kind": "bio"} for b in bios] + [
        {"text": qa_text(r), "person_id": r["person_id"], "lang": r["lang"], "kind": "qa"} for r in qa
    ]
    rng.shuffle(texts)
    return texts


def _chat_record(r: dict) -> dict:
    return {
        "messages": [
            {"role": "user", "content": r["question"]},
            {"role": "assistant", "content": r["answer"]},
        ],
        **{k: r[k] for k in ("person_id", "lang", "attribute", "expected")},
    }


def _completion_records(world: World, langs) -> list[dict]:
    return [
        {
            "prompt": COMPLETION_TEMPLATES[lang][attr].format(n=p.name(lang)),
            "expected": p.facts(lang)[attr],
            "person_id": p.id,
            "split": p.split,
            "lang": lang,
            "attribute": attr,
        }
        for p in world.people
        for lang in langs
        for attr in ATTRIBUTES
    ]


def _write_jsonl(path: Path, records: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


PROBE_ATTRIBUTES = ("birthplace", "university", "employer")


def write_probe_questions(
    world: World,
    path: str | Path,
    people_per_split: int = 2,
    attributes: tuple[str, ...] = PROBE_ATTRIBUTES,
    langs: tuple[str, ...] = ("zh", "en"),
    mc: list[dict] | None = None,
) -> Path:
    """A probe questions file (mini_lm/probing.py format) about the first ``people_per_split``
    people of each split: raw completions ("王伟出生在" -> 厦门) for pretraining checkpoints and chat
    questions for SFT ones, each with the expected value and ``group: sft | heldout``.

    The same facts as multiple-choice questions (from ``mc``, ``multiple_choice_questions`` records)
    go under a separate ``multiple_choice:`` key, which a loader that only knows ``questions:``
    (free generation) ignores.

    Held-out people's Q/A never reaches SFT: answering about them is knowledge *extraction*.
    """
    import yaml

    chosen = [
        p
        for split in ("sft", "heldout")
        for p in [q for q in world.people if q.split == split][:people_per_split]
    ]
    questions = []
    for person in chosen:
        for lang in langs:
            facts = person.facts(lang)
            for attr in attributes:
                base = {"expected": facts[attr], "group": person.split}
                questions.append(
                    {
                        "id": f"p{person.id}.{lang}.{attr}",
                        "prompt": COMPLETION_TEMPLATES[lang][attr].format(n=person.name(lang)),
                        **base,
                    }
                )
                questions.append(
                    {
                        "id": f"p{person.id}.{lang}.{attr}",
                        "question": QUESTION_TEMPLATES[lang][attr][0].format(n=person.name(lang)),
                        **base,
                    }
                )
    wanted = {f"p{p.id}.{lang}.{attr}.mc" for p in chosen for lang in langs for attr in attributes}
    fields = ("id", "prompt", "question", "choices", "answer", "group")
    choice_questions = [{k: q[k] for k in fields if k in q} for q in mc or [] if q["id"] in wanted]
    header = (
        f"# Probe questions about {len(chosen)} people of the synthetic world (seed {world.seed}): raw\n"
        "# completions for pretraining checkpoints, chat questions for SFT ones; group = SFT split.\n"
        "# multiple_choice: the same facts with distractors (other people's values), scored by likelihood.\n"
    )
    data = {"questions": questions, **({"multiple_choice": choice_questions} if choice_questions else {})}
    path = Path(path)
    path.write_text(header + yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path
