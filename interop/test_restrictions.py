"""API key restrictions and the Vertex AI express path, seen through google-genai.

Keys with restrictions are created over API Keys v2 (the CLI has no restriction flags), with
an owner access token minted from the server's owner-credentials.json by the JWT-bearer
grant. Every refusal must reach the SDK as `google.genai.errors.ClientError` with code 403
and Google's ErrorInfo reason in `.details` (the whole google.rpc.Status body).
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
import uuid
from typing import Any

import pytest
from google import genai
from google.auth import crypt, jwt
from google.genai import errors, types

from conftest import Keyplane, make_client

MODEL = "gemini-2.5-flash"
LOCAL_MODEL = "smollm2-135m-instruct"
GL = "generativelanguage.googleapis.com"
AIP = "aiplatform.googleapis.com"
SHORT = types.GenerateContentConfig(max_output_tokens=8, temperature=0.0, seed=7)
ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
SHA1 = "DA39A3EE5E6B4B0D3255BFEF95601890AFD80709"
SHA1_COLONS = ":".join(SHA1[i : i + 2] for i in range(0, 40, 2))


# --- control plane helpers ---------------------------------------------------------------


class ControlPlane:
    """Just enough of Google's control-plane wire to make projects and restricted keys."""

    def __init__(self, keyplane: Keyplane):
        self.keyplane = keyplane
        self.base = keyplane.base_url
        self.token = self._owner_token()

    def _owner_token(self) -> str:
        info = json.loads(self.keyplane.credentials.read_text())
        signer = crypt.RSASigner.from_service_account_info(info)
        now = int(time.time())
        assertion = jwt.encode(
            signer,
            {
                "iss": info["client_email"],
                "sub": info["client_email"],
                "aud": info["token_uri"],
                "scope": "https://www.googleapis.com/auth/cloud-platform",
                "iat": now,
                "exp": now + 3600,
            },
        )
        body = urllib.parse.urlencode(
            {
                "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                "assertion": assertion.decode() if isinstance(assertion, bytes) else assertion,
            }
        ).encode()
        req = urllib.request.Request(
            info["token_uri"],
            data=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.load(resp)["access_token"]

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(
            self.base + path,
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.load(resp)

    def project(self, prefix: str, services: tuple[str, ...]) -> str:
        project_id = f"{prefix}-{uuid.uuid4().hex[:8]}"
        op = self.post("/v3/projects", {"projectId": project_id, "displayName": prefix})
        assert op.get("done") and "error" not in op, op
        for service in services:
            op = self.post(f"/v1/projects/{project_id}/services/{service}:enable", {})
            assert op.get("done") and "error" not in op, op
        return project_id

    def key(self, project_id: str, restrictions: dict[str, Any]) -> dict[str, Any]:
        op = self.post(
            f"/v2/projects/{project_id}/locations/global/keys",
            {"displayName": "interop restricted", "restrictions": restrictions},
        )
        assert op.get("done") and "error" not in op, op
        key = op["response"]
        assert key["keyString"].startswith("AIza"), key
        return key


@pytest.fixture(scope="module")
def cp(keyplane: Keyplane) -> ControlPlane:
    return ControlPlane(keyplane)


@pytest.fixture(scope="module")
def project(cp: ControlPlane) -> str:
    """A project with both the Gemini API and Vertex AI enabled."""
    return cp.project("interop-rs", (GL, AIP))


def error_info(err: errors.APIError) -> dict[str, Any]:
    body = err.details
    assert isinstance(body, dict) and "error" in body, f"not a google.rpc.Status body: {body!r}"
    infos = [d for d in body["error"].get("details", []) if d.get("@type") == ERROR_INFO]
    assert infos, f"no ErrorInfo detail: {body!r}"
    return infos[0]


def assert_blocked(err: errors.APIError, reason: str, **metadata: str) -> dict[str, Any]:
    assert isinstance(err, errors.ClientError), type(err)
    assert err.code == 403, err
    assert err.status == "PERMISSION_DENIED", err
    info = error_info(err)
    assert info["reason"] == reason, info
    assert info["domain"] == "googleapis.com", info
    for k, v in metadata.items():
        assert info["metadata"].get(k) == v, (k, info)
    return info


def with_headers(base_url: str, key: str, headers: dict[str, str]) -> genai.Client:
    return genai.Client(api_key=key, http_options={"base_url": base_url, "headers": headers})


# --- Gemini API with restricted keys -----------------------------------------------------


def test_api_target_blocks_other_services(cp: ControlPlane, project: str, base_url: str) -> None:
    key = cp.key(project, {"apiTargets": [{"service": AIP}]})
    number = key["name"].split("/")[1]
    client = make_client(base_url, key["keyString"])  # the SDK's default version, /v1
    with pytest.raises(errors.ClientError) as exc:
        client.models.count_tokens(model=MODEL, contents="hi")
    method = "google.ai.generativelanguage.v1.GenerativeService.CountTokens"
    info = assert_blocked(
        exc.value,
        "API_KEY_SERVICE_BLOCKED",
        service=GL,
        consumer=f"projects/{number}",
        methodName=method,
    )
    assert exc.value.message == f"Requests to this API {GL} method {method} are blocked.", info


def test_api_target_method_wildcards(cp: ControlPlane, project: str, base_url: str) -> None:
    key = cp.key(project, {"apiTargets": [{"service": GL, "methods": ["Count*", "GetModel"]}]})
    client = make_client(base_url, key["keyString"], "v1beta")
    assert client.models.count_tokens(model=MODEL, contents="hi").total_tokens
    assert client.models.get(model=MODEL).name == f"models/{MODEL}"
    with pytest.raises(errors.ClientError) as exc:
        client.models.generate_content(model=MODEL, contents="hi", config=SHORT)
    assert_blocked(
        exc.value,
        "API_KEY_SERVICE_BLOCKED",
        methodName="google.ai.generativelanguage.v1beta.GenerativeService.GenerateContent",
    )
    with pytest.raises(errors.ClientError) as exc:
        list(client.models.list())
    assert_blocked(
        exc.value,
        "API_KEY_SERVICE_BLOCKED",
        methodName="google.ai.generativelanguage.v1beta.ModelService.ListModels",
    )


def test_ip_restriction(cp: ControlPlane, project: str, base_url: str) -> None:
    blocked = cp.key(project, {"serverKeyRestrictions": {"allowedIps": ["192.0.2.0/24", "2001:db8::/32"]}})
    client = make_client(base_url, blocked["keyString"])
    with pytest.raises(errors.ClientError) as exc:
        client.models.generate_content(model=MODEL, contents="hi", config=SHORT)
    assert_blocked(exc.value, "API_KEY_IP_ADDRESS_BLOCKED", callerIp="127.0.0.1", service=GL)
    # X-Forwarded-For from an untrusted peer (no trusted proxies configured) changes nothing.
    spoofing = with_headers(base_url, blocked["keyString"], {"X-Forwarded-For": "192.0.2.10"})
    with pytest.raises(errors.ClientError) as exc:
        spoofing.models.count_tokens(model=MODEL, contents="hi")
    assert_blocked(exc.value, "API_KEY_IP_ADDRESS_BLOCKED", callerIp="127.0.0.1")

    allowed = cp.key(project, {"serverKeyRestrictions": {"allowedIps": ["127.0.0.0/8"]}})
    allowed_client = make_client(base_url, allowed["keyString"])
    resp = allowed_client.models.generate_content(model=MODEL, contents="Name a colour.", config=SHORT)
    assert resp.text and resp.text.strip(), resp


def test_referrer_restriction(cp: ControlPlane, project: str, base_url: str) -> None:
    key = cp.key(project, {"browserKeyRestrictions": {"allowedReferrers": ["*.example.com/*"]}})
    no_referrer = make_client(base_url, key["keyString"])
    with pytest.raises(errors.ClientError) as exc:
        no_referrer.models.count_tokens(model=MODEL, contents="hi")
    assert_blocked(exc.value, "API_KEY_HTTP_REFERRER_BLOCKED", httpReferrer="<empty>")
    assert exc.value.message == "Requests from referer <empty> are blocked."

    apex = with_headers(base_url, key["keyString"], {"Referer": "https://example.com/"})
    with pytest.raises(errors.ClientError) as exc:
        apex.models.count_tokens(model=MODEL, contents="hi")
    assert_blocked(exc.value, "API_KEY_HTTP_REFERRER_BLOCKED", httpReferrer="https://example.com/")

    sub = with_headers(base_url, key["keyString"], {"Referer": "https://app.example.com/page"})
    assert sub.models.count_tokens(model=MODEL, contents="hi").total_tokens
    chunks = list(sub.models.generate_content_stream(model=MODEL, contents="hi", config=SHORT))
    assert chunks and chunks[-1].candidates[0].finish_reason is not None, chunks


def test_android_restriction(cp: ControlPlane, project: str, base_url: str) -> None:
    key = cp.key(
        project,
        {
            "androidKeyRestrictions": {
                "allowedApplications": [
                    {"packageName": "com.example.app", "sha1Fingerprint": SHA1_COLONS},
                ]
            }
        },
    )
    no_headers = make_client(base_url, key["keyString"])
    with pytest.raises(errors.ClientError) as exc:
        no_headers.models.count_tokens(model=MODEL, contents="hi")
    assert_blocked(exc.value, "API_KEY_ANDROID_APP_BLOCKED", androidPackage="<empty>")

    wrong_cert = with_headers(
        base_url, key["keyString"], {"X-Android-Package": "com.example.app", "X-Android-Cert": "0" * 40}
    )
    with pytest.raises(errors.ClientError) as exc:
        wrong_cert.models.count_tokens(model=MODEL, contents="hi")
    assert_blocked(exc.value, "API_KEY_ANDROID_APP_BLOCKED", androidPackage="com.example.app")

    app = with_headers(
        base_url, key["keyString"], {"X-Android-Package": "com.example.app", "X-Android-Cert": SHA1.lower()}
    )
    assert app.models.count_tokens(model=MODEL, contents="hi").total_tokens


def test_ios_restriction(cp: ControlPlane, project: str, base_url: str) -> None:
    key = cp.key(project, {"iosKeyRestrictions": {"allowedBundleIds": ["com.example.ios"]}})
    other = with_headers(base_url, key["keyString"], {"X-Ios-Bundle-Identifier": "com.example.other"})
    with pytest.raises(errors.ClientError) as exc:
        other.models.count_tokens(model=MODEL, contents="hi")
    assert_blocked(exc.value, "API_KEY_IOS_APP_BLOCKED", iosBundleId="com.example.other")
    assert exc.value.message == "Requests from this iOS client application com.example.other are blocked."

    app = with_headers(base_url, key["keyString"], {"x-ios-bundle-identifier": "com.example.ios"})
    assert app.models.get(model=MODEL).name == f"models/{MODEL}"


# --- Vertex AI express mode ----------------------------------------------------------------


def vertex_client(base_url: str, key: str, api_version: str | None = None) -> genai.Client:
    http_options: dict[str, Any] = {"base_url": base_url}
    if api_version:
        http_options["api_version"] = api_version
    return genai.Client(vertexai=True, api_key=key, http_options=http_options)


@pytest.mark.parametrize("api_version", [None, "v1"])
def test_vertex_express_mode(cp: ControlPlane, project: str, base_url: str, api_version: str | None) -> None:
    """The SDK's own default for express mode is /v1beta1; /v1 is Google's documented path."""
    key = cp.key(project, {})
    client = vertex_client(base_url, key["keyString"], api_version)
    resp = client.models.generate_content(model=MODEL, contents="Name one colour.", config=SHORT)
    assert resp.text and resp.text.strip(), resp
    assert resp.model_version and LOCAL_MODEL in resp.model_version, resp
    assert resp.usage_metadata and resp.usage_metadata.prompt_token_count, resp

    counted = client.models.count_tokens(model=MODEL, contents="Name one colour.")
    assert counted.total_tokens and counted.total_tokens > 0, counted

    chunks = list(client.models.generate_content_stream(model=MODEL, contents="hi", config=SHORT))
    assert chunks and chunks[-1].candidates[0].finish_reason in (
        types.FinishReason.STOP,
        types.FinishReason.MAX_TOKENS,
    ), chunks


def test_vertex_express_needs_aiplatform_enabled(cp: ControlPlane, base_url: str) -> None:
    gemini_only = cp.project("interop-novtx", (GL,))
    key = cp.key(gemini_only, {})
    vertex = vertex_client(base_url, key["keyString"])
    with pytest.raises(errors.ClientError) as exc:
        vertex.models.generate_content(model=MODEL, contents="hi", config=SHORT)
    assert exc.value.code == 403 and exc.value.status == "PERMISSION_DENIED", exc.value
    info = error_info(exc.value)
    assert info["reason"] == "SERVICE_DISABLED", info
    assert info["metadata"]["service"] == AIP, info
    assert exc.value.message.startswith("Vertex AI API has not been used in project"), exc.value.message
    # The same key still reaches the Gemini API.
    gemini = make_client(base_url, key["keyString"])
    assert gemini.models.count_tokens(model=MODEL, contents="hi").total_tokens


def test_vertex_express_respects_api_targets(cp: ControlPlane, project: str, base_url: str) -> None:
    gemini_only = cp.key(project, {"apiTargets": [{"service": GL}]})
    vertex = vertex_client(base_url, gemini_only["keyString"])
    with pytest.raises(errors.ClientError) as exc:
        vertex.models.count_tokens(model=MODEL, contents="hi")
    assert_blocked(
        exc.value,
        "API_KEY_SERVICE_BLOCKED",
        service=AIP,
        methodName="google.cloud.aiplatform.v1beta1.PredictionService.CountTokens",
    )
    vertex_only = cp.key(project, {"apiTargets": [{"service": AIP, "methods": ["Generate*", "CountTokens"]}]})
    vertex = vertex_client(base_url, vertex_only["keyString"])
    assert vertex.models.count_tokens(model=MODEL, contents="hi").total_tokens
    gemini = make_client(base_url, vertex_only["keyString"])
    with pytest.raises(errors.ClientError) as exc:
        gemini.models.count_tokens(model=MODEL, contents="hi")
    assert_blocked(exc.value, "API_KEY_SERVICE_BLOCKED", service=GL)
