"""Tokenizers: train a byte-level BPE with ChatML specials, load any local HF tokenizer dir, build the
BERT adapter's WordPiece, install a chat template; ``prepare_tokenizer`` picks one for a recipe.

    tokenizer = prepare_tokenizer(model_args, "runs/x", vocab_size=8000, texts=corpus_texts(data_args))
    set_chat_template(tokenizer, "chatml")   # SFT: installed on the tokenizer, saved with the model
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from .config import ModelArguments
from .errors import UserError
from .text_files import read_text

logger = logging.getLogger(__name__)

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END]

# ChatML. The {% generation %} markers let apply_chat_template(..., return_assistant_tokens_mask=True)
# mark every assistant turn *including* its closing <|im_end|>, so the model learns to stop.
# Tools render exactly as in Qwen2.5's own template (without its default system prompt): the
# schemas in the system turn, each call as <tool_call>{"name": ..., "arguments": ...}</tool_call>
# in the assistant turn (inside the markers: supervised), results as <tool_response> blocks of
# one user turn. So a from-scratch model speaks the format the server parses and Qwen models use.
TOOLS_PREAMBLE = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
TOOLS_EPILOGUE = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments "
    'within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, '
    '"arguments": <args-json-object>}\n</tool_call>'
)
CHATML_TEMPLATE = (
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] + '\\n\\n' }}{%- endif %}"
    "{{- " + repr(TOOLS_PREAMBLE) + " }}"  # repr(): a quoted jinja string literal
    "{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}"
    "{{- " + repr(TOOLS_EPILOGUE + "<|im_end|>\n") + " }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'system' and loop.first and tools %}"
    "{%- elif message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}"
    "{{- message['content'] }}"
    "{%- for call in message['tool_calls'] or [] %}"
    "{%- set call = call['function'] if call['function'] is defined else call %}"
    "{{- '\\n' if message['content'] or not loop.first else '' }}"
    "{{- '<tool_call>\\n{\"name\": \"' + call['name'] + '\", \"arguments\": ' }}"
    "{{- call['arguments'] | tojson }}"
    "{{- '}\\n</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>' }}"
    "{%- endgeneration %}"
    "{{- '\\n' }}"
    "{%- elif message['role'] == 'tool' %}"
    "{%- if loop.first or messages[loop.index0 - 1]['role'] != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + message['content'] + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
# Where a template has these, apply_chat_template can mark assistant tokens itself (the label audit cross-checks).
GENERATION_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")

# Qwen2's pre-tokenizer: English contractions, letter runs, single digits, punctuation, whitespace.
PRETOKENIZE_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

# Files a loadable HF tokenizer dir has: a fast tokenizer.json, or a slow vocabulary.
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "tokenizer.model", "spiece.model")


class TokenizerError(UserError, ValueError):
    """A tokenizer that cannot be trained or loaded as asked."""


def train_bpe_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    output_dir: str | os.PathLike | None = None,
    min_frequency: int = 2,
    model_max_length: int = 2048,
    split_han: bool = True,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE with ChatML specials and chat template.

    Pre-tokenization is Qwen2's (NFC, regex, single digits, byte-level). With ``split_han`` every
    Chinese character is also its own pre-token, so Chinese is character-level (as in GPT-2
    Chinese) and merges never span a word boundary: "王伟出生在|厦门" tokenizes the same as a
    prompt and inside a sentence. Ids 0,1,2 are <|endoftext|>, <|im_start|>, <|im_end|>;
    <|endoftext|> doubles as bos/eos/pad. Saved as a plain ``PreTrainedTokenizerFast`` dir.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise TokenizerError(
            f"vocab_size={vocab_size} is too small: byte-level BPE needs at least "
            f"{256 + len(SPECIAL_TOKENS)} (256 bytes + special tokens)"
        )
    # The Qwen2 pipeline (NFC, regex split with single digits, byte-level): AutoTokenizer rebuilds
    # exactly this pipeline for model dirs whose config says qwen2, so ids survive the round trip.
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    # No merge can span two Han characters, so the Qwen2Tokenizer that AutoTokenizer builds
    # for qwen2 dirs (Qwen2 regex only) still produces exactly these ids.
    han = [pre_tokenizers.Split(Regex(r"\p{Han}"), behavior="isolated")] if split_han else []
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        han
        + [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=True,
    )
    seen = _CountingIterator(texts)
    tok.train_from_iterator(_without_special_tokens(seen), trainer=trainer)
    if seen.count == 0:
        raise TokenizerError("no text to train the tokenizer on (the corpus is empty)")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=ENDOFTEXT,
        eos_token=ENDOFTEXT,
        pad_token=ENDOFTEXT,
        unk_token=None,
        additional_special_tokens=[IM_START, IM_END],
        model_max_length=model_max_length,
        chat_template=CHATML_TEMPLATE,
    )
    logger.info("trained byte-level BPE: %d tokens from %d texts", len(fast), seen.count)
    if output_dir is not None:
        save_tokenizer(fast, output_dir)
    return fast


_SPECIAL_TEXT = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS))


def _without_special_tokens(texts: Iterable[str]) -> Iterator[str]:
    """Texts with special-token strings cut out, so no merge learns a piece of one ('<|', 'endoftext'):
    they are single ids already, and in text they stay plain bytes. ``"a<|endoftext|>b"`` -> "a", "b"."""
    for text in texts:
        yield from (piece for piece in _SPECIAL_TEXT.split(text) if piece)


class _CountingIterator:
    def __init__(self, texts: Iterable[str]):
        self._texts, self.count = texts, 0

    def __iter__(self) -> Iterator[str]:
        for text in self._texts:
            self.count += 1
            yield text


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, output_dir: str | os.PathLike) -> None:
    """save_pretrained, pinning tokenizer_class so AutoTokenizer returns the same (fast) class.

    Without the pin, AutoTokenizer on a model dir whose config.json says ``qwen2`` builds a
    Qwen2Tokenizer with Qwen2's pre-tokenizer regex, and our ids silently change.
    """
    tokenizer.save_pretrained(output_dir)
    cfg_path = Path(output_dir) / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    if isinstance(tokenizer, PreTrainedTokenizerFast) and type(tokenizer) is PreTrainedTokenizerFast:
        cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
        cfg_path.write_text(json.dumps(cfg, ensure_ascii=False, indent=2), encoding="utf-8")


def load_tokenizer(name_or_path: str | os.PathLike, **kwargs) -> PreTrainedTokenizerBase:
    """Load a local HF tokenizer dir (or a hub id, for users with hub access).

    A local dir without any tokenizer file fails with the list of files it should contain.
    """
    path = Path(name_or_path)
    if path.exists():
        if not path.is_dir():
            raise TokenizerError(f"tokenizer path {path} is a file; give the directory that holds it")
        if not any((path / f).exists() for f in _TOKENIZER_FILES):
            present = sorted(p.name for p in path.iterdir())[:10]
            raise TokenizerError(
                f"{path} is not a tokenizer dir: none of {', '.join(_TOKENIZER_FILES)} found "
                f"(it holds: {', '.join(present) or 'nothing'})"
            )
    elif not looks_like_hub_id(str(name_or_path)):
        raise TokenizerError(f"tokenizer dir not found: {name_or_path}")
    try:
        if (path / "tokenizer.json").is_file():
            # Faithful to the saved pipeline. AutoTokenizer would rebuild some classes (Qwen2Tokenizer
            # for any dir whose config.json says qwen2) with their own pre-tokenizer.
            return PreTrainedTokenizerFast.from_pretrained(str(path), **kwargs)
        return AutoTokenizer.from_pretrained(str(name_or_path), **kwargs)
    except OSError as err:
        raise TokenizerError(f"could not load tokenizer '{name_or_path}': {err}") from err


ROUNDTRIP_PROBE = "Hello, world! It's 2024-05-06: 12345 个字，你好世界。\n\n  spaced   text"


def autotokenizer_roundtrip_ok(tokenizer: PreTrainedTokenizerBase, model_type: str) -> bool:
    """Will plain ``AutoTokenizer`` on a ``model_type`` checkpoint dir give this tokenizer's ids?

    transformers 5 swaps in the registered class for some model types (qwen2 -> Qwen2Tokenizer,
    with Qwen2's regex); a tokenizer with another pre-tokenizer then changes ids after saving.
    """
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        Path(tmp, "config.json").write_text(json.dumps({"model_type": model_type}), encoding="utf-8")
        reloaded = AutoTokenizer.from_pretrained(tmp)
    return reloaded(ROUNDTRIP_PROBE)["input_ids"] == tokenizer(ROUNDTRIP_PROBE)["input_ids"]


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def looks_like_hub_id(name: str) -> bool:
    """'Qwen/Qwen2.5-0.5B' -> True; './tok', '/abs/tok', 'a/b/c' -> False."""
    return bool(_HUB_ID.match(name)) and not name.startswith((".", "/", "~"))


def document_separator_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """Id placed between packed documents: <|endoftext|> when the vocab has it, else eos."""
    vocab = tokenizer.get_vocab()
    if ENDOFTEXT in vocab:
        return vocab[ENDOFTEXT]
    if tokenizer.eos_token_id is None:
        raise TokenizerError("tokenizer has neither <|endoftext|> nor an eos token to separate documents")
    return tokenizer.eos_token_id


def special_token_texts(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """The strings of a tokenizer's special tokens: ``['<|endoftext|>', '<|im_start|>', '<|im_end|>']``."""
    added = [t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values() if t.special]
    return list(dict.fromkeys([*tokenizer.all_special_tokens, *added]))


def stop_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Ids that end a generation: eos, <|endoftext|> and <|im_end|> where the vocab has them."""
    vocab = tokenizer.get_vocab()
    ids = []
    for token in (tokenizer.eos_token, ENDOFTEXT, IM_END):
        if token in vocab and vocab[token] not in ids:
            ids.append(vocab[token])
    return ids


# --------------------------------------------------------------------------- chat templates


class ChatTemplateError(UserError, ValueError):
    """No usable chat template, or one that cannot be used to locate assistant turns."""


def resolve_chat_template(tokenizer, spec: str | None) -> tuple[str, str]:
    """(template, where it came from). None -> the tokenizer's own; "chatml"; a .jinja file; inline text."""
    if spec is None:
        if not getattr(tokenizer, "chat_template", None):
            raise ChatTemplateError(
                f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template and none is "
                "configured: set chat_template: chatml (or a .jinja file)"
            )
        return tokenizer.chat_template, "the tokenizer's own"
    if spec.lower() == "chatml":
        return CHATML_TEMPLATE, "chatml"
    if "{%" in spec or "{{" in spec:
        return spec, "inline (config)"
    path = Path(spec)
    if not path.is_file():
        raise ChatTemplateError(
            f"chat_template: no such file {spec} (use chatml, a .jinja file or a template)"
        )
    return read_text(path), str(path)  # a BOM would be rendered into every prompt


def set_chat_template(tokenizer, spec: str | None) -> str:
    """Install the template on the tokenizer (so it is saved with the model); add ChatML tokens if
    the vocabulary lacks them. Returns where the template came from."""
    template, origin = resolve_chat_template(tokenizer, spec)
    if IM_START in template or IM_END in template:
        missing = [t for t in (IM_START, IM_END) if t not in tokenizer.get_vocab()]
        if missing:
            tokenizer.add_tokens(missing, special_tokens=True)
            logger.warning(
                "chat template uses %s: added them to the tokenizer (the model's embeddings grow)", missing
            )
    tokenizer.chat_template = template
    return origin


# --------------------------------------------------------------------------- special tokens as plain text

# Stands in for each character of a special-token string found in content: it keeps the rendered
# text's length (and its JSON: tojson leaves it as it is) while no longer matching any special token.
HIDDEN = "\ue000"


def special_texts(tokenizer) -> tuple[str, ...]:
    """The strings the tokenizer turns into control tokens, longest first:
    ('<|endoftext|>', '<|im_start|>', '<|im_end|>') for a BPE trained here."""
    specials = {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
    return tuple(sorted(specials, key=len, reverse=True))


def hide_special_texts(value, specials: tuple[str, ...]):
    """Every special-token string inside ``value`` (a string, or lists / dicts of them) replaced by
    as many HIDDEN characters; None when there is none, so callers keep their fast path.

    "say <|im_end|>" -> "say \ue000\ue000\ue000\ue000\ue000\ue000\ue000\ue000\ue000\ue000"; "hi" -> None
    """
    found = False

    def hide(item):
        nonlocal found
        if isinstance(item, str):
            for special in specials:
                if special in item:
                    found = True
                    item = item.replace(special, HIDDEN * len(special))
            return item
        if isinstance(item, list):
            return [hide(x) for x in item]
        if isinstance(item, dict):
            return {key: hide(x) for key, x in item.items()}
        return item

    hidden = hide(value)
    return hidden if found else None


def encode_plain(tokenizer, text: str) -> list[int]:
    """Ids of text that is all content: a literal "<|im_start|>" in it is plain characters, never
    the control token (a user's message or a document cannot inject one)."""
    return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def encode_rendered(tokenizer, text: str, shadow: str | None, specials: tuple[str, ...]) -> list[int]:
    """Ids of template output in which only the template's own special tokens are control tokens.

    ``shadow`` is the same rendering with the content's special-token strings hidden
    (``hide_special_texts``), so it has the same length and holds only the template's: the text
    is cut at those, and the pieces between are encoded as plain text. That is how the tokenizer
    itself proceeds (split at added tokens, encode the rest), so ids are unchanged wherever the
    content holds no special string. ``shadow`` None: the content held none; plain tokenization.
    """
    if shadow is None or not specials:
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(shadow) != len(text):
        raise ChatTemplateError(
            "the content holds special-token strings and the chat template changes the content's "
            "length, so they cannot be kept as plain text: remove them from the data"
        )
    ids, pos = [], 0
    for match in re.finditer("|".join(map(re.escape, specials)), shadow):
        if match.start() > pos:
            ids += encode_plain(tokenizer, text[pos : match.start()])
        ids.append(tokenizer.convert_tokens_to_ids(match.group()))
        pos = match.end()
    return ids + (encode_plain(tokenizer, text[pos:]) if pos < len(text) else [])


# --------------------------------------------------------------------------- the BERT adapter's WordPiece

# Typographic punctuation that bert-base-chinese's vocab lacks (it would become [UNK]: 3-4% of
# the tokens of the classic novels), mapped to the full-width forms the vocab has.
_PUNCTUATION_MAP = {"“": "＂", "”": "＂", "‘": "＇", "’": "＇", "—": "－", "…": "..."}
# A space next to a CJK character or full-width punctuation is an artefact of WordPiece decoding.
_CJK = r"[\p{Han}\x{3000}-\x{303F}\x{FF00}-\x{FFEF}]"


def bert_tokenizer(name_or_path: str | os.PathLike) -> PreTrainedTokenizerFast:
    """WordPiece tokenizer for the adapter, from a dir holding ``vocab.txt`` (a plain BERT dir: its own
    tokenizer.json, if any, is rebuilt from vocab.txt) or an adapter dir saved by recipes/mlm.py.

    On top of BERT's pipeline: typographic quotes/dashes map to vocab entries instead of [UNK];
    decoding joins CJK characters without spaces ("宝 玉 笑" -> "宝玉笑"); eos is [SEP] (the
    document separator and stop token) and bos is [CLS]. Saved as a plain fast tokenizer, so
    ``AutoTokenizer`` on a checkpoint dir reproduces exactly these ids and this decoding.
    """
    from tokenizers import Regex, decoders, normalizers
    from transformers import BertTokenizerFast

    path = Path(name_or_path)
    if not (path / "vocab.txt").is_file():
        # A dir saved by recipes/mlm.py holds this tokenizer (tokenizer.json) and no vocab.txt.
        if (path / "tokenizer.json").is_file():
            return load_tokenizer(path)
        raise TokenizerError(f"{path}: no vocab.txt (a WordPiece BERT vocabulary) or tokenizer.json found")
    backend = BertTokenizerFast.from_pretrained(str(path)).backend_tokenizer
    backend.normalizer = normalizers.Sequence(
        [normalizers.Replace(a, b) for a, b in _PUNCTUATION_MAP.items()] + [backend.normalizer]
    )
    backend.decoder = decoders.Sequence(
        [
            decoders.WordPiece(prefix="##", cleanup=True),
            decoders.Fuse(),
            decoders.Replace(Regex(f"(?<={_CJK}) | (?={_CJK})"), ""),
        ]
    )
    specials = dict(
        unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]"
    )
    missing = [tok for tok in specials.values() if backend.token_to_id(tok) is None]
    if missing:
        raise TokenizerError(f"{path}/vocab.txt lacks the BERT special tokens {', '.join(missing)}")
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="[CLS]", eos_token="[SEP]", **specials)


