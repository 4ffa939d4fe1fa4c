"""The Live API through Google's official Python SDK (google-genai `client.aio.live`).

The SDK's Live client always connects with `wss://` (it rewrites the base URL's scheme), so
these tests run a Keyplane of their own that serves HTTPS itself (`serve --tls-cert
--tls-key`): a self-signed certificate for 127.0.0.1 made with `openssl`, trusted through
SSL_CERT_FILE, which the SDK reads for its WebSocket SSL context and the keyplane CLI reads
for its own HTTPS calls (the key is minted with `keyplane keys create` over HTTPS).

What is checked: an API key's session answers with text and usage; an ephemeral token
minted through the SDK (`auth_tokens.create`, over HTTPS too) starts exactly its `uses`
sessions through `live.connect` and is refused after (the SDK raises APIError with Google's
close code 1007); a token pinned to one model refuses another (1008); an invalid key is
refused (1007).
"""

from __future__ import annotations

import asyncio
import subprocess

import pytest
from google.genai import errors, types

from conftest import make_client, start_keyplane

MODEL = "gemini-2.5-flash"
TEXT_ONLY = types.LiveConnectConfig(
    response_modalities=[types.Modality.TEXT],
    temperature=0.0,
    max_output_tokens=8,
)


@pytest.fixture(scope="module")
def tls_keyplane(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            # A leaf, not a CA: rustls (the CLI) refuses a CA certificate as a server's.
            "-addext", "basicConstraints=critical,CA:FALSE",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )
    mp = pytest.MonkeyPatch()
    mp.setenv("SSL_CERT_FILE", str(cert))
    try:
        with start_keyplane(d, "--tls-cert", str(cert), "--tls-key", str(key)) as server:
            assert server.base_url.startswith("https://127.0.0.1:"), server.base_url
            yield server
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def tls_base_url(tls_keyplane) -> str:
    return tls_keyplane.base_url


@pytest.fixture(scope="module")
def tls_api_key(tls_keyplane) -> str:
    return tls_keyplane.create_key()["keyString"]


async def one_turn(client, model: str, text: str, config=TEXT_ONLY):
    """Opens a session, sends one turn, returns (answer text, usage metadata)."""
    async with client.aio.live.connect(model=model, config=config) as session:
        await session.send_client_content(
            turns=types.Content(role="user", parts=[types.Part(text=text)]), turn_complete=True
        )
        out, usage = "", None
        async for msg in session.receive():
            if msg.text:
                out += msg.text
            if msg.usage_metadata:
                usage = msg.usage_metadata
            if msg.server_content and msg.server_content.turn_complete:
                break
        return out, usage


def test_a_key_session_answers_with_text_and_usage(tls_base_url: str, tls_api_key: str):
    client = make_client(tls_base_url, tls_api_key, "v1beta")
    text, usage = asyncio.run(one_turn(client, MODEL, "Say hello."))
    assert text.strip(), "no text in the answer"
    assert usage is not None and usage.prompt_token_count > 0
    assert 0 < usage.response_token_count <= 8
    assert usage.total_token_count == usage.prompt_token_count + usage.response_token_count


def test_an_ephemeral_token_minted_by_the_sdk_works_for_its_uses_then_is_refused(
    tls_base_url: str, tls_api_key: str
):
    minter = make_client(tls_base_url, tls_api_key, "v1alpha")
    token = minter.auth_tokens.create(config={"uses": 2})
    assert token.name and token.name.startswith("auth_tokens/")

    eph = make_client(tls_base_url, token.name, "v1alpha")
    for _ in range(2):
        text, _usage = asyncio.run(one_turn(eph, MODEL, "Say hi."))
        assert text.strip()
    with pytest.raises(errors.APIError) as refused:
        asyncio.run(one_turn(eph, MODEL, "Say hi."))
    assert refused.value.code == 1007, refused.value
    assert "invalid authentication credentials" in str(refused.value)


def test_a_token_pinned_to_a_model_refuses_another(
    tls_base_url: str, tls_api_key: str
):
    minter = make_client(tls_base_url, tls_api_key, "v1alpha")
    token = minter.auth_tokens.create(
        config={
            "uses": 5,
            "live_connect_constraints": {"model": MODEL, "config": {"temperature": 0.0}},
        }
    )
    eph = make_client(tls_base_url, token.name, "v1alpha")
    text, _ = asyncio.run(one_turn(eph, MODEL, "Say hi."))
    assert text.strip()
    with pytest.raises(errors.APIError) as refused:
        asyncio.run(one_turn(eph, "smollm2-135m-instruct", "Say hi."))
    assert refused.value.code == 1008, refused.value
    assert "only allows" in str(refused.value)


def test_an_invalid_key_is_refused(tls_base_url: str):
    client = make_client(tls_base_url, "AIza" + "x" * 35, "v1beta")
    with pytest.raises(errors.APIError) as refused:
        asyncio.run(one_turn(client, MODEL, "Say hi."))
    assert refused.value.code == 1007
    assert "API key not valid" in str(refused.value)
