"""The generator as a product backend sees it: real processes on free ports, driven over
gRPC. One generator runs vLLM in-process; a second one talks to vLLM's own
OpenAI-compatible server, started from the same package on the same converted model."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest

from ragplane.channels import open_channel
from ragplane.errors import ConfigError
from ragplane.files import sha256_file
from ragplane.generator import openai_server
from ragplane.generator.model import model_pin
from ragplane.generator.server import GeneratorSettings
from ragplane.models import (
    MANIFEST,
    SMOLLM2,
    WEIGHTS,
    converted_smollm2,
    resolve,
    verify_converted,
)
from ragplane.ops.processes import Process, free_port, serving, start_process
from ragplane.v1 import common_pb2, generator_pb2, generator_pb2_grpc

ROOT = Path(__file__).resolve().parents[3]
START_S = 600  # vLLM takes 25-60 s on 2 idle cores, minutes when others share them
T = 120  # deadline of one call
CONTEXT = 2048
ChatMessage = generator_pb2.ChatMessage
GROUNDED = [
    ChatMessage(role="system", content="Answer the question using only the context."),
    ChatMessage(
        role="user",
        content="Context: The deploy freeze starts Fridays at 15:00 UTC.\n\n"
        "Question: When does the deploy freeze start?",
    ),
]
# Runs to max_tokens: 1500 tokens take about a minute on CPU.
LONG = [ChatMessage(role="user", content="Write a very long story about a lighthouse keeper.")]


def shared_state_dir() -> Path:
    """Survives test runs, so the model is converted once (RAGPLANE_TEST_STATE_DIR)."""
    default = ROOT / ".ragplane" / "test-state"
    path = Path(os.environ.get("RAGPLANE_TEST_STATE_DIR") or default)
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Generator:
    """A running generator service and where to scrape its model server's metrics."""

    stub: generator_pb2_grpc.GeneratorServiceStub
    metrics_url: str


def generator_env(state: Path, grpc_port: int, metrics_port: int, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "RAGPLANE_STATE_DIR": str(state),
        "RAGPLANE_GENERATOR_ADDR": f"127.0.0.1:{grpc_port}",
        "RAGPLANE_GENERATOR_METRICS_ADDR": f"127.0.0.1:{metrics_port}",
        # These tests compare against SmolLM2 converted here (converted_smollm2), not the
        # catalogue's default model.
        "RAGPLANE_GENERATOR_MODEL": "smollm2-135m",
        **extra,
    }


def start_generator(env: dict[str, str], log: Path) -> Process:
    return start_process(
        [sys.executable, "-m", "ragplane.generator.server"],
        log,
        env=env,
        name="generator",
        detach=True,
    )


async def http_ok(url: str) -> bool:
    try:
        async with httpx.AsyncClient() as client:
            return (await client.get(url, timeout=2)).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def state() -> Path:
    return shared_state_dir()


