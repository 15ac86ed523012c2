"""The generator over gRPC: vLLM in-process (from the stack) and the OpenAI-compatible
backend against vLLM's own OpenAI server started from the same package."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from ragplane import stack
from ragplane.errors import ConfigError
from ragplane.generator import openai_server
from ragplane.generator.backends import vllm_environment
from ragplane.generator.model import MODEL_ID, ensure_converted
from ragplane.v1 import common_pb2, generator_pb2, generator_pb2_grpc

from .conftest import free_port, shared_model_cache

pytestmark = pytest.mark.integration
T = 120
GROUNDED = [
    generator_pb2.ChatMessage(role="system", content="Answer the question using only the context."),
    generator_pb2.ChatMessage(
        role="user",
        content="Context:\n[1] The deploy freeze starts on Fridays at 15:00 UTC.\n\n"
        "Question: When does the deploy freeze start?",
    ),
]


async def generate(stub, messages=GROUNDED, **fields) -> tuple[str, generator_pb2.GenerateFinished]:
    text, finished = [], None
    async for event in stub.Generate(
        generator_pb2.GenerateRequest(messages=messages, **fields), timeout=T
    ):
        if event.HasField("finished"):
            assert finished is None
            finished = event.finished
        else:
            assert finished is None, "no delta after the finished event"
            text.append(event.delta)
    assert finished is not None
    return "".join(text), finished


@pytest.fixture(scope="module")
def inprocess(channels) -> generator_pb2_grpc.GeneratorServiceStub:
    return generator_pb2_grpc.GeneratorServiceStub(channels["generator"])


def spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def log_tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


async def wait_until(ready, proc: subprocess.Popen, log: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not await ready():
        if proc.poll() is not None:
            pytest.fail(f"{proc.args[:3]} exited:\n{log_tail(log)}")
        assert time.monotonic() < deadline, f"{proc.args[:3]} not ready:\n{log_tail(log)}"
        await asyncio.sleep(1)


@pytest.fixture(scope="module")
async def openai_backed(tmp_path_factory) -> generator_pb2_grpc.GeneratorServiceStub:
    """vLLM's OpenAI server on the converted model, and a generator that talks to it."""
    state = shared_model_cache()
    folder = await asyncio.to_thread(ensure_converted, state)
    logs = tmp_path_factory.mktemp("openai")
    env = {**os.environ, **vllm_environment(state)}
    http_port, grpc_port = free_port(), free_port()
    server = openai_server.start(folder, http_port, state, logs / "vllm.log")
    generator = None
    try:
        await openai_server.wait_healthy(f"http://127.0.0.1:{http_port}", server, logs / "vllm.log")
        generator = spawn(
            [sys.executable, "-m", "ragplane.generator.server"],
            {
                **env,
                "RAGPLANE_STATE_DIR": str(logs),
                "RAGPLANE_GENERATOR_ADDR": f"127.0.0.1:{grpc_port}",
                "RAGPLANE_GENERATOR_METRICS_ADDR": f"127.0.0.1:{free_port()}",
                "RAGPLANE_GENERATOR_BACKEND": "openai",
                "RAGPLANE_GENERATOR_OPENAI_URL": f"http://127.0.0.1:{http_port}",
                "RAGPLANE_GENERATOR_OPENAI_MODEL": MODEL_ID,
            },
            logs / "generator.log",
        )

        async def generator_serving() -> bool:
            return await stack.health_status(f"127.0.0.1:{grpc_port}") == "SERVING"

        await wait_until(generator_serving, generator, logs / "generator.log", 120)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            yield generator_pb2_grpc.GeneratorServiceStub(channel)
    finally:
        for proc in (generator, server):
            if proc is not None:
                stack.stop_process_tree(proc.pid, timeout=30)


async def test_info_names_the_model_and_its_context(inprocess):
    info = await inprocess.Info(generator_pb2.GeneratorServiceInfoRequest(), timeout=T)
    assert info.model_id == MODEL_ID
    assert info.backend == "vllm-inprocess"
    assert info.max_model_len == 2048
    assert len(info.weights_sha256) == 64


async def test_grounded_answer_streams_then_finishes(inprocess):
    text, finished = await generate(inprocess, max_tokens=40)
    assert "15:00" in text or "Friday" in text
    assert finished.finish_reason == common_pb2.FINISH_REASON_STOP
    assert finished.usage.prompt_tokens > 20 and finished.usage.completion_tokens > 0
    assert 0 < finished.time_to_first_token_ms <= finished.timing.compute_ms


async def test_max_tokens_ends_with_length(inprocess):
    _, finished = await generate(inprocess, max_tokens=3)
    assert finished.finish_reason == common_pb2.FINISH_REASON_LENGTH
    assert finished.usage.completion_tokens == 3


@pytest.mark.parametrize(
    ("request_", "phrase"),
    [
        (generator_pb2.GenerateRequest(), "messages is empty"),
        (
            generator_pb2.GenerateRequest(
                messages=[generator_pb2.ChatMessage(role="robot", content="x")]
            ),
            "role",
        ),
        (generator_pb2.GenerateRequest(messages=GROUNDED, temperature=-1), "temperature"),
        (generator_pb2.GenerateRequest(messages=GROUNDED, max_tokens=5000), "context of 2048"),
    ],
)
async def test_bad_requests_are_invalid_arguments(inprocess, request_, phrase):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in inprocess.Generate(request_, timeout=T):
            pass
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert phrase in err.value.details()


async def test_openai_backend_serves_the_same_model(inprocess, openai_backed):
    info = await openai_backed.Info(generator_pb2.GeneratorServiceInfoRequest(), timeout=T)
    assert (info.backend, info.model_id, info.max_model_len) == ("openai", MODEL_ID, 2048)
    request = generator_pb2.CountPromptTokensRequest(texts=["hello world"], messages=GROUNDED)
    here = await inprocess.CountPromptTokens(request, timeout=T)
    there = await openai_backed.CountPromptTokens(request, timeout=T)
    assert list(here.token_counts) == list(there.token_counts)
    assert here.messages_tokens == there.messages_tokens
    local_text, local = await generate(inprocess, max_tokens=30)
    remote_text, remote = await generate(openai_backed, max_tokens=30)
    assert remote.usage.prompt_tokens == local.usage.prompt_tokens
    assert remote_text == local_text  # greedy decoding of the same weights


async def test_cancelled_stream_aborts_the_generation(inprocess, openai_backed):
    for stub in (inprocess, openai_backed):
        call = stub.Generate(
            generator_pb2.GenerateRequest(messages=GROUNDED, max_tokens=1000), timeout=T
        )
        async for _ in call:
            break
        info = await stub.Info(generator_pb2.GeneratorServiceInfoRequest(), timeout=T)
        assert info.running_requests == 1
        call.cancel()
        for _ in range(50):
            info = await stub.Info(generator_pb2.GeneratorServiceInfoRequest(), timeout=T)
            if info.running_requests == 0:
                break
            await asyncio.sleep(0.1)
        assert info.running_requests == 0
        _, finished = await generate(stub, max_tokens=5)  # and it still serves
        assert finished.usage.completion_tokens == 5


def test_converted_model_with_tampered_weights_is_refused(tmp_path: Path):
    source = ensure_converted(shared_model_cache())
    copy = tmp_path / "models" / source.path.name
    shutil.copytree(source.path, copy)
    with (copy / "model.safetensors").open("r+b") as f:
        f.seek(4096)
        byte = f.read(1)
        f.seek(4096)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ConfigError, match="does not match its manifest"):
        ensure_converted(tmp_path)
