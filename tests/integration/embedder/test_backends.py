"""The ONNX Runtime backend: the same vectors as torch, from an export made once into the
state dir and refused once altered."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from ragplane.embedder import backends
from ragplane.embedder.backends import ONNX, ONNX_FILE, TORCH, export_folder
from ragplane.embedder.model import EmbeddingModel
from ragplane.errors import ConfigError
from ragplane.files import sha256_file
from ragplane.models import MANIFEST, MINILM, resolve
from tests.support import shared_model_cache

# Lengths from one word to past a forward pass's padding, in passes of 2 texts.
TEXTS = [
    "vacuum",
    "How do I restore a database from a base backup and archived WAL files?",
    "Autovacuum reclaims the storage taken by dead tuples; " * 12,
    "Employees accrue paid leave monthly.",
    "Der Planer wählt einen Index-Scan, wenn die Selektivität hoch ist.",
]


@pytest.fixture(scope="module")
def state() -> Path:
    """The export survives test runs here, like the converted generator models."""
    return shared_model_cache()


@pytest.fixture(scope="module")
def loaded(state: Path) -> Iterator[tuple[EmbeddingModel, EmbeddingModel]]:
    # Passes on two workers, as on a 2-core CPU; the model sets torch's threads to one.
    threads = torch.get_num_threads()
    yield (
        EmbeddingModel(MINILM, "cpu", 2, TORCH, state, forward_workers=2),
        EmbeddingModel(MINILM, "cpu", 2, ONNX, state, forward_workers=2),
    )
    torch.set_num_threads(threads)


def test_passes_on_workers_embed_as_sentence_transformers_does(loaded):
    """Each text's vector, in the caller's order, whether the passes run on workers."""
    torch_model = loaded[0]
    texts = [*TEXTS, *reversed(TEXTS), TEXTS[1]]
    expected = torch_model.model.encode(texts, batch_size=2, normalize_embeddings=True)
    actual = torch_model.encode(texts)
    assert actual.shape == (len(texts), 384)
    assert np.sum(expected * actual, axis=1).min() >= 0.99999
    np.testing.assert_allclose(np.linalg.norm(actual, axis=1), 1.0, atol=1e-5)


def test_a_small_batch_is_split_between_the_workers(loaded, monkeypatch: pytest.MonkeyPatch):
    """Five texts with passes of 8 on two workers: passes of 3 and 2, the same vectors."""
    torch_model = loaded[0]
    passes: list[int] = []
    run_pass = torch_model._encode_pass
    monkeypatch.setattr(torch_model, "forward_batch_size", 8)
    monkeypatch.setattr(
        torch_model, "_encode_pass", lambda texts: passes.append(len(texts)) or run_pass(texts)
    )
    texts = list(TEXTS)
    expected = torch_model.model.encode(texts, batch_size=8, normalize_embeddings=True)
    actual = torch_model.encode(texts)
    assert sorted(passes) == [2, 3]
    assert np.sum(expected * actual, axis=1).min() >= 0.99999


def test_onnx_embeds_as_torch_does(loaded):
    torch_model, onnx_model = loaded
    assert (torch_model.backend, onnx_model.backend) == (TORCH, ONNX)
    expected, actual = torch_model.encode(TEXTS), onnx_model.encode(TEXTS)
    assert actual.shape == expected.shape == (len(TEXTS), 384)
    cosines = np.sum(expected * actual, axis=1) / (
        np.linalg.norm(expected, axis=1) * np.linalg.norm(actual, axis=1)
    )
    assert cosines.min() >= 0.9999
    # The same model to a collection: an index made on one backend serves the other.
    assert onnx_model.identity == torch_model.identity


def test_the_export_is_made_once_and_reused(loaded, state: Path, monkeypatch):
    folder = export_folder(resolve(MINILM), state)
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["weights_sha256"] == sha256_file(folder / ONNX_FILE)
    assert manifest["source_weights_sha256"] == MINILM.weights_sha256
    made = (folder / ONNX_FILE).stat().st_mtime_ns

    def export_again(model, out):
        raise AssertionError("exported again")

    monkeypatch.setattr(backends, "_export", export_again)
    again = EmbeddingModel(MINILM, "cpu", 2, ONNX, state)
    assert (folder / ONNX_FILE).stat().st_mtime_ns == made
    np.testing.assert_allclose(again.encode(TEXTS[:2]), loaded[1].encode(TEXTS[:2]), atol=1e-6)


def test_an_altered_export_is_refused(loaded, state: Path, tmp_path: Path):
    folder = export_folder(resolve(MINILM), state)
    copy = export_folder(resolve(MINILM), tmp_path)
    shutil.copytree(folder, copy)
    data = bytearray((copy / ONNX_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF  # one weight's byte
    (copy / ONNX_FILE).write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="does not match its manifest.*delete the folder"):
        EmbeddingModel(MINILM, "cpu", 2, ONNX, tmp_path)
