"""Ephemeral tokens through Google's official Python SDK (google-genai).

`client.auth_tokens.create` (v1alpha) mints the token with a normal key. The SDK itself
refuses to send an `auth_tokens/...` key on REST (EphemeralTokenAPIKeyError: "Ephemeral
tokens can only be used with the live API."); test_live.py spends tokens through the SDK's
Live client. Here the token's uses are spent over REST (which Keyplane also accepts) with
exactly the credentials the SDK's Live client sends (`Authorization: Token auth_tokens/...`
plus the token in `x-goog-api-key`), and with the JS SDK's `?access_token=`.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from google.genai import _api_client, types

from conftest import make_client

MODEL = "gemini-2.5-flash"
COUNT_BODY = {"contents": [{"role": "user", "parts": [{"text": "Say hi"}]}]}
GEN_BODY = {
    "contents": [{"role": "user", "parts": [{"text": "Say hi"}]}],
    "generationConfig": {"maxOutputTokens": 2, "temperature": 0.0},
}


def post(base_url: str, path: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any]:
    req = urllib.request.Request(
        base_url.rstrip("/") + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **headers},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def live_headers(token: str) -> dict[str, str]:
    """What google-genai's Live client sends with an ephemeral token (spec/gemini-api.md §9.3)."""
    return {"Authorization": f"Token {token}", "x-goog-api-key": token}


def reason(body: Any) -> str | None:
    for d in body.get("error", {}).get("details", []):
        if d.get("@type") == "type.googleapis.com/google.rpc.ErrorInfo":
            return d.get("reason")
    return None


def test_token_minted_by_the_sdk_works_for_its_uses_then_is_refused(base_url: str, api_key: str):
    client = make_client(base_url, api_key, "v1alpha")
    token = client.auth_tokens.create(config={"uses": 2})
    assert token.name and token.name.startswith("auth_tokens/"), token

    # The SDK refuses to send it on REST, before any request.
    eph = make_client(base_url, token.name, "v1alpha")
    with pytest.raises(_api_client.EphemeralTokenAPIKeyError):
        eph.models.count_tokens(model=MODEL, contents="hi")

    # Spent over REST with the Live client's headers: two uses succeed, the third is refused.
    status, body = post(base_url, f"/v1alpha/models/{MODEL}:countTokens", COUNT_BODY, live_headers(token.name))
    assert status == 200 and body["totalTokens"] > 0, body
    status, body = post(base_url, f"/v1alpha/models/{MODEL}:generateContent", GEN_BODY, live_headers(token.name))
    assert status == 200 and body["candidates"], body
    status, body = post(base_url, f"/v1alpha/models/{MODEL}:countTokens", COUNT_BODY, live_headers(token.name))
    assert status == 401, body
    assert body["error"]["status"] == "UNAUTHENTICATED"
    assert reason(body) == "ACCESS_TOKEN_EXPIRED"


def test_js_style_access_token_and_version_scope(base_url: str, api_key: str):
    client = make_client(base_url, api_key, "v1alpha")
    token = client.auth_tokens.create(
        config=types.CreateAuthTokenConfig(
            uses=1,
            live_connect_constraints=types.LiveConnectConstraints(
                model=MODEL, config=types.LiveConnectConfig(temperature=0.0)
            ),
            lock_additional_fields=[],
        )
    )
    name = token.name
    # Not on v1beta.
    status, body = post(base_url, f"/v1beta/models/{MODEL}:countTokens", COUNT_BODY, live_headers(name))
    assert status == 401 and reason(body) == "ACCESS_TOKEN_TYPE_UNSUPPORTED", body
    # A model the token does not pin: 403, nothing spent.
    status, body = post(base_url, "/v1alpha/models/gemini-2.5-pro:countTokens", COUNT_BODY, live_headers(name))
    assert status == 403, body
    # JS's ?access_token= on the pinned model: the one use.
    status, body = post(base_url, f"/v1alpha/models/{MODEL}:countTokens?access_token={name}", COUNT_BODY, {})
    assert status == 200, body
    status, body = post(base_url, f"/v1alpha/models/{MODEL}:countTokens?access_token={name}", COUNT_BODY, {})
    assert status == 401, body


def test_a_token_cannot_mint_tokens(base_url: str, api_key: str):
    client = make_client(base_url, api_key, "v1alpha")
    token = client.auth_tokens.create(config={"uses": 5})
    status, body = post(base_url, "/v1alpha/auth_tokens", {"uses": 1}, live_headers(token.name))
    assert status == 403 and body["error"]["status"] == "PERMISSION_DENIED", body
