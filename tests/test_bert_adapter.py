"""The BERT masked-LM adapter: its scheme, loss, padding, window, save/load, tokenizer and generation."""

import json

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer, BertConfig, BertForMaskedLM

from mini_lm.config import ModelArguments
from mini_lm.generation import GenerationSettings, generate, load_for_generation, stream
from mini_lm.models import ModelConfigError, build_model
from mini_lm.models.bert_adapter import BertNextTokenLM
from mini_lm.tokenization import autotokenizer_roundtrip_ok, bert_tokenizer

TINY = dict(
    model_family="bert",
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=16,
    vocab_pad_multiple=1,
)


@pytest.fixture(scope="module")
def bert(tiny_bert_tokenizer):
    torch.manual_seed(0)
    model = build_model(ModelArguments(**TINY), tiny_bert_tokenizer)
    model.bind_tokenizer(tiny_bert_tokenizer, context_window=8)
    return model.eval()


def ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_scheme_appends_mask_and_counts_positions_over_real_tokens(bert, tiny_bert_tokenizer):
    tok = tiny_bert_tokenizer
    x = torch.tensor([[0, 0, 7, 8, 9], [5, 6, 7, 8, 9]])  # row 0 left-padded with [PAD] = 0
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    full, full_mask, positions = bert.scheme_inputs(x, mask)
    cls, msk, sep = tok.cls_token_id, tok.mask_token_id, tok.sep_token_id
    # [CLS] goes right before each row's context; [MASK] sits at position W + 1 = 9 in every row
    assert full.tolist() == [[0, 0, cls, 7, 8, 9, msk, sep], [cls, 5, 6, 7, 8, 9, msk, sep]]
    assert full_mask.tolist() == [[0, 0, 1, 1, 1, 1, 1, 1], [1] * 8]
    assert positions.tolist() == [list(range(3, 11))] * 2
    full_window = torch.arange(10, 18)[None]  # 8 tokens fill the window: [CLS] at position 0, as in BERT
    assert bert.scheme_inputs(full_window, None)[2].tolist() == [list(range(11))]
    for right_padded in ([[1, 1, 1, 0, 0], [1] * 5], [[0, 1, 0, 1, 1], [1] * 5]):
        with pytest.raises(ValueError, match="left-padded"):
            bert.scheme_inputs(x, torch.tensor(right_padded))


def test_loss_and_shapes(bert, tiny_bert_tokenizer):
    x = torch.tensor([ids(tiny_bert_tokenizer, "宝玉笑道"), ids(tiny_bert_tokenizer, "黛玉听了")])
    labels = torch.tensor([7, -100])
    out = bert(input_ids=x, labels=labels)
    vocab = bert.config.vocab_size
    assert out.logits.shape == (2, 1, vocab)
    assert torch.allclose(out.loss, F.cross_entropy(out.logits[:1, 0], labels[:1]))  # -100 rows are ignored
    summed = bert(input_ids=x, labels=labels, num_items_in_batch=4).loss  # the Trainer's exact accumulation
    assert torch.allclose(summed, F.cross_entropy(out.logits[:1, 0], labels[:1], reduction="sum") / 4)
    assert out.loss.item() == pytest.approx(
        torch.log(torch.tensor(float(vocab))).item(), abs=0.5
    )  # untrained


def test_left_padding_is_invisible_and_a_wrong_mask_is_not(bert, tiny_bert_tokenizer):
    tok = tiny_bert_tokenizer
    short, long = ids(tok, "黛玉"), ids(tok, "宝玉笑道：")
    padded = tok.pad([{"input_ids": short}, {"input_ids": long}], padding_side="left", return_tensors="pt")
    with torch.no_grad():
        batched = bert(**padded).logits[:, 0]
        alone = torch.cat([bert(input_ids=torch.tensor([r])).logits[:, 0] for r in (short, long)])
        attends_to_pads = bert(input_ids=padded["input_ids"]).logits[:, 0]  # negative control: no mask
    assert torch.allclose(batched, alone, atol=1e-5)
    assert (attends_to_pads[0] - alone[0]).abs().max() > 1e-4  # 10x the tolerance above


