r"""The forward pass of :class:`qlib.MiniLM` (not part of the flat API): the kernels and the batching.

:mod:`qlib.models.minilm` holds the model (its tensors, names, and the methods
``encode``, ``trace``, ``with_params``); this module holds what runs it, as
plain functions of the tensors and the configuration:

- :func:`minilm_linear_names` and the exact GELU :func:`gelu` (both re-exported
  by :mod:`qlib.models.minilm`, and so by ``qlib``);
- the LayerNorm, the input checks of ``encode`` (:func:`check_sentences`,
  :func:`act_quantizers`) and the BLAS thread limit of attention;
- :func:`fuse_qkv` (query, key and value as one product), :func:`forward_batch`
  (the embeddings of one batch of token ids, optionally recording activations)
  and :func:`run_batches` (sentences sorted by length, batched, and the recorded
  rows put back in the order of the sentences).

See :mod:`qlib.models.minilm` for the network and its conventions.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence

import numpy as np

from qlib.core.validation import as_float_array, check_int

__all__: list[str] = []

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


def gelu_inplace(a: np.ndarray) -> np.ndarray:
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
    return gelu_inplace(np.array(arr, order="C"))


_BLAS_CONTROLLER: list = []  # threadpoolctl's controller, made on first use (an empty list: not yet)


def one_blas_thread():
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


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    """LayerNorm over the last axis, in float32, as a new array."""
    xc = x - x.mean(axis=-1, keepdims=True)
    var = np.mean(xc * xc, axis=-1, keepdims=True)
    var += eps
    np.sqrt(var, out=var)
    xc /= var
    xc *= weight
    xc += bias
    return xc


def check_sentences(sentences, name: str = "sentences") -> list[str]:
    """``sentences`` as a non-empty list of str; ``TypeError``/``ValueError`` naming ``name`` otherwise."""
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


def act_quantizers(act_quant, names: list[str]) -> dict:
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


def quantized_input(q, x: np.ndarray, name: str) -> np.ndarray:
    """``q(x)`` for the input ``x`` of the linear layer ``name``, checked for shape, as float32."""
    out = np.asarray(q(x))
    if out.shape != x.shape:
        raise ValueError(f"act_quant for {name!r} must return an array of shape {x.shape}, got {out.shape}")
    return out.astype(np.float32, copy=False)


def linear(params: Mapping, x: np.ndarray, name: str, quantizers: dict) -> np.ndarray:
    """``x W^T + b`` of the linear layer ``name`` (its input quantized first if ``quantizers`` has it)."""
    q = quantizers.get(name)
    if q is not None:
        x = quantized_input(q, x, name)
    y = x @ params[name + ".weight"].T
    y += params[name + ".bias"]
    return y


def fuse_qkv(params: Mapping, num_layers: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per encoder layer, the read-only ``(3 d, d)`` weight and ``(3 d,)`` bias of query, key and value."""
    fused = []
    for i in range(num_layers):
        names = [f"encoder.layer.{i}.attention.self.{k}" for k in ("query", "key", "value")]
        w = np.concatenate([params[n + ".weight"] for n in names], axis=0)
        b = np.concatenate([params[n + ".bias"] for n in names])
        w.setflags(write=False)
        b.setflags(write=False)
        fused.append((w, b))
    return fused


def forward_batch(params: Mapping, config: Mapping, fused_qkv: list, ids: list[np.ndarray], quantizers: dict,
                  capture: dict | None) -> np.ndarray:
    """The embeddings ``(len(ids), d)`` of one batch; ``capture`` collects activations if given.

    ``capture`` (a dict) receives, for each LayerNorm name and for the linear
    layers whose input is not a LayerNorm output (``attention.output.dense``
    and ``output.dense``), a list with one ``(tokens, features)`` array per batch.
    """
    c, p = config, params
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
    x = layer_norm(x, p["embeddings.LayerNorm.weight"], p["embeddings.LayerNorm.bias"], eps)
    keep("embeddings.LayerNorm", x)
    for i in range(c["num_hidden_layers"]):
        pre = f"encoder.layer.{i}."
        # self-attention: query, key and value in one product when they see the same input
        qkv_names = [pre + "attention.self." + k for k in ("query", "key", "value")]
        fq = [quantizers.get(n) for n in qkv_names]
        w_qkv, b_qkv = fused_qkv[i]
        if fq[0] is fq[1] is fq[2]:
            xin = x if fq[0] is None else quantized_input(fq[0], x, qkv_names[0])
            qkv = xin @ w_qkv.T
            qkv += b_qkv
        else:
            qkv = np.concatenate([linear(p, x, n, quantizers) for n in qkv_names], axis=1)
        if packed:
            grid = np.zeros((n_seq * width, 3 * d), dtype=np.float32)
            grid[slots] = qkv
        else:
            grid = qkv
        q, k, v = grid.reshape(n_seq, width, 3, heads, dh).transpose(2, 0, 3, 1, 4)
        with one_blas_thread():
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
        h = linear(p, ctx, pre + "attention.output.dense", quantizers)
        h += x
        x = layer_norm(h, p[pre + "attention.output.LayerNorm.weight"],
                       p[pre + "attention.output.LayerNorm.bias"], eps)
        keep(pre + "attention.output.LayerNorm", x)
        # feed-forward
        a = gelu_inplace(linear(p, x, pre + "intermediate.dense", quantizers))
        keep(pre + "output.dense", a)
        h = linear(p, a, pre + "output.dense", quantizers)
        h += x
        x = layer_norm(h, p[pre + "output.LayerNorm.weight"], p[pre + "output.LayerNorm.bias"], eps)
        keep(pre + "output.LayerNorm", x)
    # mean pooling over each sentence's tokens, then unit length
    pooled = np.add.reduceat(x, starts, axis=0)
    pooled /= lengths[:, None].astype(np.float32)
    norm = np.sqrt(np.sum(pooled * pooled, axis=1, keepdims=True))
    pooled /= np.maximum(norm, np.float32(1e-12))
    return pooled


def run_batches(params: Mapping, config: Mapping, fused_qkv: list, ids: list[np.ndarray], batch_size: int,
                quantizers: dict, capture: bool):
    """``(embeddings, captured or None, lengths)`` of the token ids ``ids``, in batches of ``batch_size``.

    The sentences are batched longest first (little padding in attention); the
    embeddings come back in the order of ``ids``, and so do the rows of every
    captured array (one read-only ``(tokens, features)`` array per name of
    :func:`forward_batch`'s ``capture``).
    """
    lengths = np.array([len(t) for t in ids], dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")  # longest first: little padding in attention
    emb = np.empty((len(ids), int(config["hidden_size"])), dtype=np.float32)
    pieces: dict[str, list] = {}
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        emb[batch] = forward_batch(params, config, fused_qkv, [ids[j] for j in batch], quantizers,
                                   pieces if capture else None)
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
