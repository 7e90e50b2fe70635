"""ONNX copies of a sentence-embedding model's transformer, fp32 and dynamically quantized int8,
exported once on first use into a per-user cache and loaded from there afterwards, offline.

Why not sentence-transformers' own ONNX backend (`SentenceTransformer(..., backend="onnx")` and
`export_dynamic_quantized_onnx_model`): it runs through Optimum, and optimum-onnx (0.1.0, the
newest release) requires transformers < 4.58 while sentence-transformers 6 requires
transformers ≥ 5, so the two cannot be installed together. The same steps are done here with
the libraries Optimum itself calls: `torch.onnx.export` for the graph, onnxruntime's transformer
optimizer for the fused attention, layer-norm and GELU kernels, and onnxruntime's
`quantize_dynamic` with the settings of Optimum's CPU presets (`cpu.int8_target`).

Cache: `<cache>/<key>/model.onnx` and `model_qint8_<target>.onnx`, where the key hashes the
transformer's weights and configuration and this module's export recipe, so another model, other
weights or a changed recipe get a folder of their own. Every file is written under a temporary
name and renamed into place, so two workers exporting at once, or one killed mid-export, never
leave a broken file: the loser of a race renames an identical file over the winner's.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Bump when the export changes what the files hold, so that caches of the old recipe are not used.
RECIPE = 1
# The inputs a BERT-like transformer takes, in the order they are exported.
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "last_hidden_state"
# Optimum's `AutoQuantizationConfig` presets, dynamic (is_static=False), as sentence-transformers
# calls them: per-channel weights, full range; unsigned weights on AVX2 only, where signed
# weights can saturate the u8 × s8 instructions.
_SIGNED_WEIGHTS = {"arm64": True, "avx512_vnni": True, "avx512": True, "avx2": False}
# onnxruntime's transformer optimizer knows these architectures' attention and layer-norm patterns.
_FUSABLE = {"bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "distilbert": "bert", "mpnet": "bert"}


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/ftm/models, or ~/.cache/ftm/models."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ftm" / "models"


def onnx_file(model: Any, precision: str, target: str, cache_dir: Path) -> Path:
    """The ONNX file of `model`'s transformer (a loaded SentenceTransformer) in `precision` ("fp32"
    or "int8", quantized for `target`), exported into `cache_dir` first if it is not there."""
    transformer = model[0]
    folder = cache_dir / _key(transformer)
    fp32 = folder / "model.onnx"
    if not fp32.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        with _written(fp32) as temporary:
            _export(transformer, model.tokenizer, temporary)
        _describe(folder, transformer)
    if precision == "fp32":
        return fp32
    if precision != "int8":
        raise ValueError(f"no ONNX export for precision {precision!r}")
    quantized = folder / f"model_qint8_{target}.onnx"
    if not quantized.is_file():
        with _written(quantized) as temporary:
            _quantize(fp32, temporary, target)
    return quantized


def _key(transformer: Any) -> str:
    """A hash of the transformer's configuration, its weights and the recipe."""
    digest = hashlib.sha256(f"ftm-onnx-export {RECIPE}\n".encode())
    config = transformer.auto_model.config
    digest.update(json.dumps(config.to_dict(), sort_keys=True, default=str).encode())
    for name, tensor in sorted(transformer.auto_model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:20]


def _describe(folder: Path, transformer: Any) -> None:
    """A note of what the folder holds, for whoever finds the cache."""
    config = transformer.auto_model.config
    note = {"recipe": RECIPE, "model_type": config.model_type, "name_or_path": config.name_or_path}
    with contextlib.suppress(OSError), _written(folder / "source.json") as temporary:
        temporary.write_text(json.dumps(note, indent=2) + "\n")


@contextlib.contextmanager
def _written(path: Path) -> Iterator[Path]:
    """A temporary path beside `path`, renamed onto it when the block ends without an error."""
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _export(transformer: Any, tokenizer: Any, path: Path) -> None:
    import torch

    # A copy, so that the loaded model keeps its own attention implementation. Eager attention
    # exports as plain matrix products and a softmax, the pattern onnxruntime fuses into its
    # Attention kernel (the SDPA export does not fuse, and runs about 10 % slower).
    model = copy.deepcopy(transformer.auto_model).eval()
    model.set_attn_implementation("eager")
    names = [n for n in INPUT_NAMES if n in getattr(tokenizer, "model_input_names", INPUT_NAMES)]
    sample = tokenizer(["A sentence to trace the model with.", "Another."], padding=True, return_tensors="pt")

    class Hidden(torch.nn.Module):
        """The transformer's token embeddings from positional inputs, as ONNX has them."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.model(**dict(zip(names, inputs, strict=True))).last_hidden_state

    axes = {name: {0: "batch", 1: "tokens"} for name in [*names, OUTPUT_NAME]}
    raw = path.with_name(path.name + ".raw")
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes about Python ints in the mask code
            # The TorchScript exporter: the dynamo one needs onnxscript, one more dependency, and
            # its graph does not match onnxruntime's fusion patterns either.
            torch.onnx.export(
                Hidden(),
                tuple(sample[name] for name in names),
                str(raw),
                dynamo=False,
                input_names=names,
                output_names=[OUTPUT_NAME],
                dynamic_axes=axes,
                opset_version=17,
            )
        _optimize(raw, path, model.config)
    finally:
        raw.unlink(missing_ok=True)


def _optimize(source: Path, path: Path, config: Any) -> None:
    """Fuses attention, layer norms and GELU where onnxruntime knows the architecture."""
    model_type = _FUSABLE.get(config.model_type)
    if model_type is None:
        os.replace(source, path)
        return
    from onnxruntime.transformers.optimizer import optimize_model

    with _quiet():
        optimized = optimize_model(
            str(source),
            model_type=model_type,
            num_heads=config.num_attention_heads,
            hidden_size=config.hidden_size,
            opt_level=1,
        )
        optimized.save_model_to_file(str(path))


def _quantize(source: Path, path: Path, target: str) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    with _quiet():
        quantize_dynamic(
            str(source),
            str(path),
            op_types_to_quantize=list(IntegerOpsRegistry),
            per_channel=True,
            reduce_range=False,
            weight_type=QuantType.QInt8 if _SIGNED_WEIGHTS[target] else QuantType.QUInt8,
            # Fused nodes (Attention, SkipLayerNormalization) are of onnxruntime's own domain,
            # which ONNX shape inference does not know; their outputs are float.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime's tools log advice through the root logger (which would also give it a stderr
    handler for good); the library prints nothing, so both are held back while they run."""
    root = logging.getLogger()
    held = logging.NullHandler()
    root.addHandler(held)  # logging.warning() adds a stderr handler only to a root without any
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)
        root.removeHandler(held)
