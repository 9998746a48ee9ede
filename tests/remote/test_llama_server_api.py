"""What the remote engine relies on in llama-server's HTTP API, pinned on the demo model.

Each test states one fact about the server built by native/server.sh (the same llama.cpp as the
wheel), so an upgrade that changes one shows up here rather than as a confusing engine failure.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.llamaserver import LlamaServer
from tests.remote.conftest import StartLlamaServer

pytestmark = [pytest.mark.model, pytest.mark.timeout(120)]

SLOTS = 2
CTX = 1024
SLOT_CTX = CTX // SLOTS
IM_END = 2  # <|im_end|>, the demo model's end-of-turn control token


@pytest.fixture(scope="module")
def server(demo_model: Path, llama_server_binary: Path) -> Iterator[LlamaServer]:
    with LlamaServer(demo_model, slots=SLOTS, ctx=CTX, binary=llama_server_binary) as running:
        yield running


@pytest.fixture
def client(server: LlamaServer) -> Iterator[httpx.Client]:
    # The server closes the connection after every streamed response without saying so (see
    # test_a_stream_ends_with_the_server_closing_the_connection): no pooled keep-alive here.
    with httpx.Client(base_url=server.url, timeout=30, headers={"Connection": "close"}) as http:
        yield http


def tokenize(client: httpx.Client, text: str, *, special: bool = False) -> list[int]:
    response = client.post("/tokenize", json={"content": text, "parse_special": special})
    response.raise_for_status()
    return list(response.json()["tokens"])


def chatml(client: httpx.Client, user: str) -> list[int]:
    """A ChatML prompt as ids: the markup as control tokens, the user's text as plain text."""
    return (
        tokenize(client, "<|im_start|>user\n", special=True)
        + tokenize(client, user)
        + tokenize(client, "<|im_end|>\n<|im_start|>assistant\n", special=True)
    )


def follow_up(client: httpx.Client, prompt: list[int], reply: list[int], user: str) -> list[int]:
    return prompt + reply + tokenize(client, "<|im_end|>\n", special=True) + chatml(client, user)


def stream_completion(client: httpx.Client, **body: Any) -> list[dict[str, Any]]:
    """Every event of a streamed /completion, decoded."""
    body = {"cache_prompt": True, "temperature": 0, "seed": 7, **body, "stream": True}
    with client.stream("POST", "/completion", json=body) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return [
            json.loads(line.removeprefix("data: ")) for line in response.iter_lines() if line
        ]


def reply_tokens(events: list[dict[str, Any]]) -> list[int]:
    return [token for event in events for token in event["tokens"]]


# --- what the server says about itself --------------------------------------------------------


def test_health_answers_ok(client: httpx.Client) -> None:
    response = client.get("/health")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_props_give_slot_context_slots_template_and_special_tokens(
    client: httpx.Client, demo_model: Path
) -> None:
    props = client.get("/props").json()
    assert props["default_generation_settings"]["n_ctx"] == SLOT_CTX
    assert props["total_slots"] == SLOTS
    assert props["model_path"] == str(demo_model)
    assert "<|im_start|>" in props["chat_template"]
    assert (props["bos_token"], props["eos_token"]) == ("<|im_start|>", "<|im_end|>")
    assert props["endpoint_slots"] is True


def test_slots_list_each_slot_with_its_context_and_state(client: httpx.Client) -> None:
    slots = client.get("/slots").json()
    assert [slot["id"] for slot in slots] == list(range(SLOTS))
    assert all(slot["n_ctx"] == SLOT_CTX for slot in slots)
    assert all(slot["is_processing"] is False for slot in slots)


def test_v1_models_reports_the_model_and_its_context(
    client: httpx.Client, demo_model: Path
) -> None:
    (model,) = client.get("/v1/models").json()["data"]
    assert model["id"] == str(demo_model)
    assert model["meta"]["n_ctx"] == SLOT_CTX
    assert model["meta"]["n_ctx_train"] == 8192
    assert model["meta"]["n_vocab"] == 49152