@pytest.fixture(scope="module")
async def stacks(
    state: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[dict[str, Generator]]:
    """Both backends. The in-process generator and vLLM's OpenAI server start together;
    the OpenAI-backed generator follows once its server answers."""
    logs = tmp_path_factory.mktemp("generator-logs")
    started: list[Process] = []
    # Each port is picked right before its process starts: minutes later it may be taken.
    try:
        inproc_port, inproc_metrics = free_port(), free_port()
        inproc = start_generator(
            generator_env(state, inproc_port, inproc_metrics), logs / "inprocess.log"
        )
        started.append(inproc)
        folder = await asyncio.to_thread(converted_smollm2, state)
        http = f"http://127.0.0.1:{(http_port := free_port())}"
        server_log = logs / "vllm-server.log"
        server = Process(
            openai_server.start(folder, http_port, state, server_log), server_log, "vLLM server"
        )
        started.append(server)
        inproc_addr = f"127.0.0.1:{inproc_port}"
        await asyncio.gather(
            inproc.wait_until(lambda: serving(inproc_addr), START_S),
            server.wait_until(lambda: http_ok(f"{http}/health"), START_S),
        )
        extra = {
            "RAGPLANE_GENERATOR_BACKEND": "openai",
            "RAGPLANE_GENERATOR_OPENAI_URL": http,
            "RAGPLANE_GENERATOR_OPENAI_MODEL": SMOLLM2.id,
        }
        openai_port = free_port()
        env = generator_env(state, openai_port, 0, **extra)  # its vLLM metrics are the server's
        openai = start_generator(env, logs / "openai-generator.log")
        started.append(openai)
        openai_addr = f"127.0.0.1:{openai_port}"
        await openai.wait_until(lambda: serving(openai_addr), START_S)
        async with (
            open_channel(inproc_addr) as inproc_channel,
            open_channel(openai_addr) as openai_channel,
        ):
            yield {
                "vllm-inprocess": Generator(
                    generator_pb2_grpc.GeneratorServiceStub(inproc_channel),
                    f"http://127.0.0.1:{inproc_metrics}/metrics",
                ),
                "openai": Generator(
                    generator_pb2_grpc.GeneratorServiceStub(openai_channel), f"{http}/metrics"
                ),
            }
    finally:
        for proc in reversed(started):
            await asyncio.to_thread(proc.stop, 30)


@pytest.fixture(params=["vllm-inprocess", "openai"])
def gen(request: pytest.FixtureRequest, stacks: dict[str, Generator]) -> Generator:
    return stacks[request.param]


async def info(stub) -> generator_pb2.GeneratorServiceInfoResponse:
    return await stub.Info(generator_pb2.GeneratorServiceInfoRequest(), timeout=T)


async def generate(stub, messages=GROUNDED, **fields) -> tuple[list[str], common_pb2.Usage, object]:
    """All deltas and the finished event; asserts the stream's shape on the way."""
    deltas, finished = [], None
    request = generator_pb2.GenerateRequest(messages=messages, **fields)
    async for event in stub.Generate(request, timeout=T):
        assert finished is None, "nothing may follow the finished event"
        if event.HasField("finished"):
            finished = event.finished
        else:
            deltas.append(event.delta)
    assert finished is not None, "the stream ended without a finished event"
    return deltas, finished.usage, finished


async def running_in_model_server(metrics_url: str) -> float:
    """vLLM's own count of requests it is working on (its Prometheus gauge)."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(metrics_url, timeout=10)).text
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("vllm:num_requests_running{")
    ]
    assert values, f"no vllm:num_requests_running at {metrics_url}"
    return sum(values)


# --- Info and token counting -------------------------------------------------------------


async def test_info_names_the_model_and_its_context(stacks, state):
    folder = await asyncio.to_thread(converted_smollm2, state)
    local = await info(stacks["vllm-inprocess"].stub)
    assert (local.model.id, local.model.revision, local.backend) == (
        SMOLLM2.id,
        SMOLLM2.revision,
        "vllm-inprocess",
    )
    assert local.model.weights_sha256 == folder.weights_sha256
    assert local.max_model_len == CONTEXT
    assert local.running_requests == 0
    remote = await info(stacks["openai"].stub)
    assert (remote.model.id, remote.backend, remote.max_model_len) == (
        SMOLLM2.id,
        "openai",
        CONTEXT,
    )


async def test_counts_texts_and_the_chat_prompt_with_its_template(stacks, state):
    from transformers import AutoTokenizer

    folder = (await asyncio.to_thread(converted_smollm2, state)).path
    tokenizer = await asyncio.to_thread(AutoTokenizer.from_pretrained, str(folder))
    messages = [{"role": m.role, "content": m.content} for m in GROUNDED]
    expected = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    texts = ["hello world", "", "The deploy freeze starts Fridays at 15:00 UTC."]
    request = generator_pb2.CountPromptTokensRequest(texts=texts, messages=GROUNDED)
    for stack in stacks.values():
        reply = await stack.stub.CountPromptTokens(request, timeout=T)
        assert list(reply.token_counts) == [
            len(tokenizer.encode(t, add_special_tokens=False)) for t in texts
        ]
        assert reply.token_counts[0] == 2 and reply.token_counts[1] == 0
        # The template's role markers and the assistant prompt count too.
        assert reply.messages_tokens == len(expected) > sum(reply.token_counts)
        assert reply.max_model_len == CONTEXT


# --- Generate ---------------------------------------------------------------------------


async def test_grounded_answer_streams_deltas_then_one_finished_event(gen):
    count = await gen.stub.CountPromptTokens(
        generator_pb2.CountPromptTokensRequest(messages=GROUNDED), timeout=T
    )
    deltas, usage, finished = await generate(gen.stub, max_tokens=60, temperature=0)
    answer = "".join(deltas)
    assert len(deltas) >= 3 and answer.strip()
    assert "15:00" in answer or "Friday" in answer, answer
    assert finished.finish_reason == common_pb2.FINISH_REASON_STOP
    assert usage.prompt_tokens == count.messages_tokens
    assert 0 < usage.completion_tokens < 60
    assert 0 < finished.time_to_first_token_ms <= finished.timing.compute_ms


async def test_both_backends_give_the_same_greedy_answer(stacks):
    local = await generate(stacks["vllm-inprocess"].stub, max_tokens=40)
    remote = await generate(stacks["openai"].stub, max_tokens=40)
    assert "".join(remote[0]) == "".join(local[0])
    assert remote[1] == local[1]


async def test_max_tokens_ends_the_answer_with_length(gen):
    _, usage, finished = await generate(gen.stub, max_tokens=3)
    assert finished.finish_reason == common_pb2.FINISH_REASON_LENGTH
    assert usage.completion_tokens == 3


async def test_stop_string_ends_the_answer(gen):
    deltas, _, finished = await generate(gen.stub, max_tokens=60, stop=["15"])
    assert finished.finish_reason == common_pb2.FINISH_REASON_STOP
    assert "15" not in "".join(deltas)


@pytest.mark.parametrize(
    ("fields", "phrase"),
    [
        ({"messages": []}, "messages is empty"),
        ({"messages": [ChatMessage(role="robot", content="hi")]}, "messages[0].role is 'robot'"),
        ({"messages": [ChatMessage(role="user", content="  ")]}, "messages[0].content is empty"),
        ({"messages": GROUNDED, "temperature": -0.5}, "temperature is -0.5"),
        ({"messages": GROUNDED, "top_p": 1.5}, "top_p is 1.5"),
        ({"messages": GROUNDED, "max_tokens": 2040}, "context of 2048 tokens"),
    ],
)
async def test_bad_requests_are_invalid_arguments(gen, fields, phrase):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await generate(gen.stub, **fields)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert phrase in err.value.details()


async def test_over_long_request_says_the_numbers(gen):
    count = await gen.stub.CountPromptTokens(
        generator_pb2.CountPromptTokensRequest(messages=GROUNDED), timeout=T
    )
    max_tokens = CONTEXT - count.messages_tokens + 1
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await generate(gen.stub, max_tokens=max_tokens)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == (
        f"the prompt has {count.messages_tokens} tokens and max_tokens is {max_tokens}: "
        f"{CONTEXT + 1} is over the model's context of {CONTEXT} tokens"
    )
    # One token less fits.
    _, usage, _ = await generate(gen.stub, max_tokens=max_tokens - 1, stop=["."])
    assert usage.prompt_tokens == count.messages_tokens


async def test_count_refuses_bad_messages(gen):
    request = generator_pb2.CountPromptTokensRequest(messages=[ChatMessage(role="tool")])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await gen.stub.CountPromptTokens(request, timeout=T)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# --- Cancellation -----------------------------------------------------------------------


async def wait_idle(gen: Generator, seconds: float = 10) -> tuple[int, float]:
    deadline = time.monotonic() + seconds
    while True:
        ours = (await info(gen.stub)).running_requests
        theirs = await running_in_model_server(gen.metrics_url)
        if (ours, theirs) == (0, 0) or time.monotonic() > deadline:
            return ours, theirs
        await asyncio.sleep(0.2)


async def test_cancelled_stream_aborts_the_generation(gen):
    call = gen.stub.Generate(
        generator_pb2.GenerateRequest(messages=LONG, max_tokens=1500), timeout=T
    )
    async for event in call:
        assert event.delta
        break
    assert (await info(gen.stub)).running_requests == 1
    assert await running_in_model_server(gen.metrics_url) == 1
    call.cancel()
    # Without the abort vLLM would keep generating for about a minute.
    assert await wait_idle(gen) == (0, 0)
    _, usage, _ = await generate(gen.stub, max_tokens=5)  # and it still serves
    assert usage.completion_tokens == 5


async def test_passed_deadline_aborts_the_generation(gen):
    request = generator_pb2.GenerateRequest(messages=LONG, max_tokens=1500)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in gen.stub.Generate(request, timeout=2):
            pass
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert await wait_idle(gen) == (0, 0)


async def test_generations_beyond_the_batch_queue_in_the_engine(gen):
    # No fixed concurrency limit: vLLM's scheduler queues what its batch cannot run
    # (tests/unit/generator/test_queue.py: refused only over RAGPLANE_GENERATOR_MAX_QUEUED).
    results = await asyncio.gather(*(generate(gen.stub, max_tokens=4) for _ in range(12)))
    assert all(0 < usage.completion_tokens <= 4 for _, usage, _ in results)
    reply = await info(gen.stub)
    assert (reply.running_requests, reply.queued_requests) == (0, 0)


# --- Model folder and settings (no services) ---------------------------------------------


def test_converted_folder_verifies_against_its_manifest(state: Path):
    folder = converted_smollm2(state)
    assert (folder.id, folder.revision) == (SMOLLM2.id, SMOLLM2.revision)
    assert verify_converted(folder.path).weights_sha256 == sha256_file(folder.path / WEIGHTS)
    for name in ("config.json", "generation_config.json", "tokenizer.json", MANIFEST):
        assert (folder.path / name).is_file(), name
    assert "<|im_start|>" in (folder.path / "chat_template.jinja").read_text()
    # The same folder mounted as a platform team would: same weights hash.
    mounted = resolve(model_pin(str(folder.path), "team/smollm2"))
    assert (mounted.id, mounted.weights_sha256) == ("team/smollm2", folder.weights_sha256)


def test_corrupted_weights_are_refused(state: Path, tmp_path: Path):
    source = converted_smollm2(state)
    copy = tmp_path / "models" / source.path.name
    shutil.copytree(source.path, copy)
    with (copy / WEIGHTS).open("r+b") as f:
        f.seek(1 << 20)
        byte = f.read(1)[0]
        f.seek(1 << 20)
        f.write(bytes([byte ^ 0x01]))
    with pytest.raises(ConfigError, match="does not match its manifest.*delete the folder"):
        converted_smollm2(tmp_path)


def test_bad_settings_name_their_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("RAGPLANE_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("RAGPLANE_GENERATOR_BACKEND", "tpu")
    with pytest.raises(ConfigError, match="RAGPLANE_GENERATOR_BACKEND"):
        GeneratorSettings.from_env()
    monkeypatch.setenv("RAGPLANE_GENERATOR_BACKEND", "openai")
    monkeypatch.setenv("RAGPLANE_GENERATOR_MAX_TOKENS", "0")
    with pytest.raises(ConfigError, match="RAGPLANE_GENERATOR_MAX_TOKENS"):
        GeneratorSettings.from_env()
    monkeypatch.delenv("RAGPLANE_GENERATOR_MAX_TOKENS")
    settings = GeneratorSettings.from_env()
    assert (settings.backend, settings.max_model_len, settings.default_max_tokens) == (
        "openai",
        2048,
        256,
    )
