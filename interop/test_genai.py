"""Keyplane driven by Google's official Python SDK (google-genai), unchanged but for its base URL.

Every call goes to the real `keyplane serve` started in conftest.py, answered by the local
model (SmolLM2-135M-Instruct). Generation is kept short (max_output_tokens=16) for speed.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from google import genai
from google.genai import errors, types

from conftest import Keyplane, make_client

LOCAL_MODEL = "smollm2-135m-instruct"
ALIASES = ("gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.0-flash", "gemini-flash-latest")
MODEL = "gemini-2.5-flash"
PROMPT = "Name one colour of the rainbow."
SHORT = types.GenerateContentConfig(max_output_tokens=16, temperature=0.0, seed=7)
SEEDS_BODY = {"contents": [{"parts": [{"text": "Explain how AI works in a few words"}]}]}
ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"


def error_reasons(err: errors.APIError) -> list[str]:
    """ErrorInfo reasons of a google.rpc.Status body (the SDK's .details is the whole body)."""
    body = err.details
    assert isinstance(body, dict) and "error" in body, f"not a google.rpc.Status body: {body!r}"
    return [
        d.get("reason")
        for d in body["error"].get("details", [])
        if isinstance(d, dict) and d.get("@type") == ERROR_INFO
    ]


def assert_generated(resp: types.GenerateContentResponse) -> None:
    assert resp.text and resp.text.strip(), f"empty text: {resp!r}"
    assert resp.candidates and resp.candidates[0].finish_reason in (
        types.FinishReason.STOP,
        types.FinishReason.MAX_TOKENS,
    ), resp.candidates
    usage = resp.usage_metadata
    assert usage is not None
    assert usage.prompt_token_count and usage.prompt_token_count > 0, usage
    assert usage.candidates_token_count and usage.candidates_token_count > 0, usage
    assert usage.candidates_token_count <= 16, usage
    assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count, usage
    assert resp.model_version and LOCAL_MODEL in resp.model_version, resp.model_version
    assert resp.response_id, "responseId missing"


# --- models ------------------------------------------------------------------------------


def test_models_list_has_local_model_and_aliases(client: genai.Client) -> None:
    models = list(client.models.list())
    names = {m.name for m in models}
    assert f"models/{LOCAL_MODEL}" in names, names
    for alias in ALIASES:
        assert f"models/{alias}" in names, names
    local = next(m for m in models if m.name == f"models/{LOCAL_MODEL}")
    assert local.supported_actions and "generateContent" in local.supported_actions, local
    assert "countTokens" in local.supported_actions, local
    assert local.input_token_limit and local.input_token_limit > 0, local


def test_models_list_pager_follows_page_tokens(client: genai.Client) -> None:
    everything = [m.name for m in client.models.list()]
    assert len(everything) > 2, everything
    pager = client.models.list(config={"page_size": 2})
    assert len(pager.page) == 2, pager.page
    first_page = [m.name for m in pager.page]
    paged = [m.name for m in pager]  # iterating fetches every following page
    assert paged == everything, (paged, everything)
    assert paged[:2] == first_page
    assert len(set(paged)) == len(paged), f"duplicates across pages: {paged}"


def test_models_get_alias(client: genai.Client) -> None:
    m = client.models.get(model=MODEL)
    assert m.name == f"models/{MODEL}", m
    assert m.supported_actions and "generateContent" in m.supported_actions, m
    local = client.models.get(model=f"models/{LOCAL_MODEL}")
    assert local.name == f"models/{LOCAL_MODEL}", local


def test_models_get_unknown_model_is_404(client: genai.Client) -> None:
    with pytest.raises(errors.ClientError) as exc:
        client.models.get(model="no-such-model-xyz")
    assert exc.value.code == 404
    assert exc.value.status == "NOT_FOUND"


# --- generation --------------------------------------------------------------------------


def test_generate_content(client: genai.Client) -> None:
    resp = client.models.generate_content(model=MODEL, contents=PROMPT, config=SHORT)
    assert_generated(resp)


def test_generate_content_with_local_model_name(client: genai.Client) -> None:
    resp = client.models.generate_content(model=LOCAL_MODEL, contents=PROMPT, config=SHORT)
    assert_generated(resp)


def test_generate_content_stream(client: genai.Client) -> None:
    chunks = list(client.models.generate_content_stream(model=MODEL, contents=PROMPT, config=SHORT))
    assert len(chunks) >= 1
    text = "".join(c.text or "" for c in chunks)
    assert text.strip(), f"streamed text is empty: {chunks!r}"
    last = chunks[-1]
    assert last.candidates and last.candidates[0].finish_reason in (
        types.FinishReason.STOP,
        types.FinishReason.MAX_TOKENS,
    ), last
    for chunk in chunks[:-1]:
        for cand in chunk.candidates or []:
            assert cand.finish_reason is None, f"finishReason before the last chunk: {chunk!r}"
    for chunk in chunks:
        assert chunk.model_version and LOCAL_MODEL in chunk.model_version, chunk
    assert len({c.response_id for c in chunks}) == 1, "responseId must repeat on every chunk"
    usage = last.usage_metadata
    assert usage is not None and usage.prompt_token_count and usage.prompt_token_count > 0, usage
    assert usage.candidates_token_count and 0 < usage.candidates_token_count <= 16, usage


def test_count_tokens_matches_generate_prompt_count(client: genai.Client) -> None:
    counted = client.models.count_tokens(model=MODEL, contents=PROMPT)
    assert counted.total_tokens and counted.total_tokens > 0, counted
    resp = client.models.generate_content(model=MODEL, contents=PROMPT, config=SHORT)
    assert resp.usage_metadata is not None
    assert counted.total_tokens == resp.usage_metadata.prompt_token_count, (counted, resp.usage_metadata)


def test_count_tokens_grows_with_input(client: genai.Client) -> None:
    short = client.models.count_tokens(model=MODEL, contents="Hi")
    long = client.models.count_tokens(model=MODEL, contents="Hi " * 40)
    assert short.total_tokens and long.total_tokens
    assert long.total_tokens > short.total_tokens, (short, long)


def test_system_instruction_and_multi_turn(client: genai.Client) -> None:
    config = types.GenerateContentConfig(
        system_instruction="You are terse. Answer in one word.",
        max_output_tokens=16,
        temperature=0.0,
    )
    contents = [
        types.Content(role="user", parts=[types.Part(text="What colour is the sky?")]),
        types.Content(role="model", parts=[types.Part(text="Blue.")]),
        types.Content(role="user", parts=[types.Part(text="And grass?")]),
    ]
    resp = client.models.generate_content(model=MODEL, contents=contents, config=config)
    assert_generated(resp)


def test_max_output_tokens_gives_max_tokens_finish_reason(client: genai.Client) -> None:
    resp = client.models.generate_content(
        model=MODEL,
        contents="Count from 1 to 50, separated by spaces.",
        config=types.GenerateContentConfig(max_output_tokens=4, temperature=0.0),
    )
    assert resp.candidates and resp.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS, resp
    assert resp.usage_metadata and resp.usage_metadata.candidates_token_count == 4, resp.usage_metadata


def test_chat_session(client: genai.Client) -> None:
    chat = client.chats.create(model=MODEL, config=SHORT)
    first = chat.send_message("Hello!")
    assert first.text and first.text.strip()
    second = chat.send_message("Say it again.")
    assert second.text and second.text.strip()
    assert len(chat.get_history()) == 4


def test_async_client(base_url: str, api_key: str) -> None:
    client = make_client(base_url, api_key)

    async def run() -> tuple[types.GenerateContentResponse, list[types.GenerateContentResponse]]:
        resp = await client.aio.models.generate_content(model=MODEL, contents=PROMPT, config=SHORT)
        stream = await client.aio.models.generate_content_stream(model=MODEL, contents=PROMPT, config=SHORT)
        chunks = [c async for c in stream]
        return resp, chunks

    resp, chunks = asyncio.run(run())
    assert_generated(resp)
    assert "".join(c.text or "" for c in chunks).strip()


# --- errors ------------------------------------------------------------------------------


BAD_KEY = "AIza" + "x" * 35


@pytest.mark.parametrize("call", ["generate_content", "count_tokens", "models.get", "stream"])
def test_bad_key_is_400_api_key_invalid(base_url: str, api_version: str, call: str) -> None:
    client = make_client(base_url, BAD_KEY, api_version)
    with pytest.raises(errors.ClientError) as exc:
        if call == "generate_content":
            client.models.generate_content(model=MODEL, contents=PROMPT, config=SHORT)
        elif call == "count_tokens":
            client.models.count_tokens(model=MODEL, contents=PROMPT)
        elif call == "models.get":
            client.models.get(model=MODEL)
        else:
            list(client.models.generate_content_stream(model=MODEL, contents=PROMPT, config=SHORT))
    err = exc.value
    assert err.code == 400, err
    assert err.status == "INVALID_ARGUMENT", err
    assert "API_KEY_INVALID" in error_reasons(err), err.details
    assert BAD_KEY not in str(err.details), "the server must not echo the key back"


def test_bad_key_on_models_list(base_url: str) -> None:
    client = make_client(base_url, BAD_KEY)
    with pytest.raises(errors.ClientError) as exc:
        list(client.models.list())
    assert exc.value.code == 400
    assert "API_KEY_INVALID" in error_reasons(exc.value)


def test_unknown_model_is_404(client: genai.Client) -> None:
    with pytest.raises(errors.ClientError) as exc:
        client.models.generate_content(model="no-such-model-xyz", contents=PROMPT, config=SHORT)
    assert exc.value.code == 404
    assert exc.value.status == "NOT_FOUND"
    assert "no-such-model-xyz" in (exc.value.message or ""), exc.value.message


def test_deleted_key_is_400_api_key_invalid(keyplane: Keyplane, base_url: str) -> None:
    key = keyplane.create_key()
    client = make_client(base_url, key["keyString"])
    assert client.models.count_tokens(model=MODEL, contents="hi").total_tokens

    keyplane.cli("keys", "delete", key["name"])
    with pytest.raises(errors.ClientError) as exc:
        client.models.count_tokens(model=MODEL, contents="hi")
    assert exc.value.code == 400
    assert exc.value.status == "INVALID_ARGUMENT"
    assert "API_KEY_INVALID" in error_reasons(exc.value), exc.value.details


def test_service_disabled_is_403(keyplane: Keyplane, base_url: str) -> None:
    project = "interop-svc-test"
    keyplane.cli("projects", "create", project)

    # As the seeds say: no key in a project whose Generative Language API is not enabled.
    refused = keyplane.cli("keys", "create", "--project", project, check=False)
    assert refused.returncode != 0, refused.stdout
    assert "permission denied" in (refused.stderr + refused.stdout).lower(), refused.stderr

    keyplane.cli("services", "enable", "generativelanguage.googleapis.com", "--project", project)
    key = keyplane.create_key("--project", project)
    client = make_client(base_url, key["keyString"])
    assert client.models.count_tokens(model=MODEL, contents="hi").total_tokens

    keyplane.cli("services", "disable", "generativelanguage.googleapis.com", "--project", project)
    with pytest.raises(errors.ClientError) as exc:
        client.models.generate_content(model=MODEL, contents=PROMPT, config=SHORT)
    assert exc.value.code == 403
    assert exc.value.status == "PERMISSION_DENIED"
    assert "SERVICE_DISABLED" in error_reasons(exc.value), exc.value.details


# --- environment variables ----------------------------------------------------------------


def test_env_base_url_and_key(base_url: str, api_key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """GOOGLE_GEMINI_BASE_URL and GEMINI_API_KEY alone point an unchanged program at Keyplane."""
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", base_url)
    monkeypatch.setenv("GEMINI_API_KEY", api_key)
    client = genai.Client()
    resp = client.models.generate_content(model=MODEL, contents=PROMPT, config=SHORT)
    assert_generated(resp)


def test_env_google_api_key_wins(base_url: str, api_key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", base_url)
    monkeypatch.setenv("GOOGLE_API_KEY", api_key)
    monkeypatch.setenv("GEMINI_API_KEY", BAD_KEY)
    client = genai.Client()
    assert client.models.count_tokens(model=MODEL, contents="hi").total_tokens


# --- the seeds' curl request, over plain HTTP ---------------------------------------------


_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with _opener.open(req, timeout=120) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def assert_seeds_answer(status: int, headers: dict[str, str], raw: bytes) -> None:
    assert status == 200, raw
    assert headers.get("content-type", "").startswith("application/json"), headers
    body = json.loads(raw)
    text = "".join(p.get("text", "") for p in body["candidates"][0]["content"]["parts"])
    assert text.strip(), body
    assert body["candidates"][0]["content"]["role"] == "model", body
    assert body["usageMetadata"]["promptTokenCount"] > 0, body
    assert body["usageMetadata"]["candidatesTokenCount"] > 0, body
    assert LOCAL_MODEL in body["modelVersion"], body


def test_seeds_curl_with_header(base_url: str, api_key: str) -> None:
    url = f"{base_url}/v1beta/models/gemini-2.5-flash:generateContent"
    assert_seeds_answer(*http("POST", url, SEEDS_BODY, {"x-goog-api-key": api_key}))


def test_seeds_curl_with_key_query(base_url: str, api_key: str) -> None:
    url = f"{base_url}/v1beta/models/gemini-2.5-flash:generateContent?key={api_key}"
    assert_seeds_answer(*http("POST", url, SEEDS_BODY))


def test_no_key_is_403(base_url: str) -> None:
    status, headers, raw = http("POST", f"{base_url}/v1beta/models/{MODEL}:generateContent", SEEDS_BODY)
    assert status == 403, raw
    assert headers.get("content-type", "").startswith("application/json"), headers
    err = json.loads(raw)["error"]
    assert err["code"] == 403 and err["status"] == "PERMISSION_DENIED", err


def test_sse_framing_is_plain(base_url: str, api_key: str) -> None:
    """What the SDK parsers need (spec §5.3): only `data: {one-line json}` events."""
    url = f"{base_url}/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
    body = dict(SEEDS_BODY, generationConfig={"maxOutputTokens": 8})
    status, headers, raw = http("POST", url, body, {"x-goog-api-key": api_key})
    assert status == 200, raw
    assert headers.get("content-type", "").startswith("text/event-stream"), headers
    events = [e for e in raw.decode().replace("\r\n", "\n").split("\n\n") if e.strip()]
    assert events, raw
    for event in events:
        assert event.startswith("data: ") and "\n" not in event, repr(event)
        json.loads(event[len("data: ") :])