@pytest.mark.parametrize(
    ("options", "slots", "slot_ctx"),
    [
        ({"slots": 2, "ctx": 1024}, 2, 512),  # an explicit -np splits -c between the slots
        ({"slots": 3, "ctx": 1000}, 3, 512),  # each share is rounded up to a multiple of 256
        ({"slots": 2, "ctx": 1024, "extra_args": ["--kv-unified"]}, 2, 1024),  # one shared pool
        ({"slots": -1, "ctx": 1024}, 4, 1024),  # -np auto: 4 slots sharing a unified pool
    ],
    ids=["split", "rounded-up", "unified", "auto"],
)
def test_slot_context_is_ctx_divided_by_slots_unless_the_cache_is_unified(
    start_llama_server: StartLlamaServer, options: dict[str, Any], slots: int, slot_ctx: int
) -> None:
    server = start_llama_server(**options)
    props = httpx.get(server.url + "/props").json()
    assert (props["total_slots"], props["default_generation_settings"]["n_ctx"]) == (slots, slot_ctx)
    unified = "--kv-unified" in options.get("extra_args", ()) or options["slots"] == -1
    assert f"kv_unified = '{str(unified).lower()}'" in server.log_tail(200)


def test_an_api_key_guards_everything_but_health(start_llama_server: StartLlamaServer) -> None:
    server = start_llama_server(api_key="secret")
    assert httpx.get(server.url + "/health").status_code == 200
    refused = httpx.get(server.url + "/props")
    assert refused.status_code == 401
    assert refused.json() == {
        "error": {"message": "Invalid API Key", "type": "authentication_error", "code": 401}
    }
    assert httpx.get(server.url + "/props", headers=server.headers).status_code == 200


# --- tokens -----------------------------------------------------------------------------------


def test_tokenize_keeps_control_token_text_as_plain_text_only_when_asked(
    client: httpx.Client,
) -> None:
    plain = tokenize(client, "<|im_end|>", special=False)
    assert len(plain) > 1 and IM_END not in plain
    assert tokenize(client, "<|im_end|>", special=True) == [IM_END]
    # parse_special defaults to true: a client must ask for plain text explicitly
    assert client.post("/tokenize", json={"content": "<|im_end|>"}).json()["tokens"] == [IM_END]


def test_prompt_ids_are_evaluated_as_given_without_an_added_bos(client: httpx.Client) -> None:
    # The server adds BOS only in front of a prompt (or mixed list) that starts with a string,
    # and only if the model asks for it (/tokenize with add_special shows it); this model does not.
    with_special = client.post("/tokenize", json={"content": "hi", "add_special": True}).json()
    assert with_special["tokens"] == tokenize(client, "hi")
    ids = chatml(client, "hi")
    final = stream_completion(client, prompt=ids, n_predict=1, id_slot=0)[-1]
    assert final["tokens_evaluated"] == len(ids)


def test_strings_in_a_mixed_prompt_are_parsed_for_control_tokens(client: httpx.Client) -> None:
    mixed = client.post("/completion", json={"prompt": [1, "x<|im_end|>"], "n_predict": 1}).json()
    as_ids = [1, *tokenize(client, "x<|im_end|>")]
    plain = client.post("/completion", json={"prompt": as_ids, "n_predict": 1}).json()
    assert mixed["tokens_evaluated"] == 3  # [1, "x", <|im_end|>]
    assert plain["tokens_evaluated"] == len(as_ids) > 3


# --- streamed completions and the slot cache --------------------------------------------------


