"""The generator's model: one of the catalogue's (ragplane.models.GENERATORS, chosen by
name, converted once into the state dir), or any Hugging Face folder a platform team
mounts. Hashed either way."""

from __future__ import annotations

import json
from pathlib import Path

from ragplane.errors import ConfigError
from ragplane.models import GENERATORS, QWEN_05B, ModelPin, catalogue_model

MODEL_VARIABLE = "RAGPLANE_GENERATOR_MODEL"
MODEL_PATH_VARIABLE = "RAGPLANE_GENERATOR_MODEL_PATH"
# The catalogue model `ragplane up`, `make demo` and the chart run unless told otherwise:
# chosen by the measurements in docs/models.md.
DEFAULT_MODEL = QWEN_05B.name
MODEL_NAMES = tuple(GENERATORS)
# The KV cache is sized to hold this many sequences of the full context length.
KV_CACHE_SEQUENCES = 8


def model_pin(
    path: str, model_id: str = "", revision: str = "", name: str = DEFAULT_MODEL
) -> ModelPin:
    """The folder at `path` (RAGPLANE_GENERATOR_MODEL_PATH), reported as model_id and
    revision (default: the folder's name, "local"); its weights are hashed, not pinned.
    No path: the catalogue model `name` (RAGPLANE_GENERATOR_MODEL)."""
    if not path:
        return catalogue_model(name, MODEL_VARIABLE).pin
    return ModelPin(
        id=model_id,
        revision=revision,
        weights_sha256="",
        # Absolute, so a folder named "hub" or "package" is still a folder.
        source=str(Path(path).expanduser().absolute()),
        source_variable=MODEL_PATH_VARIABLE,
    )


def kv_cache_bytes(folder: Path, max_model_len: int, sequences: int = KV_CACHE_SEQUENCES) -> int:
    """KV cache for `sequences` full-length sequences of the model in `folder`, in bfloat16:
    keys and values of every layer's key-value heads. A 1.5B model needs twice the cache
    per token of a 135M one, so one fixed size fits neither."""
    try:
        config = json.loads((folder / "config.json").read_text())
        layers = int(config["num_hidden_layers"])
        heads = int(config.get("num_attention_heads") or 1)
        kv_heads = int(config.get("num_key_value_heads") or heads)
        head_dim = int(config.get("head_dim") or config["hidden_size"] // heads)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{folder}/config.json does not say the model's shape ({exc!r}); set "
            "RAGPLANE_GENERATOR_KV_CACHE_BYTES"
        ) from None
    per_token = 2 * layers * kv_heads * head_dim * 2
    return per_token * max_model_len * sequences
