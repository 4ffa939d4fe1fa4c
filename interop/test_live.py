"""The Live API through Google's official Python SDK (google-genai `client.aio.live`).

The SDK's Live client always connects with `wss://` (it rewrites the base URL's scheme), so
these tests put a TLS-terminating proxy in front of Keyplane, as an operator's reverse
proxy would be: a self-signed certificate for 127.0.0.1 made with `openssl`, trusted
through SSL_CERT_FILE (which the SDK reads for its WebSocket SSL context), and a small
asyncio proxy that forwards the decrypted bytes to Keyplane's plain-HTTP port.

What is checked: an API key's session answers with text and usage; an ephemeral token
minted through the SDK (`auth_tokens.create`) starts exactly its `uses` sessions through
`live.connect` and is refused after (the SDK raises APIError with Google's close code
1007); a token pinned to one model refuses another (1008); an invalid key is refused (1007).
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest
from google.genai import errors, types

from conftest import make_client

MODEL = "gemini-2.5-flash"
TEXT_ONLY = types.LiveConnectConfig(
    response_modalities=[types.Modality.TEXT],
    temperature=0.0,
    max_output_tokens=8,
)


class TlsProxy:
    """TLS on 127.0.0.1:<port>, forwarding each connection to Keyplane's HTTP port."""

    def __init__(self, cert: Path, key: Path, upstream: tuple[str, int]):
        self.upstream = upstream
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(cert, key)
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10), "the TLS proxy did not start"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ctx)
        )
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
                pass
            finally:
                try:
                    w.close()
                except Exception:
                    pass

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def tls_base_url(base_url: str, tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )
    u = urlparse(base_url)
    proxy = TlsProxy(cert, key, (u.hostname or "127.0.0.1", u.port or 80))
    mp = pytest.MonkeyPatch()
    mp.setenv("SSL_CERT_FILE", str(cert))
    yield f"https://127.0.0.1:{proxy.port}"
    mp.undo()
    proxy.stop()


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


def test_a_key_session_answers_with_text_and_usage(tls_base_url: str, api_key: str):
    client = make_client(tls_base_url, api_key, "v1beta")
    text, usage = asyncio.run(one_turn(client, MODEL, "Say hello."))
    assert text.strip(), "no text in the answer"
    assert usage is not None and usage.prompt_token_count > 0
    assert 0 < usage.response_token_count <= 8
    assert usage.total_token_count == usage.prompt_token_count + usage.response_token_count


def test_an_ephemeral_token_minted_by_the_sdk_works_for_its_uses_then_is_refused(
    base_url: str, tls_base_url: str, api_key: str
):
    minter = make_client(base_url, api_key, "v1alpha")
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
    base_url: str, tls_base_url: str, api_key: str
):
    minter = make_client(base_url, api_key, "v1alpha")
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