def test_only_the_last_window_tokens_count(bert, tiny_bert_tokenizer):
    x = torch.tensor([ids(tiny_bert_tokenizer, "宝玉笑道：你们来了。黛玉")])  # 12 tokens, window 8
    assert x.shape[1] > bert.window == 8
    outside, inside = x.clone(), x.clone()
    outside[0, 0], inside[0, -3] = 9, 9
    with torch.no_grad():
        base = bert(input_ids=x).logits
        assert torch.equal(base, bert(input_ids=x[:, -8:]).logits)
        assert torch.equal(base, bert(input_ids=outside).logits)
        assert not torch.allclose(base, bert(input_ids=inside).logits)  # negative control


def test_saved_dir_is_a_normal_hf_dir_that_every_loader_returns(bert, tiny_bert_tokenizer, tmp_path):
    bert.save_pretrained(tmp_path)
    tiny_bert_tokenizer.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "bert_next_token" and config["context_window"] == 8
    x = torch.tensor([ids(tiny_bert_tokenizer, "宝玉笑道")])
    model, tok = load_for_generation(str(tmp_path))
    auto = AutoModelForCausalLM.from_pretrained(tmp_path)
    rebuilt = build_model(ModelArguments(**{**TINY, "model_name_or_path": str(tmp_path)}), tok)
    with torch.no_grad():
        for loaded in (model, auto, rebuilt):
            assert isinstance(loaded, BertNextTokenLM)
            assert torch.allclose(loaded.eval()(input_ids=x).logits, bert(input_ids=x).logits, atol=1e-6)
    assert tok("宝玉笑道")["input_ids"] == tiny_bert_tokenizer("宝玉笑道")["input_ids"]
    assert model.generation_config.suppress_tokens == bert.generation_config.suppress_tokens


def test_a_plain_pretrained_bert_dir_loads_into_the_adapter(tiny_bert_tokenizer, tmp_path):
    torch.manual_seed(1)
    plain = BertForMaskedLM(
        BertConfig(
            vocab_size=len(tiny_bert_tokenizer),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=16,
        )
    )
    plain.save_pretrained(tmp_path)
    model = build_model(
        ModelArguments(model_family="bert", model_name_or_path=str(tmp_path)), tiny_bert_tokenizer
    )
    assert isinstance(model, BertNextTokenLM) and model.window == 13  # 16 positions - [CLS] [MASK] [SEP]
    for name, tensor in plain.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name
    # the adapter's logits are the plain MLM head's logits at the [MASK] of [CLS] context [MASK] [SEP]
    # (a full 13-token window, so that the positions are BERT's 0, 1, 2, ...)
    x = ids(tiny_bert_tokenizer, "宝玉笑道：你们来了。黛玉听了")[-13:]
    tok = tiny_bert_tokenizer
    with torch.no_grad():
        mlm = plain.eval()(
            input_ids=torch.tensor([[tok.cls_token_id, *x, tok.mask_token_id, tok.sep_token_id]])
        ).logits
        assert torch.allclose(model.eval()(input_ids=torch.tensor([x])).logits[0, 0], mlm[0, -2], atol=1e-5)


def test_bad_adapter_setups(tiny_bert_tokenizer, tiny_tokenizer):
    with pytest.raises(ValueError, match="needs a tokenizer with cls_token, mask_token, sep_token"):
        build_model(ModelArguments(**TINY), tiny_tokenizer)  # a BPE tokenizer has no [MASK]
    model = build_model(ModelArguments(**TINY), tiny_bert_tokenizer)
    with pytest.raises(ValueError, match=r"context_window=14 must be in \[1, 13\]"):
        model.bind_tokenizer(tiny_bert_tokenizer, context_window=14)
    with pytest.raises(ModelConfigError, match="no grouped-query attention"):
        build_model(ModelArguments(**TINY, num_key_value_heads=2), tiny_bert_tokenizer)
    with pytest.raises(ValueError, match="empty prompt"):
        model(input_ids=torch.zeros((1, 0), dtype=torch.long))