# --------------------------------------------------------------------------- what a recipe trains with


def prepare_tokenizer(
    model_args: ModelArguments,
    output_dir: str | os.PathLike,
    vocab_size: int | None = None,
    texts: Iterable[str] | None = None,
) -> PreTrainedTokenizerBase:
    """The tokenizer a recipe trains with: the configured one (tokenizer_name_or_path, else
    model_name_or_path; a BERT WordPiece vocabulary for model_family bert), or, with
    ``vocab_size``, a byte-level BPE trained on ``texts`` (iterated only when training: e.g.
    ``mini_lm.data.pretrain.corpus_texts(data_args)`` or SFT message contents).

    A trained tokenizer lands in ``<output_dir>/tokenizer`` and is reused when it exists (resume,
    other ranks), so every process of a run sees identical ids.
    """
    name = model_args.tokenizer_name_or_path or model_args.model_name_or_path
    if name:
        if vocab_size:
            origin = "tokenizer_name_or_path" if model_args.tokenizer_name_or_path else "model_name_or_path"
            logger.warning(
                "tokenizer_vocab_size=%d is ignored: the tokenizer is loaded from %s (%s); unset one of them",
                vocab_size,
                name,
                origin,
            )
        return bert_tokenizer(name) if model_args.model_family == "bert" else load_tokenizer(name)
    if not vocab_size:
        raise TokenizerError(
            "no tokenizer: set tokenizer_name_or_path (or model_name_or_path), or "
            "tokenizer_vocab_size to train one on train_files"
        )
    path = Path(output_dir) / "tokenizer"
    if (path / "tokenizer.json").is_file():
        tokenizer = load_tokenizer(path)
        # A trained vocabulary can come out smaller than asked (a small corpus), never larger.
        level = logging.WARNING if len(tokenizer) > vocab_size else logging.INFO
        logger.log(
            level,
            "reusing the tokenizer trained earlier in %s (%d tokens; tokenizer_vocab_size=%d): delete it to "
            "train a new one",
            path,
            len(tokenizer),
            vocab_size,
        )
        return tokenizer
    if texts is None:
        raise TokenizerError("tokenizer_vocab_size is set but there is no text to train a tokenizer on")
    return train_bpe_tokenizer(texts, vocab_size, path)
