"""The backend factory, server capabilities, and the ChatOpenAI conventions, against tests/fault_server.py."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest
from langchain_core.messages import HumanMessage

from adaptive_ttc import AdaptiveChatModel, BackendTimeoutError, ConfigurationError
from adaptive_ttc.backends import FakeBackend
from adaptive_ttc.backends._wire import OPENAI_CAPABILITIES, VLLM_CAPABILITIES
from adaptive_ttc.backends.factory import BackendSettings, backend_provider, open_backend
from adaptive_ttc.backends.openai_compat import OpenAICompatibleBackend
from adaptive_ttc.cli import main
from adaptive_ttc.errors import InvalidRequestError
from adaptive_ttc.types import GenerationRequest, Message
from tests.fault_server import Fault, FaultServer

pytestmark = pytest.mark.faults

QUESTION = (Message("user", "What is 2+2?"),)
LONG = " ".join(["word"] * 200)  # a long scripted answer: dripped, it takes far longer than any timeout below


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    with FaultServer() as fs:
        yield fs


@pytest.fixture
def fs(server: FaultServer) -> FaultServer:
    server.reset()
    server.app.answer = lambda body, index: "The answer is 4."
    return server


def bodies(fs: FaultServer) -> list[dict[str, object]]:
    return [r.body for r in fs.received if r.path.endswith("completions") and isinstance(r.body, dict)]


async def test_a_url_opens_a_vllm_backend_with_the_only_served_model(fs: FaultServer) -> None:
    backend = await open_backend(fs.url)
    assert isinstance(backend, OpenAICompatibleBackend)
    assert backend.model == "fault-model"
    assert backend.capabilities == VLLM_CAPABILITIES
    assert backend_provider(backend) == "vllm"
    await backend.aclose()


async def test_a_backend_instance_is_returned_as_it_is() -> None:
    fake = FakeBackend()
    assert await open_backend(fake) is fake


async def test_bad_specs_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="http"):
        await open_backend("127.0.0.1:9")
    with pytest.raises(ConfigurationError, match="server kind"):
        BackendSettings(server="sglang-nope")


async def test_auto_asks_the_server_and_a_plain_server_gets_no_vllm_fields(fs: FaultServer) -> None:
    backend = await open_backend(fs.url, "m", settings=BackendSettings(server="auto"))  # no GET /version here
    assert backend.capabilities == OPENAI_CAPABILITIES
    assert backend_provider(backend) == "openai-compatible"
    await backend.generate([GenerationRequest(messages=QUESTION, max_tokens=8, n=2, temperature=0.8)])
    await backend.aclose()
    sent = bodies(fs)
    assert sent
    assert all("return_token_ids" not in b and "include_stop_str_in_output" not in b for b in sent)


async def test_a_server_without_n_gets_one_request_per_sample(fs: FaultServer) -> None:
    from dataclasses import replace

    capabilities = replace(OPENAI_CAPABILITIES, samples_per_request=False)
    backend = OpenAICompatibleBackend(fs.url, "m", capabilities=capabilities)
    (result,) = await backend.generate([GenerationRequest(messages=QUESTION, max_tokens=8, n=3, temperature=0.8)])
    await backend.aclose()
    assert len(result.completions) == 3
    assert [b["n"] for b in bodies(fs)] == [1, 1, 1]


async def test_timeout_bounds_a_whole_request_not_each_read(fs: FaultServer) -> None:
    fs.app.answer = lambda body, index: LONG
    fs.push(Fault("drip", delay_s=0.5))  # 16 bytes every half second: the answer would take over a minute
    backend = OpenAICompatibleBackend(fs.url, "m", timeout=2, max_retries=0)
    start = time.monotonic()
    with pytest.raises(BackendTimeoutError, match="timeout=2s"):
        await backend.generate([GenerationRequest(messages=QUESTION, max_tokens=400)])
    assert time.monotonic() - start < 10
    await backend.aclose()


async def test_timeout_bounds_a_whole_stream(fs: FaultServer) -> None:
    fs.app.answer = lambda body, index: LONG
    fs.push(Fault("drip", delay_s=0.2))  # one event every 0.2 s: the stream would take 40 s
    backend = OpenAICompatibleBackend(fs.url, "m", timeout=2, max_retries=0)
    pieces: list[str] = []
    start = time.monotonic()
    with pytest.raises(BackendTimeoutError, match="still streaming after timeout=2s"):
        await backend.stream(GenerationRequest(messages=QUESTION, max_tokens=400), pieces.append)
    assert time.monotonic() - start < 10
    assert pieces  # the stream had started: the limit is on the whole stream, not on its first byte
    await backend.aclose()


def test_model_kwargs_extra_body_top_p_seed_and_headers_reach_the_server(fs: FaultServer) -> None:
    llm = AdaptiveChatModel(
        base_url=fs.url,
        model_name="fault-model",  # type: ignore[call-arg]  # ChatOpenAI's alias, taken on purpose
        strategy="greedy",
        max_tokens=8,
        top_p=0.9,
        seed=7,
        model_kwargs={"top_k": 20, "repetition_penalty": 1.1},
        extra_body={"min_p": 0.05, "chat_template_kwargs": {"enable_thinking": False}},
        default_headers={"X-Tenant": "t1"},
        api_key="sk-test",  # type: ignore[arg-type]  # a plain string, as ChatOpenAI takes it
    )
    try:
        llm.invoke([HumanMessage("What is 2+2?")], extra_body={"min_p": 0.1})
    finally:
        llm.close()
    (body,) = bodies(fs)
    assert body["model"] == "fault-model"
    assert (body["top_p"], body["seed"], body["top_k"], body["repetition_penalty"]) == (0.9, 7, 20, 1.1)
    assert body["min_p"] == 0.1  # the call's extra_body wins over the model's
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    request = next(r for r in fs.received if r.path.endswith("completions"))
    assert request.headers["x-tenant"] == "t1"
    assert request.headers["authorization"] == "Bearer sk-test"


def test_model_name_alias_names_the_served_model(fs: FaultServer) -> None:
    llm = AdaptiveChatModel(base_url=fs.url, model_name="my-model", strategy="greedy", max_tokens=8)  # type: ignore[call-arg]
    assert llm.model == llm.model_name == "my-model"
    try:
        llm.invoke("hi")
    finally:
        llm.close()
    assert [b["model"] for b in bodies(fs)] == ["my-model"]
    with pytest.raises(ValueError, match="disagree"):
        AdaptiveChatModel(model="a", model_name="b")  # type: ignore[call-arg]


def test_without_a_model_name_the_served_model_is_asked(fs: FaultServer) -> None:
    llm = AdaptiveChatModel(base_url=fs.url, strategy="greedy", max_tokens=8)
    try:
        llm.invoke("hi")
    finally:
        llm.close()
    assert [b["model"] for b in bodies(fs)] == ["fault-model"]


def test_unknown_invoke_kwargs_warn_instead_of_vanishing() -> None:
    llm = AdaptiveChatModel(backend=FakeBackend(), strategy="greedy")
    try:
        with pytest.warns(UserWarning, match=r"\['top_k'\].*model_kwargs"):
            llm.invoke("hi", top_k=5)
    finally:
        llm.close()


def test_extra_body_is_refused_by_a_backend_that_cannot_send_it() -> None:
    from adaptive_ttc.backends.base import BackendCapabilities

    llm = AdaptiveChatModel(backend=FakeBackend(capabilities_=BackendCapabilities()), model_kwargs={"top_k": 5})
    try:
        with pytest.raises(InvalidRequestError, match="extra request-body fields"):
            llm.invoke("hi")
    finally:
        llm.close()


def test_environment_variables_configure_the_chat_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADAPTIVE_TTC_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("ADAPTIVE_TTC_API_KEY", "sk-env")
    monkeypatch.setenv("ADAPTIVE_TTC_MODEL", "env-model")
    llm = AdaptiveChatModel()
    assert (llm.base_url, llm.model) == ("http://127.0.0.1:9/v1", "env-model")
    assert llm.api_key is not None
    assert llm.api_key.get_secret_value() == "sk-env"


def test_cli_sends_the_api_key(fs: FaultServer, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["generate", "hi", "--backend", fs.url, "--api-key", "sk-cli", "--max-tokens", "8", "--json"]
    assert main(argv) == 0
    assert "The answer is 4." in capsys.readouterr().out
    assert {r.headers.get("authorization") for r in fs.received} == {"Bearer sk-cli"}  # /models and the generation


def test_cli_reads_the_api_key_from_the_environment(fs: FaultServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADAPTIVE_TTC_API_KEY", "sk-env")
    assert main(["generate", "hi", "--backend", fs.url, "--model", "m", "--max-tokens", "8"]) == 0
    assert [r.headers.get("authorization") for r in fs.received] == ["Bearer sk-env"]


async def test_retries_are_logged_on_the_backends_logger(fs: FaultServer, caplog: pytest.LogCaptureFixture) -> None:
    fs.push(Fault("status", status=503))
    backend = OpenAICompatibleBackend(fs.url, "m", max_retries=1)
    with caplog.at_level(logging.WARNING, logger="adaptive_ttc.backends"):
        await backend.generate([GenerationRequest(messages=QUESTION, max_tokens=8)])
    await backend.aclose()
    assert any(r.name == "adaptive_ttc.backends" and "retrying" in r.message for r in caplog.records)
    assert logging.getLogger("adaptive_ttc").handlers  # a NullHandler: silent unless the application configures logging
