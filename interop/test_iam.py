"""IAM Admin v1 (service accounts, their keys, roles), driven by Google's own Python clients.

Which clients, and why:
- `google-cloud-iam`'s `iam_admin_v1.IAMClient` ships only gRPC transports (2.27.0, the
  newest release, has no REST transport; `transport="rest"` is a KeyError), and Keyplane
  speaks REST. The REST client Google publishes for IAM v1 is the discovery client,
  `googleapiclient.discovery.build("iam", "v1")` (the one gcloud-style tools use); it drives
  every call here. Every answer is then parsed strictly (unknown fields refused) into
  `google-cloud-iam`'s own `iam_admin_v1` messages, so field names, enum values, base64
  `bytes` and timestamps are checked against Google's protos.
- Credentials are `google-auth` service-account credentials loaded from key files Keyplane
  issued: the owner file the server writes, and a key file created through this API. Both
  name the universe `keyplane.internal`, so google-auth signs its own JWTs (no token
  endpoint, no call to any Google host) and the clients are told that universe.
- A key file made through the API then calls other control-plane APIs: IAM again
  (discovery) and Resource Manager v3 (`google-cloud-resource-manager`'s GAPIC client over
  REST), with exactly the permissions of the role it was granted.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from google.api_core import exceptions as gexc
from google.auth import crypt, jwt
from google.cloud import iam_admin_v1, resourcemanager_v3
from google.oauth2 import service_account
from googleapiclient import discovery
from googleapiclient.errors import HttpError

from conftest import Keyplane

UNIVERSE = "keyplane.internal"
SA_DOMAIN = "iam.gserviceaccount.com"


# --- clients -------------------------------------------------------------------------------


def iam_client(keyplane: Keyplane, creds: service_account.Credentials):
    """Google's IAM v1 REST client (discovery, bundled document) pointed at Keyplane."""
    return discovery.build(
        "iam",
        "v1",
        credentials=creds,
        static_discovery=True,
        cache_discovery=False,
        client_options={"api_endpoint": keyplane.base_url + "/", "universe_domain": UNIVERSE},
    )


def crm_client(keyplane: Keyplane, creds: service_account.Credentials):
    """Resource Manager v3's GAPIC client over REST, pointed at Keyplane."""
    return resourcemanager_v3.ProjectsClient(
        credentials=creds,
        transport="rest",
        client_options={"api_endpoint": keyplane.base_url, "universe_domain": UNIVERSE},
    )


def strict(message_type, payload: dict[str, Any]):
    """Parses a JSON answer into google-cloud-iam's proto message, refusing unknown fields."""
    return message_type.from_json(json.dumps(payload), ignore_unknown_fields=False)


@pytest.fixture(scope="module")
def owner(keyplane: Keyplane) -> service_account.Credentials:
    creds = service_account.Credentials.from_service_account_file(str(keyplane.credentials))
    assert creds.universe_domain == UNIVERSE
    return creds


@pytest.fixture(scope="module")
def iam(keyplane: Keyplane, owner):
    return iam_client(keyplane, owner)


@pytest.fixture
def project(keyplane: Keyplane) -> str:
    """A fresh project, made with the keyplane CLI."""
    project_id = f"iam-{uuid.uuid4().hex[:12]}"
    keyplane.cli("projects", "create", project_id)
    return project_id


def account_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def http_status(e: HttpError) -> int:
    return int(e.resp.status)


def expect_http(status: int, call) -> HttpError:
    with pytest.raises(HttpError) as info:
        call.execute()
    assert http_status(info.value) == status, info.value
    body = json.loads(info.value.content)
    assert body["error"]["code"] == status, body
    return info.value


# --- roles ---------------------------------------------------------------------------------