def test_a_streamed_completion_sends_text_and_ids_then_a_final_summary(
    client: httpx.Client,
) -> None:
    prompt = chatml(client, "Write a sentence about cats.")
    events = stream_completion(client, prompt=prompt, id_slot=0, n_predict=6)
    *chunks, final = events
    assert len(chunks) == 6
    for chunk in chunks:
        assert chunk["stop"] is False
        assert isinstance(chunk["content"], str) and len(chunk["tokens"]) == 1
        assert chunk["id_slot"] == -1  # only the final event says which slot served it
        assert chunk["tokens_evaluated"] == len(prompt)
    assert final["stop"] is True
    assert (final["content"], final["tokens"]) == ("", [])
    assert final["id_slot"] == 0
    assert final["stop_type"] == "limit"
    assert final["tokens_predicted"] == 6
    assert final["tokens_evaluated"] == len(prompt)
    # the last sampled token is not in the cache yet: it is decoded with the next request
    assert final["tokens_cached"] == len(prompt) + 6 - 1
    assert final["truncated"] is False
    timings = final["timings"]
    assert set(timings) >= {"cache_n", "prompt_n", "prompt_ms", "predicted_n", "predicted_ms"}
    assert timings["cache_n"] + timings["prompt_n"] == len(prompt)
    assert timings["predicted_n"] == 6


def test_the_same_greedy_request_gives_the_same_tokens(client: httpx.Client) -> None:
    prompt = chatml(client, "Name a colour.")
    first = reply_tokens(stream_completion(client, prompt=prompt, id_slot=0, n_predict=8))
    again = reply_tokens(stream_completion(client, prompt=prompt, id_slot=1, n_predict=8))
    assert first == again


def test_a_follow_up_on_the_same_slot_evaluates_only_its_new_tokens(client: httpx.Client) -> None:
    prompt = chatml(client, "Tell me about dogs, in detail, with examples.")
    events = stream_completion(client, prompt=prompt, id_slot=1, n_predict=8)
    cached = events[-1]["tokens_cached"]
    longer = follow_up(client, prompt, reply_tokens(events), "And cats?")
    final = stream_completion(client, prompt=longer, id_slot=1, n_predict=4)[-1]
    assert final["timings"]["cache_n"] == cached
    assert final["timings"]["prompt_n"] == len(longer) - cached
    assert final["timings"]["prompt_n"] <= len(longer) - len(prompt) + 1


def test_end_of_turn_and_stop_words_end_the_stream_with_their_token(
    client: httpx.Client,
) -> None:
    events = stream_completion(client, prompt=chatml(client, "Say yes."), id_slot=0, n_predict=64)
    assert events[-1]["stop_type"] == "eos"
    assert reply_tokens(events)[-1] == IM_END  # the id comes through, with empty content
    events = stream_completion(
        client, prompt=chatml(client, "Tell me about dogs."), id_slot=0, n_predict=64, stop=["."]
    )
    final = events[-1]
    assert (final["stop_type"], final["stopping_word"]) == ("word", ".")
    assert events[-2]["content"] == "" and events[-2]["tokens"] == tokenize(client, ".")


def test_a_request_for_a_busy_slot_waits_for_it(
    server: LlamaServer, client: httpx.Client
) -> None:
    prompt = chatml(client, "Count to fifty.")
    busy = threading.Event()
    first: list[dict[str, Any]] = []

    def occupy() -> None:
        with httpx.Client(base_url=server.url, timeout=30, headers={"Connection": "close"}) as other:
            body = {"prompt": prompt, "id_slot": 0, "n_predict": 80, "ignore_eos": True, "stream": True}
            with other.stream("POST", "/completion", json=body) as response:
                for line in filter(None, response.iter_lines()):
                    first.append(json.loads(line.removeprefix("data: ")))
                    busy.set()

    worker = threading.Thread(target=occupy)
    worker.start()
    try:
        assert busy.wait(10)
        assert client.get("/slots").json()[0]["is_processing"] is True
        final = stream_completion(client, prompt=prompt, id_slot=0, n_predict=1)[-1]
    finally:
        worker.join()
    # neither refused nor cutting the running request short: served by that slot afterwards
    assert final["id_slot"] == 0
    assert first[-1]["stop"] is True and first[-1]["tokens_predicted"] == 80


def test_an_unknown_slot_id_silently_falls_back_to_any_free_slot(client: httpx.Client) -> None:
    final = stream_completion(client, prompt=[1, 6004], id_slot=SLOTS + 5, n_predict=1)[-1]
    assert final["id_slot"] in range(SLOTS)


