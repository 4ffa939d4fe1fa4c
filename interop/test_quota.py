"""Quotas and usage through Google's official Python SDK and the keyplane CLI.

A Keyplane of its own runs with a free tier of 2 requests per minute. google-genai gets
Google's 429: `errors.ClientError` with code 429, status RESOURCE_EXHAUSTED, and the
QuotaFailure / RetryInfo / Help details in `.details` (the whole parsed body, as the SDK
keeps it); `keyplane projects set-tier` lifts the limit for the very next call; `keyplane
usage` and `keyplane projects quotas` report what the SDK's calls used.
"""

from __future__ import annotations

import time

import pytest
from google.genai import errors, types

from conftest import make_client, start_keyplane

MODEL = "gemini-2.5-flash"
CONFIG = """
[quota.free]
rpm = 2

[usage]
flush_seconds = 1
"""


@pytest.fixture(scope="module")
def quota_keyplane(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("quota")
    config = d / "keyplane.toml"
    config.write_text(CONFIG)
    with start_keyplane(d, "--config", str(config)) as server:
        yield server


def _details(err: errors.APIError, kind: str) -> dict:
    body = err.details
    assert isinstance(body, dict) and "error" in body, body
    for d in body["error"].get("details", []):
        if d.get("@type") == f"type.googleapis.com/google.rpc.{kind}":
            return d
    raise AssertionError(f"no {kind} in {body}")


def test_the_sdk_sees_googles_429_and_a_tier_change_lifts_it(quota_keyplane):
    key = quota_keyplane.create_key()
    project = key["name"].split("/")[1]
    client = make_client(quota_keyplane.base_url, key["keyString"])
    config = types.GenerateContentConfig(max_output_tokens=2, temperature=0.0)
    # Both calls and the refusal must fall in one minute.
    if 60 - time.time() % 60 < 30:
        time.sleep(60 - time.time() % 60 + 1)
    for _ in range(2):
        r = client.models.generate_content(model=MODEL, contents="Say hi.", config=config)
        assert r.usage_metadata.prompt_token_count > 0

    with pytest.raises(errors.ClientError) as raised:
        client.models.generate_content(model=MODEL, contents="Say hi.", config=config)
    e = raised.value
    assert e.code == 429
    assert e.status == "RESOURCE_EXHAUSTED"
    assert e.message.startswith("You exceeded your current quota")
    violation = _details(e, "QuotaFailure")["violations"][0]
    assert violation["quotaId"] == "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
    assert violation["quotaDimensions"] == {"location": "global", "model": MODEL}
    assert violation["quotaValue"] == "2"
    delay = _details(e, "RetryInfo")["retryDelay"]
    assert delay.endswith("s") and 1 <= int(delay[:-1]) <= 60
    assert _details(e, "Help")["links"][0]["url"].startswith("https://ai.google.dev/")

    # The stream is refused before its first chunk, as the same ClientError.
    with pytest.raises(errors.ClientError) as raised:
        for _ in client.models.generate_content_stream(
            model=MODEL, contents="Say hi.", config=config
        ):
            pass
    assert raised.value.code == 429

    quotas = quota_keyplane.cli_json("projects", "quotas", project)
    assert quotas["tier"] == "free"
    assert quotas["models"][0]["requestsThisMinute"] == 2

    # A bad tier is refused by the server, and nothing changes.
    bad = quota_keyplane.cli("projects", "set-tier", project, "platinum", check=False)
    assert bad.returncode != 0
    assert "tier" in bad.stderr
    assert quota_keyplane.cli_json("projects", "quotas", project)["tier"] == "free"

    upgraded = quota_keyplane.cli_json("projects", "set-tier", project, "tier-1")
    assert upgraded["tier"] == "tier-1"
    r = client.models.generate_content(model=MODEL, contents="Say hi.", config=config)
    assert r.usage_metadata.candidates_token_count >= 1

    usage = quota_keyplane.cli_json("usage", project, "--since", "10m")
    assert usage["totals"]["requests"] == 5, usage
    assert usage["totals"]["errors"] == 2, usage
    ok = [b for b in usage["buckets"] if b["code"] == 200]
    assert sum(b["requests"] for b in ok) == 3, usage
    assert all(b["key"] == key["name"] for b in usage["buckets"]), usage
    assert sum(b["promptTokens"] for b in ok) > 0, usage
    table = quota_keyplane.cli("usage", project).stdout
    assert "generateContent" in table and "429" in table, table