def test_roles_list_and_get(iam):
    roles = iam.roles()
    basic = roles.list().execute()
    names = [r["name"] for r in basic["roles"]]
    for want in (
        "roles/owner",
        "roles/editor",
        "roles/viewer",
        "roles/iam.serviceAccountAdmin",
        "roles/iam.serviceAccountKeyAdmin",
        "roles/iam.serviceAccountUser",
        "roles/serviceusage.apiKeysAdmin",
    ):
        assert want in names
    for r in basic["roles"]:
        role = strict(iam_admin_v1.Role, r)
        assert role.title and not role.included_permissions, r

    # FULL, page by page with the client's own pager.
    seen: list[str] = []
    request = roles.list(view="FULL", pageSize=4)
    while request is not None:
        page = request.execute()
        for r in page.get("roles", []):
            role = strict(iam_admin_v1.Role, r)
            assert role.included_permissions, r
            seen.append(role.name)
        request = roles.list_next(request, page)
    assert seen == names

    for name in names:
        role = strict(iam_admin_v1.Role, roles.get(name=name).execute())
        assert role.name == name and role.included_permissions
    admin = strict(iam_admin_v1.Role, roles.get(name="roles/iam.serviceAccountKeyAdmin").execute())
    assert "iam.serviceAccountKeys.create" in admin.included_permissions
    assert admin.stage == iam_admin_v1.Role.RoleLaunchStage.GA
    expect_http(404, roles.get(name="roles/no.suchRole"))


# --- service accounts ----------------------------------------------------------------------


def test_service_account_lifecycle(iam, project):
    accounts = iam.projects().serviceAccounts()
    aid = account_id("life")
    email = f"{aid}@{project}.{SA_DOMAIN}"
    created = accounts.create(
        name=f"projects/{project}",
        body={"accountId": aid, "serviceAccount": {"displayName": "Life", "description": "d"}},
    ).execute()
    sa = strict(iam_admin_v1.ServiceAccount, created)
    assert sa.name == f"projects/{project}/serviceAccounts/{email}"
    assert (sa.project_id, sa.email, sa.display_name, sa.description) == (project, email, "Life", "d")
    assert len(sa.unique_id) == 21 and sa.unique_id.isdigit()
    assert sa.oauth2_client_id == sa.unique_id
    assert not sa.disabled

    # Duplicate and malformed account ids.
    e = expect_http(409, accounts.create(name=f"projects/{project}", body={"accountId": aid}))
    assert json.loads(e.content)["error"]["status"] == "ALREADY_EXISTS"
    for bad in ("short", "UPPER-case-id", "trailing-hyphen-"):
        expect_http(400, accounts.create(name=f"projects/{project}", body={"accountId": bad}))

    # Get by email, by unique id under the project wildcard.
    for name in (sa.name, f"projects/-/serviceAccounts/{sa.unique_id}"):
        assert strict(iam_admin_v1.ServiceAccount, accounts.get(name=name).execute()) == sa

    # List, one per page, with the client's pager.
    other = strict(
        iam_admin_v1.ServiceAccount,
        accounts.create(name=f"projects/{project}", body={"accountId": account_id("other")}).execute(),
    )
    listed: list[str] = []
    request = accounts.list(name=f"projects/{project}", pageSize=1)
    while request is not None:
        page = request.execute()
        assert len(page.get("accounts", [])) <= 1
        for a in page.get("accounts", []):
            listed.append(strict(iam_admin_v1.ServiceAccount, a).email)
        request = accounts.list_next(request, page)
    assert sorted(listed) == sorted([email, other.email]) and listed == sorted(listed)

    # Patch with an update mask; fields outside the mask are left alone.
    patched = strict(
        iam_admin_v1.ServiceAccount,
        accounts.patch(
            name=sa.name,
            body={"serviceAccount": {"displayName": "Renamed", "description": "ignored"}, "updateMask": "displayName"},
        ).execute(),
    )
    assert (patched.display_name, patched.description) == ("Renamed", "d")
    expect_http(
        400,
        accounts.patch(name=sa.name, body={"serviceAccount": {"email": "x@y"}, "updateMask": "email"}),
    )
    # The legacy update (PUT).
    updated = strict(
        iam_admin_v1.ServiceAccount,
        accounts.update(name=sa.name, body={"displayName": "Put", "description": "via update"}).execute(),
    )
    assert (updated.display_name, updated.description) == ("Put", "via update")

    # Disable, enable.
    assert accounts.disable(name=sa.name, body={}).execute() == {}
    assert strict(iam_admin_v1.ServiceAccount, accounts.get(name=sa.name).execute()).disabled
    assert accounts.enable(name=sa.name, body={}).execute() == {}
    assert not strict(iam_admin_v1.ServiceAccount, accounts.get(name=sa.name).execute()).disabled

    # Delete: 404 under the project, 403 under the wildcard (Google reveals nothing there).
    assert accounts.delete(name=sa.name).execute() == {}
    expect_http(404, accounts.get(name=sa.name))
    expect_http(403, accounts.get(name=f"projects/-/serviceAccounts/{sa.unique_id}"))
    listed = [a["email"] for a in accounts.list(name=f"projects/{project}").execute().get("accounts", [])]
    assert listed == [other.email]