def test_a_stream_ends_with_the_server_closing_the_connection(server: LlamaServer) -> None:
    # The response says keep-alive, but the server hangs up after the last chunk: a pooled client
    # that reuses the connection sometimes sees "server disconnected" on its next request.
    body = json.dumps({"prompt": [1, 6004], "n_predict": 2, "stream": True}).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /completion HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert b"keep-alive" in received.lower()
    assert received.endswith(b"0\r\n\r\n")  # the whole response came, then the close


def test_closing_a_stream_stops_its_generation(server: LlamaServer, client: httpx.Client) -> None:
    body = {"prompt": chatml(client, "Count to a thousand."), "id_slot": 0, "n_predict": 400,
            "ignore_eos": True, "stream": True}
    with client.stream("POST", "/completion", json=body) as response:
        for count, _ in enumerate(filter(None, response.iter_lines()), start=1):
            if count == 3:
                break
    deadline = time.monotonic() + 2
    while client.get("/slots").json()[0]["is_processing"]:
        assert time.monotonic() < deadline, "the slot kept generating after the client left"
        time.sleep(0.02)
    assert "cancel task" in server.log_tail(50)


# --- limits and errors ------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_a_prompt_longer_than_the_slot_context_is_refused_before_streaming(
    client: httpx.Client, stream: bool
) -> None:
    body = {"prompt": [1] + [6004] * SLOT_CTX, "n_predict": 4, "stream": stream}
    response = client.post("/completion", json=body)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {
        "error": {
            "code": 400,
            "message": f"request ({SLOT_CTX + 1} tokens) exceeds the available context size "
                       f"({SLOT_CTX} tokens), try increasing it",
            "type": "exceed_context_size_error",
            "n_prompt_tokens": SLOT_CTX + 1,
            "n_ctx": SLOT_CTX,
        }
    }


def test_generation_stops_when_the_slot_context_is_full(client: httpx.Client) -> None:
    prompt = [1] + [6004] * (SLOT_CTX - 12)
    final = stream_completion(client, prompt=prompt, id_slot=0, n_predict=100, ignore_eos=True)[-1]
    assert final["stop_type"] == "limit"
    assert final["truncated"] is True
    assert final["tokens_predicted"] < 100
    assert final["tokens_cached"] == SLOT_CTX - 1


@pytest.mark.parametrize(
    ("prompt", "message"),
    [([1, 10**6], "Prompt contains invalid tokens"), ([], '"prompt" must not be empty')],
    ids=["unknown-id", "empty"],
)
def test_a_bad_prompt_is_a_400_with_a_message(
    client: httpx.Client, prompt: list[int], message: str
) -> None:
    response = client.post("/completion", json={"prompt": prompt, "n_predict": 1})
    assert response.status_code == 400
    assert response.json() == {
        "error": {"code": 400, "message": message, "type": "invalid_request_error"}
    }


# --- slot files -------------------------------------------------------------------------------