def test_generation_through_the_shared_path(bert, tiny_bert_tokenizer):
    tok, greedy = tiny_bert_tokenizer, GenerationSettings(do_sample=False, max_new_tokens=10)
    prompts = ["宝玉笑道", "黛玉", "王夫人问他们在"]
    batched = generate(bert, tok, prompts, greedy, batch_size=3)
    single = [generate(bert, tok, [p], greedy)[0] for p in prompts]
    assert [r.token_ids for r in batched] == [r.token_ids for r in single]
    assert [r.token_ids for r in batched] == [r.token_ids for r in generate(bert, tok, prompts, greedy)]
    # the adapter never caches, so the KV-cache switch cannot change its output
    no_cache = generate(
        bert, tok, prompts, GenerationSettings(do_sample=False, max_new_tokens=10, use_cache=False)
    )
    assert [r.token_ids for r in no_cache] == [r.token_ids for r in batched]
    banned = set(bert.generation_config.suppress_tokens)
    assert banned == {tok.pad_token_id, tok.cls_token_id, tok.mask_token_id, tok.unk_token_id}
    sampled = generate(
        bert, tok, prompts * 8, GenerationSettings(max_new_tokens=10, top_k=0, temperature=2.0)
    )
    assert not banned & {t for r in sampled for t in r.token_ids}
    settings = GenerationSettings(seed=5, max_new_tokens=10)
    assert "".join(stream(bert, tok, "宝玉", settings)) == generate(bert, tok, ["宝玉"], settings)[0].text


def test_bert_tokenizer_on_the_real_vocab(shared_data, tmp_path):
    tok = bert_tokenizer(shared_data / "tokenizers/bert-base-chinese")
    assert len(tok) == 21128 and (tok.eos_token, tok.bos_token) == ("[SEP]", "[CLS]")
    text = "宝玉笑道：“你们来了。”Hello world"
    tokens = tok.convert_ids_to_tokens(ids(tok, text))
    assert "[UNK]" not in tokens and tokens[5] == "＂"  # “ maps to a vocab entry, not [UNK]
    assert tok.decode(ids(tok, text)) == "宝玉笑道：＂你们来了。＂hello world"  # no spaces around CJK
    tok.save_pretrained(tmp_path)
    assert autotokenizer_roundtrip_ok(tok, "bert_next_token")
    assert AutoTokenizer.from_pretrained(tmp_path).decode(ids(tok, text)) == tok.decode(ids(tok, text))
    assert bert_tokenizer(tmp_path)(text)["input_ids"] == tok(text)["input_ids"]  # a saved dir reloads as is
    with pytest.raises(ValueError, match="no vocab.txt"):
        bert_tokenizer(tmp_path / "nowhere")


def test_served_through_the_openai_api_unchanged(bert, tiny_bert_tokenizer):
    import openai

    from mini_lm.serving import create_app, serve_in_thread

    tok, prompts = (
        tiny_bert_tokenizer,
        ["宝玉笑道：你们来了。黛玉听了", "凤姐"],
    )  # 14 tokens > the 8-token window
    with serve_in_thread(create_app(bert, tok, "bert")) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
        # 14 + 20 tokens outgrow the 16 positions: fine, the window slides (no context-length 400)
        reply = client.completions.create(model="bert", prompt=prompts, temperature=0, max_tokens=20)
        streamed = "".join(
            c.choices[0].text
            for c in client.completions.create(
                model="bert", prompt=prompts[0], temperature=0, max_tokens=20, stream=True
            )
        )
    expected = generate(bert, tok, prompts, GenerationSettings(do_sample=False, max_new_tokens=20))
    assert [c.text for c in reply.choices] == [r.text for r in expected]
    assert streamed == expected[0].text