# --- keys, and what a key file made through the API can do ---------------------------------


def grant(keyplane: Keyplane, owner, project: str, role: str, member: str) -> None:
    """Adds a binding to the project's IAM policy with Resource Manager's GAPIC client."""
    crm = crm_client(keyplane, owner)
    resource = crm.get_project(name=f"projects/{project}").name
    policy = crm.get_iam_policy(request={"resource": resource})
    policy.bindings.add(role=role, members=[member])
    crm.set_iam_policy(request={"resource": resource, "policy": policy})


def test_keys_and_a_new_key_file(keyplane: Keyplane, owner, iam, project):
    accounts = iam.projects().serviceAccounts()
    keys = accounts.keys()
    sa = strict(
        iam_admin_v1.ServiceAccount,
        accounts.create(name=f"projects/{project}", body={"accountId": account_id("keyed")}).execute(),
    )

    created = keys.create(
        name=sa.name, body={"privateKeyType": "TYPE_GOOGLE_CREDENTIALS_FILE", "keyAlgorithm": "KEY_ALG_RSA_2048"}
    ).execute()
    key = strict(iam_admin_v1.ServiceAccountKey, created)
    key_id = key.name.rsplit("/", 1)[1]
    assert key.name == f"{sa.name}/keys/{key_id}" and len(key_id) == 40
    assert key.private_key_type == iam_admin_v1.ServiceAccountPrivateKeyType.TYPE_GOOGLE_CREDENTIALS_FILE
    assert key.key_algorithm == iam_admin_v1.ServiceAccountKeyAlgorithm.KEY_ALG_RSA_2048
    assert key.key_origin == iam_admin_v1.ServiceAccountKeyOrigin.GOOGLE_PROVIDED
    assert key.key_type == iam_admin_v1.ListServiceAccountKeysRequest.KeyType.USER_MANAGED
    assert key.valid_before_time.year == 9999

    # privateKeyData is Google's JSON key file; google-auth loads it as is.
    info = json.loads(key.private_key_data)
    assert info["type"] == "service_account"
    assert (info["client_email"], info["private_key_id"], info["project_id"]) == (sa.email, key_id, project)
    assert info["client_id"] == sa.unique_id
    assert info["token_uri"] == f"{keyplane.base_url}/token"
    assert info["universe_domain"] == UNIVERSE
    new_creds = service_account.Credentials.from_service_account_info(info)
    assert new_creds.universe_domain == UNIVERSE

    # list: the key, without key material; keyTypes filters.
    listed = keys.list(name=sa.name, keyTypes=["USER_MANAGED"]).execute()
    assert [strict(iam_admin_v1.ServiceAccountKey, k).name for k in listed["keys"]] == [key.name]
    assert all("privateKeyData" not in k and "publicKeyData" not in k for k in listed["keys"])
    assert keys.list(name=sa.name, keyTypes=["SYSTEM_MANAGED"]).execute().get("keys", []) == []

    # get: the public key as an X.509 certificate, which google-auth verifies JWTs with.
    got = strict(
        iam_admin_v1.ServiceAccountKey, keys.get(name=key.name, publicKeyType="TYPE_X509_PEM_FILE").execute()
    )
    assert not got.private_key_data
    cert = x509.load_pem_x509_certificate(got.public_key_data)
    served = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    mine = (
        serialization.load_pem_private_key(info["private_key"].encode(), password=None)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert served == mine
    now = int(time.time())
    token = jwt.encode(
        crypt.RSASigner.from_service_account_info(info),
        {"iss": sa.email, "aud": "x", "iat": now, "exp": now + 600},
    )
    assert jwt.decode(token, certs={key_id: got.public_key_data.decode()}, audience="x")["iss"] == sa.email
    raw = strict(
        iam_admin_v1.ServiceAccountKey, keys.get(name=key.name, publicKeyType="TYPE_RAW_PUBLIC_KEY").execute()
    )
    assert raw.public_key_data == served
    expect_http(404, keys.get(name=f"{sa.name}/keys/{'0' * 40}"))

    # The new key file calls the control plane with exactly its role's permissions:
    # roles/viewer on the project lets it read projects and service accounts, not create.
    grant(keyplane, owner, project, "roles/viewer", f"serviceAccount:{sa.email}")
    as_new = iam_client(keyplane, new_creds)
    crm_new = crm_client(keyplane, new_creds)
    names = [a["email"] for a in as_new.projects().serviceAccounts().list(name=f"projects/{project}").execute()["accounts"]]
    assert sa.email in names
    assert crm_new.get_project(name=f"projects/{project}").project_id == project
    e = expect_http(
        403,
        as_new.projects().serviceAccounts().create(name=f"projects/{project}", body={"accountId": account_id("no")}),
    )
    assert "IAM_PERMISSION_DENIED" in e.content.decode()
    with pytest.raises(gexc.Forbidden):
        crm_new.get_project(name="projects/keyplane-admin")

    # A disabled key stops authenticating at once (401), and works again when enabled.
    assert keys.disable(name=key.name, body={}).execute() == {}
    assert strict(iam_admin_v1.ServiceAccountKey, keys.get(name=key.name).execute()).disabled
    with pytest.raises(gexc.Unauthorized):
        crm_client(keyplane, service_account.Credentials.from_service_account_info(info)).get_project(
            name=f"projects/{project}"
        )
    expect_http(401, iam_client(keyplane, new_creds).projects().serviceAccounts().list(name=f"projects/{project}"))
    assert keys.enable(name=key.name, body={}).execute() == {}
    assert crm_client(keyplane, new_creds).get_project(name=f"projects/{project}").project_id == project

    # So does a disabled account.
    assert accounts.disable(name=sa.name, body={}).execute() == {}
    with pytest.raises(gexc.Unauthorized):
        crm_client(keyplane, new_creds).get_project(name=f"projects/{project}")
    assert accounts.enable(name=sa.name, body={}).execute() == {}
    assert crm_client(keyplane, new_creds).get_project(name=f"projects/{project}").project_id == project

    # A deleted key is gone for good.
    assert keys.delete(name=key.name).execute() == {}
    expect_http(404, keys.get(name=key.name))
    with pytest.raises(gexc.Unauthorized):
        crm_client(keyplane, new_creds).get_project(name=f"projects/{project}")
    assert keys.list(name=sa.name).execute().get("keys", []) == []


def test_cli_key_file_works_with_google_clients(keyplane: Keyplane, owner, project, tmp_path):
    """`keyplane iam service-accounts keys create --output FILE` writes a file google-auth
    loads, and the GAPIC client authenticates with it."""
    aid = account_id("cli")
    email = f"{aid}@{project}.{SA_DOMAIN}"
    keyplane.cli("iam", "service-accounts", "create", aid, "--project", project)
    path = tmp_path / "key.json"
    keyplane.cli("iam", "service-accounts", "keys", "create", "--iam-account", email, "--output", str(path))
    assert (path.stat().st_mode & 0o777) == 0o600
    creds = service_account.Credentials.from_service_account_file(str(path))
    assert creds.service_account_email == email
    grant(keyplane, owner, project, "roles/viewer", f"serviceAccount:{email}")
    assert crm_client(keyplane, creds).get_project(name=f"projects/{project}").project_id == project
    listed = keyplane.cli_json("iam", "service-accounts", "keys", "list", "--iam-account", email)
    key_id = json.loads(path.read_text())["private_key_id"]
    assert [k["name"].rsplit("/", 1)[1] for k in listed["keys"]] == [key_id]
    keyplane.cli("iam", "service-accounts", "delete", email)
    with pytest.raises(gexc.Unauthorized):
        crm_client(keyplane, creds).get_project(name=f"projects/{project}")