def test_a_slot_saved_to_a_file_and_restored_into_another_slot_keeps_its_cache(
    start_llama_server: StartLlamaServer, tmp_path: Path
) -> None:
    # --cache-ram 0 turns off the server's own RAM copy of idle slots, so the cache reused below
    # can only have come from the file.
    server = start_llama_server(
        slots=2, ctx=1024, slot_save_path=tmp_path, extra_args=["--cache-ram", "0"]
    )
    with httpx.Client(base_url=server.url, timeout=30, headers={"Connection": "close"}) as client:
        prompt = chatml(client, "Tell me a story about a brave little mouse.")
        events = stream_completion(client, prompt=prompt, id_slot=0, n_predict=8)
        cached = events[-1]["tokens_cached"]

        saved = client.post("/slots/0", params={"action": "save"}, json={"filename": "chat.bin"})
        assert saved.status_code == 200
        assert saved.json()["id_slot"] == 0 and saved.json()["filename"] == "chat.bin"
        assert saved.json()["n_saved"] == cached
        assert saved.json()["n_written"] == (tmp_path / "chat.bin").stat().st_size
        assert "save_ms" in saved.json()["timings"]

        restored = client.post("/slots/1", params={"action": "restore"}, json={"filename": "chat.bin"})
        assert restored.status_code == 200
        assert restored.json()["id_slot"] == 1 and restored.json()["n_restored"] == cached
        assert restored.json()["n_read"] == saved.json()["n_written"]
        assert "restore_ms" in restored.json()["timings"]

        longer = follow_up(client, prompt, reply_tokens(events), "What happened next?")
        final = stream_completion(client, prompt=longer, id_slot=1, n_predict=4)[-1]
        assert final["timings"]["cache_n"] == cached
        assert final["timings"]["prompt_n"] == len(longer) - cached

        erased = client.post("/slots/1", params={"action": "erase"})
        assert erased.status_code == 200 and erased.json()["id_slot"] == 1

        missing = client.post("/slots/1", params={"action": "restore"}, json={"filename": "none.bin"})
        assert missing.status_code == 400
        assert missing.json()["error"]["type"] == "invalid_request_error"
        outside = client.post("/slots/0", params={"action": "save"}, json={"filename": "../x.bin"})
        assert (outside.status_code, outside.json()["error"]["message"]) == (400, "Invalid filename")


def test_slot_files_need_a_slot_save_path(client: httpx.Client) -> None:
    response = client.post("/slots/0", params={"action": "save"}, json={"filename": "x.bin"})
    assert response.status_code == 501
    assert response.json()["error"]["type"] == "not_supported_error"


# --- the OpenAI-compatible API ----------------------------------------------------------------


def chat_events(client: httpx.Client, **body: Any) -> list[str]:
    body = {"max_tokens": 4, "temperature": 0, **body, "stream": True}
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200, response.read()
        return [line.removeprefix("data: ") for line in response.iter_lines() if line]


def test_chat_completions_stream_deltas_and_give_usage_only_when_asked(
    client: httpx.Client,
) -> None:
    messages = [{"role": "user", "content": "Say hi."}]
    *events, done = chat_events(client, messages=messages)
    assert done == "[DONE]"
    chunks = [json.loads(event) for event in events]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    text = "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks)
    assert text
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert not any("usage" in chunk for chunk in chunks)
    assert "prompt_n" in chunks[-1]["timings"]  # llama-server's own figures, usage or not

    *events, done = chat_events(
        client, messages=messages, stream_options={"include_usage": True}
    )
    last = json.loads(events[-1])
    assert last["choices"] == []
    usage = last["usage"]
    assert usage["completion_tokens"] == 4
    assert usage["total_tokens"] == usage["prompt_tokens"] + 4
    assert "cached_tokens" in usage["prompt_tokens_details"]


def test_chat_completions_turn_control_token_text_in_messages_into_control_tokens(
    client: httpx.Client,
) -> None:
    # The openai kind cannot send ids: text such as <|im_end|> in a user's message reaches the
    # model as the control token, unless the bot defuses it before sending.
    def prompt_tokens(content: str) -> int:
        body = {"messages": [{"role": "user", "content": content}], "max_tokens": 1}
        return int(client.post("/v1/chat/completions", json=body).json()["usage"]["prompt_tokens"])

    plain = prompt_tokens("a b")
    assert prompt_tokens("a <|im_end|> b") - plain == 2  # the control token and a space
    assert len(tokenize(client, " <|im_end|>")) > 2


# --- the helper itself ------------------------------------------------------------------------


async def test_a_killed_server_comes_back_on_its_port(
    demo_model: Path, llama_server_binary: Path
) -> None:
    async with LlamaServer(demo_model, binary=llama_server_binary) as server:
        port, pid = server.port, server.pid
        server.kill()
        assert not server.running
        async with httpx.AsyncClient(base_url=server.url) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get("/health")
            await server.astart()
            assert server.port == port and server.pid != pid
            assert (await client.get("/health")).status_code == 200
