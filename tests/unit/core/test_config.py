"""Settings fail fast at start-up with a message naming the variable."""

from __future__ import annotations

import pytest

from ragplane.config import env_bool, env_choice, env_int
from ragplane.errors import ConfigError
from ragplane.gateway.server import GatewaySettings


def test_defaults_serve_the_one_machine_stack(monkeypatch, tmp_path):
    for name in ("RAGPLANE_GATEWAY_ADDR", "RAGPLANE_GATEWAY_EMBEDDER_TARGET"):
        monkeypatch.delenv(name, raising=False)
    # The one setting without a default: `ragplane up` names the keys file it made.
    monkeypatch.setenv("RAGPLANE_GATEWAY_API_KEYS_FILE", str(tmp_path / "keys.json"))
    settings = GatewaySettings.from_env()
    assert settings.address == "127.0.0.1:50050"
    assert settings.embedder_target == "127.0.0.1:50051"


@pytest.mark.parametrize(
    ("name", "value", "read"),
    [
        ("RAGPLANE_X_INT", "twelve", lambda: env_int("RAGPLANE_X_INT", 1)),
        ("RAGPLANE_X_INT", "0", lambda: env_int("RAGPLANE_X_INT", 1, minimum=1)),
        ("RAGPLANE_X_BOOL", "maybe", lambda: env_bool("RAGPLANE_X_BOOL", True)),
        ("RAGPLANE_X_MODE", "fuzzy", lambda: env_choice("RAGPLANE_X_MODE", "a", ("a", "b"))),
        (
            "RAGPLANE_GATEWAY_SEARCH_MODE",
            "fuzzy",
            GatewaySettings.from_env,
        ),
    ],
)
def test_bad_values_name_the_variable(monkeypatch, name, value, read):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        read()


def test_valid_values_are_parsed(monkeypatch):
    monkeypatch.setenv("RAGPLANE_X_INT", "42")
    monkeypatch.setenv("RAGPLANE_X_BOOL", "off")
    assert env_int("RAGPLANE_X_INT", 1) == 42
    assert env_bool("RAGPLANE_X_BOOL", True) is False


def test_fusion_depth_is_a_server_setting_requests_keep(monkeypatch):
    from ragplane.retriever.settings import RetrieverSettings
    from ragplane.retriever.validation import fusion as _fusion
    from ragplane.v1 import common_pb2

    monkeypatch.setenv("RAGPLANE_FUSION_DEPTH_FACTOR", "5")
    monkeypatch.setenv("RAGPLANE_FUSION_MIN_DEPTH", "50")
    default = RetrieverSettings.from_env().fusion
    assert (default.depth_factor, default.min_depth) == (5, 50)
    for method in (common_pb2.FUSION_METHOD_RRF, common_pb2.FUSION_METHOD_WEIGHTED):
        chosen = _fusion(common_pb2.Fusion(method=method), default)
        assert (chosen.depth_factor, chosen.min_depth) == (5, 50)
    monkeypatch.setenv("RAGPLANE_FUSION_DEPTH_FACTOR", "0")
    with pytest.raises(ConfigError, match="RAGPLANE_FUSION_DEPTH_FACTOR"):
        RetrieverSettings.from_env()


def test_a_stack_without_postgresql_runs_everything_but_the_jobs_store(tmp_path, monkeypatch):
    """`ragplane up` where PostgreSQL is not installed: Milvus Lite and the services, and
    no jobs DSN for the gateway (its job calls then say why they are off)."""
    from ragplane.ops import stack

    monkeypatch.setenv("RAGPLANE_POSTGRES_BIN_DIR", str(tmp_path / "no-postgres"))
    monkeypatch.setenv("PATH", str(tmp_path))
    found = stack.StackLayout(state_dir=tmp_path)
    assert found.stores() == ("milvus",)
    assert "RAGPLANE_GATEWAY_JOBS_DSN" not in found.service_env()
    forced = stack.StackLayout(state_dir=tmp_path, jobs_store=True)
    assert forced.stores() == ("milvus", "postgres")
    assert "RAGPLANE_GATEWAY_JOBS_DSN" in forced.service_env()
    assert stack.StackLayout.from_json(forced.to_json()) == forced
