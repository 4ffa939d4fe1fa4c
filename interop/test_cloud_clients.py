"""Keyplane's control plane driven by Google's own Cloud client libraries, unchanged.

GAPIC clients over REST (`transport="rest"`): google-cloud-api-keys (ApiKeysClient),
google-cloud-resource-manager (ProjectsClient, OrganizationsClient),
google-cloud-org-policy (OrgPolicyClient) and google-cloud-service-usage
(ServiceUsageClient). They authenticate with google-auth from the owner key file Keyplane
wrote at first start; its universe_domain is "keyplane.internal", so google-auth signs its
own JWTs and never calls a Google host. Where a client cannot express a field
(`serviceAccountEmail` is absent from google-cloud-api-keys 0.9.1), the same credentials go
through google-auth's AuthorizedSession on the same REST paths.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest
import requests
from google.api_core import exceptions, operation
from google.auth.transport.requests import AuthorizedSession
from google.cloud import api_keys_v2, orgpolicy_v2, resourcemanager_v3, service_usage_v1
from google.iam.v1 import policy_pb2
from google.longrunning import operations_pb2
from google.oauth2 import service_account
from google.protobuf import empty_pb2, field_mask_pb2, json_format
from google.rpc import error_details_pb2  # noqa: F401  (registers ErrorInfo, PreconditionFailure)

from conftest import Keyplane

UNIVERSE = "keyplane.internal"
GL = "generativelanguage.googleapis.com"
CONSTRAINT = "iam.managed.disableServiceAccountApiKeyCreation"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
KEY_TYPE = "type.googleapis.com/google.api.apikeys.v2.Key"


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def creds(keyplane: Keyplane) -> service_account.Credentials:
    c = service_account.Credentials.from_service_account_file(str(keyplane.credentials))
    assert c.universe_domain == UNIVERSE, c.universe_domain
    return c


@pytest.fixture(scope="module")
def opts(keyplane: Keyplane) -> dict[str, str]:
    # An http:// endpoint is kept as given by the REST transports.
    return {"api_endpoint": keyplane.base_url, "universe_domain": UNIVERSE}


@pytest.fixture(scope="module")
def keys_client(creds, opts) -> api_keys_v2.ApiKeysClient:
    return api_keys_v2.ApiKeysClient(credentials=creds, transport="rest", client_options=opts)


@pytest.fixture(scope="module")
def projects_client(creds, opts) -> resourcemanager_v3.ProjectsClient:
    return resourcemanager_v3.ProjectsClient(credentials=creds, transport="rest", client_options=opts)


@pytest.fixture(scope="module")
def orgs_client(creds, opts) -> resourcemanager_v3.OrganizationsClient:
    return resourcemanager_v3.OrganizationsClient(
        credentials=creds, transport="rest", client_options=opts
    )


@pytest.fixture(scope="module")
def policy_client(creds, opts) -> orgpolicy_v2.OrgPolicyClient:
    return orgpolicy_v2.OrgPolicyClient(credentials=creds, transport="rest", client_options=opts)


@pytest.fixture(scope="module")
def usage_client(creds, opts) -> service_usage_v1.ServiceUsageClient:
    return service_usage_v1.ServiceUsageClient(
        credentials=creds, transport="rest", client_options=opts
    )


@pytest.fixture(scope="module")
def session(creds) -> AuthorizedSession:
    """google-auth's own HTTP session (self-signed JWT with a scope claim)."""
    return AuthorizedSession(creds.with_scopes([CLOUD_PLATFORM]))


def new_project_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create_project(client: resourcemanager_v3.ProjectsClient, prefix: str) -> resourcemanager_v3.Project:
    pid = new_project_id(prefix)
    op = client.create_project(
        project=resourcemanager_v3.Project(project_id=pid, display_name="Interop project")
    )
    project = op.result(timeout=60)
    assert project.project_id == pid
    return project


@pytest.fixture(scope="module")
def gl_project(projects_client, usage_client) -> resourcemanager_v3.Project:
    """A project with the Generative Language API enabled."""
    project = create_project(projects_client, "ik-keys")
    usage_client.enable_service(
        request={"name": f"projects/{project.project_id}/services/{GL}"}
    ).result(timeout=60)
    return project


def reasons(err: exceptions.GoogleAPICallError) -> list[str]:
    out = []
    for d in err.details or []:
        if isinstance(d, dict) and d.get("@type") == ERROR_INFO:
            out.append(d.get("reason"))
    if err.reason:
        out.append(err.reason)
    return out


def models_status(base_url: str, key_string: str) -> int:
    """HTTP status of a data-plane call with the key (listing models generates nothing)."""
    r = requests.get(
        f"{base_url}/v1beta/models", headers={"x-goog-api-key": key_string}, timeout=30
    )
    return r.status_code


# --- Resource Manager v3 -------------------------------------------------------------------


def test_projects_create_get_list_search_update_delete_undelete(projects_client, keyplane) -> None:
    project = create_project(projects_client, "ik-crm")
    pid = project.project_id
    number = project.name.split("/")[1]
    assert number.isdigit() and len(number) == 12, project.name
    assert project.state == resourcemanager_v3.Project.State.ACTIVE
    assert project.parent.startswith("organizations/")

    by_id = projects_client.get_project(name=f"projects/{pid}")
    by_number = projects_client.get_project(name=project.name)
    assert by_id.name == by_number.name == project.name

    listed = [p.project_id for p in projects_client.list_projects(parent=project.parent)]
    assert pid in listed

    found = list(projects_client.search_projects(query=f"id:{pid}"))
    assert [p.project_id for p in found] == [pid]

    # Patch display name and labels with an update mask.
    op = projects_client.update_project(
        project=resourcemanager_v3.Project(
            name=project.name, display_name="Renamed one", labels={"env": "dev"}
        ),
        update_mask=field_mask_pb2.FieldMask(paths=["display_name", "labels"]),
    )
    updated = op.result(timeout=60)
    assert updated.display_name == "Renamed one"
    assert dict(updated.labels) == {"env": "dev"}
    assert [p.project_id for p in projects_client.search_projects(query=f"labels.env:dev id:{pid}")] == [pid]
    assert list(projects_client.search_projects(query=f"labels.env:prod id:{pid}")) == []
    assert [p.project_id for p in projects_client.search_projects(query=f"displayName:renamed* id:{pid}")] == [pid]

    # Bad input: an immutable field in the mask, an invalid display name. Nothing changes.
    with pytest.raises(exceptions.BadRequest):
        projects_client.update_project(
            project=resourcemanager_v3.Project(name=project.name, project_id="other-id-123"),
            update_mask=field_mask_pb2.FieldMask(paths=["project_id"]),
        ).result(timeout=60)
    with pytest.raises(exceptions.BadRequest):
        projects_client.update_project(
            project=resourcemanager_v3.Project(name=project.name, display_name="x;"),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        ).result(timeout=60)
    with pytest.raises(exceptions.BadRequest):
        list(projects_client.search_projects(query="nosuchfield:x"))
    again = projects_client.get_project(name=project.name)
    assert (again.display_name, dict(again.labels), again.etag) == (
        "Renamed one",
        {"env": "dev"},
        updated.etag,
    )

    # Delete: DELETE_REQUESTED, still readable; undelete: ACTIVE again.
    deleted = projects_client.delete_project(name=project.name).result(timeout=60)
    assert deleted.state == resourcemanager_v3.Project.State.DELETE_REQUESTED
    assert deleted.delete_time
    assert projects_client.get_project(name=project.name).state == resourcemanager_v3.Project.State.DELETE_REQUESTED
    found = list(projects_client.search_projects(query=f"id:{pid} state:DELETE_REQUESTED"))
    assert [p.project_id for p in found] == [pid]
    with pytest.raises(exceptions.BadRequest):  # FAILED_PRECONDITION: already deleted
        projects_client.delete_project(name=project.name).result(timeout=60)
    restored = projects_client.undelete_project(name=project.name).result(timeout=60)
    assert restored.state == resourcemanager_v3.Project.State.ACTIVE
    assert not restored.delete_time


def test_project_create_rejects_invalid_ids(projects_client) -> None:
    for bad in ("Bad_Id", "short", "ends-with-hyphen-", "9starts-with-digit"):
        with pytest.raises(exceptions.BadRequest):
            projects_client.create_project(
                project=resourcemanager_v3.Project(project_id=bad)
            ).result(timeout=60)


# --- Service Usage v1 ----------------------------------------------------------------------


def test_service_usage_enable_list_get_disable(projects_client, usage_client) -> None:
    project = create_project(projects_client, "ik-su")
    name = f"projects/{project.project_id}/services/{GL}"
    enabled = usage_client.enable_service(request={"name": name}).result(timeout=60)
    assert enabled.service.state == service_usage_v1.State.ENABLED
    got = usage_client.get_service(request={"name": name})
    assert got.state == service_usage_v1.State.ENABLED
    assert got.name == f"{project.name}/services/{GL}"
    listed = [
        s.config.name
        for s in usage_client.list_services(
            request={"parent": project.name, "filter": "state:ENABLED"}
        )
    ]
    assert GL in listed
    disabled = usage_client.disable_service(
        request={
            "name": name,
            "disable_dependent_services": True,
            "check_if_service_has_usage": service_usage_v1.DisableServiceRequest.CheckIfServiceHasUsage.SKIP,
        }
    ).result(timeout=60)
    assert disabled.service.state == service_usage_v1.State.DISABLED
    with pytest.raises(exceptions.GoogleAPICallError):
        usage_client.enable_service(
            request={"name": f"projects/{project.project_id}/services/nosuch.googleapis.com"}
        ).result(timeout=60)


# --- API Keys v2 ---------------------------------------------------------------------------


def test_key_lifecycle_with_update_mask_delete_undelete(keys_client, gl_project, keyplane) -> None:
    parent = f"projects/{gl_project.project_id}/locations/global"
    key_id = f"ik-{uuid.uuid4().hex[:8]}"
    op = keys_client.create_key(
        parent=parent,
        key=api_keys_v2.Key(
            display_name="interop key",
            annotations={"team": "interop"},
            restrictions=api_keys_v2.Restrictions(
                api_targets=[api_keys_v2.ApiTarget(service=GL)]
            ),
        ),
        key_id=key_id,
    )
    key = op.result(timeout=60)
    assert key.name == f"{gl_project.name}/locations/global/keys/{key_id}"
    assert key.key_string.startswith("AIza") and len(key.key_string) == 39
    key_string = key.key_string
    assert models_status(keyplane.base_url, key_string) == 200

    got = keys_client.get_key(name=f"{parent}/keys/{key_id}")
    assert got.uid == key.uid and not got.key_string
    assert dict(got.annotations) == {"team": "interop"}
    assert keys_client.get_key_string(name=key.name).key_string == key_string
    assert key.name in [k.name for k in keys_client.list_keys(parent=parent)]
    looked = keys_client.lookup_key(request={"key_string": key_string})
    assert (looked.parent, looked.name) == (gl_project.name, key.name)

    # Update with a mask: display name and restrictions change, annotations are kept.
    changed = api_keys_v2.Key(
        name=key.name,
        display_name="renamed by interop",
        annotations={"ignored": "not in the mask"},
        restrictions=api_keys_v2.Restrictions(
            server_key_restrictions=api_keys_v2.ServerKeyRestrictions(
                allowed_ips=["10.0.0.0/8", "2001:db8::/32", "127.0.0.1"]
            )
        ),
    )
    updated = keys_client.update_key(
        key=changed, update_mask=field_mask_pb2.FieldMask(paths=["display_name", "restrictions"])
    ).result(timeout=60)
    assert updated.display_name == "renamed by interop"
    assert list(updated.restrictions.server_key_restrictions.allowed_ips) == [
        "10.0.0.0/8",
        "2001:db8::/32",
        "127.0.0.1",
    ]
    assert not updated.restrictions.api_targets
    assert dict(updated.annotations) == {"team": "interop"}
    assert updated.etag and updated.etag != got.etag
    # The loopback caller is inside the allowed IPs: the key still works.
    assert models_status(keyplane.base_url, key_string) == 200

    # Without a mask: the fields present are replaced.
    implied = keys_client.update_key(
        key=api_keys_v2.Key(name=key.name, display_name="implied mask")
    ).result(timeout=60)
    assert implied.display_name == "implied mask"
    assert list(implied.restrictions.server_key_restrictions.allowed_ips)

    # Bad input: immutable and unknown mask paths, a stale etag, a bad IP. Nothing changes.
    before = keys_client.get_key(name=key.name)
    with pytest.raises(exceptions.BadRequest) as e:
        keys_client.update_key(
            key=api_keys_v2.Key(name=key.name, display_name="x"),
            update_mask=field_mask_pb2.FieldMask(paths=["name", "display_name"]),
        )
    assert "APIKEYS_UPDATE_MASK_CONTAINS_IMMUTABLE_FIELDS" in reasons(e.value)
    with pytest.raises(exceptions.BadRequest):
        keys_client.update_key(
            key=api_keys_v2.Key(name=key.name, display_name="x"),
            update_mask=field_mask_pb2.FieldMask(paths=["no_such_field"]),
        )
    with pytest.raises(exceptions.Conflict):
        keys_client.update_key(
            key=api_keys_v2.Key(name=key.name, display_name="x", etag='W/"stale"'),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        )
    with pytest.raises(exceptions.BadRequest) as e:
        keys_client.update_key(
            key=api_keys_v2.Key(
                name=key.name,
                restrictions=api_keys_v2.Restrictions(
                    server_key_restrictions=api_keys_v2.ServerKeyRestrictions(allowed_ips=["10.0.0.300"])
                ),
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["restrictions"]),
        )
    assert "allowed_ips" in str(e.value.details) or "allowed_ips" in e.value.message
    after = keys_client.get_key(name=key.name)
    assert (after.etag, after.display_name, after.update_time) == (
        before.etag,
        before.display_name,
        before.update_time,
    )

    # Delete (etag-checked), undelete.
    with pytest.raises(exceptions.Conflict):
        keys_client.delete_key(request={"name": key.name, "etag": 'W/"stale"'})
    deleted = keys_client.delete_key(request={"name": key.name, "etag": after.etag}).result(timeout=60)
    assert deleted.delete_time
    assert models_status(keyplane.base_url, key_string) == 400
    assert keys_client.get_key(name=key.name).delete_time
    assert key.name not in [k.name for k in keys_client.list_keys(parent=parent)]
    assert key.name in [
        k.name for k in keys_client.list_keys(request={"parent": parent, "show_deleted": True})
    ]
    with pytest.raises(exceptions.BadRequest):  # FAILED_PRECONDITION: deleted keys are not updated
        keys_client.update_key(
            key=api_keys_v2.Key(name=key.name, display_name="x"),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        )
    restored = keys_client.undelete_key(request={"name": key.name}).result(timeout=60)
    assert not restored.delete_time
    assert models_status(keyplane.base_url, key_string) == 200

    # A duplicate keyId: HTTP 200 and an operation that failed with ALREADY_EXISTS.
    with pytest.raises(exceptions.AlreadyExists):
        keys_client.create_key(parent=parent, key=api_keys_v2.Key(), key_id=key_id).result(timeout=60)


def test_deleted_project_keys_stop_working(projects_client, usage_client, keys_client, keyplane) -> None:
    project = create_project(projects_client, "ik-del")
    usage_client.enable_service(
        request={"name": f"projects/{project.project_id}/services/{GL}"}
    ).result(timeout=60)
    key = keys_client.create_key(
        parent=f"{project.name}/locations/global", key=api_keys_v2.Key(display_name="k")
    ).result(timeout=60)
    assert models_status(keyplane.base_url, key.key_string) == 200
    projects_client.delete_project(name=project.name).result(timeout=60)
    assert models_status(keyplane.base_url, key.key_string) == 403
    projects_client.undelete_project(name=project.name).result(timeout=60)
    assert models_status(keyplane.base_url, key.key_string) == 200


# --- Org Policy v2 and keys bound to service accounts ---------------------------------------


def policy_admin_client(
    session: AuthorizedSession, base: str, project: str, orgs_client, organization: str, opts
) -> orgpolicy_v2.OrgPolicyClient:
    """An OrgPolicyClient authenticated as a new service account holding
    roles/orgpolicy.policyAdmin on the organization, with the key file Keyplane issues for it
    (the owner account itself is left as it was)."""
    r = session.post(
        f"{base}/v1/projects/{project}/serviceAccounts",
        json={"accountId": "policy-admin", "serviceAccount": {"displayName": "Policy admin"}},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    email = r.json()["email"]
    r = session.post(f"{base}/v1/projects/{project}/serviceAccounts/{email}/keys", json={}, timeout=60)
    assert r.status_code == 200, r.text
    info = json.loads(base64.b64decode(r.json()["privateKeyData"]))
    grant_policy_admin(orgs_client, organization, f"serviceAccount:{email}")
    admin_creds = service_account.Credentials.from_service_account_info(info)
    return orgpolicy_v2.OrgPolicyClient(
        credentials=admin_creds, transport="rest", client_options=opts
    )


def grant_policy_admin(orgs_client, organization: str, member: str) -> None:
    """Only roles/orgpolicy.policyAdmin changes org policies (owners do not)."""
    policy = orgs_client.get_iam_policy(request={"resource": organization})
    for b in policy.bindings:
        if b.role == "roles/orgpolicy.policyAdmin" and member in b.members:
            return
    policy.bindings.append(policy_pb2.Binding(role="roles/orgpolicy.policyAdmin", members=[member]))
    orgs_client.set_iam_policy(request={"resource": organization, "policy": policy})


def create_bound_key(session: AuthorizedSession, base: str, project: str, email: str) -> dict[str, Any]:
    """CreateKey with serviceAccountEmail (not expressible with google-cloud-api-keys 0.9.1)."""
    r = session.post(
        f"{base}/v2/projects/{project}/locations/global/keys",
        json={
            "displayName": "bound",
            "serviceAccountEmail": email,
            "restrictions": {"apiTargets": [{"service": "aiplatform.googleapis.com"}]},
        },
        timeout=60,
    )
    assert r.status_code == 200, r.text
    op = r.json()
    assert op["done"] is True, op
    return op


def test_org_policy_gates_service_account_bound_keys(
    projects_client, orgs_client, policy_client, keys_client, session, opts, keyplane
) -> None:
    base = keyplane.base_url
    project = create_project(projects_client, "ik-pol")
    pid = project.project_id
    organization = project.parent
    policy_name = f"projects/{pid}/policies/{CONSTRAINT}"

    # Only a policy administrator may change policies: not even the owner.
    with pytest.raises(exceptions.Forbidden):
        policy_client.create_policy(
            parent=f"projects/{pid}",
            policy=orgpolicy_v2.Policy(
                name=policy_name,
                spec=orgpolicy_v2.PolicySpec(rules=[orgpolicy_v2.PolicySpec.PolicyRule(enforce=False)]),
            ),
        )
    admin = policy_admin_client(session, base, pid, orgs_client, organization, opts)

    # A fresh installation enforces the constraint on its organization.
    org_policy = policy_client.get_policy(name=f"{organization}/policies/{CONSTRAINT}")
    assert [r.enforce for r in org_policy.spec.rules] == [True]
    effective = policy_client.get_effective_policy(name=policy_name)
    assert effective.name == f"{project.name}/policies/{CONSTRAINT}"
    assert [r.enforce for r in effective.spec.rules] == [True]
    with pytest.raises(exceptions.NotFound):
        policy_client.get_policy(name=policy_name)
    constraints = list(policy_client.list_constraints(parent=f"projects/{pid}"))
    assert [c.name for c in constraints] == [f"{project.name}/constraints/{CONSTRAINT}"]
    assert constraints[0].boolean_constraint is not None

    # A service account of the project to bind keys to.
    r = session.post(
        f"{base}/v1/projects/{pid}/serviceAccounts",
        json={"accountId": "bound-caller", "serviceAccount": {"displayName": "Bound caller"}},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    email = r.json()["email"]

    # Enforced: the key operation fails with FAILED_PRECONDITION naming the constraint.
    op = create_bound_key(session, base, pid, email)
    assert op["error"]["code"] == 9, op
    assert f"constraints/{CONSTRAINT}" in op["error"]["message"], op
    # The same operation, read the way the GAPIC client reads it, raises FailedPrecondition.
    future = operation.from_gapic(
        json_format.ParseDict(op, operations_pb2.Operation()),
        keys_client.transport.operations_client,
        api_keys_v2.Key,
        metadata_type=empty_pb2.Empty,
    )
    with pytest.raises(exceptions.FailedPrecondition):
        future.result(timeout=30)

    # Bad input to set: list-constraint fields on a boolean constraint. Nothing is stored.
    with pytest.raises(exceptions.BadRequest):
        admin.create_policy(
            parent=f"projects/{pid}",
            policy=orgpolicy_v2.Policy(
                name=policy_name,
                spec=orgpolicy_v2.PolicySpec(rules=[orgpolicy_v2.PolicySpec.PolicyRule(allow_all=True)]),
            ),
        )
    with pytest.raises(exceptions.NotFound):
        policy_client.get_policy(name=policy_name)

    # Not enforced on the project: a key may be bound to the project's account.
    created = admin.create_policy(
        parent=f"projects/{pid}",
        policy=orgpolicy_v2.Policy(
            name=policy_name,
            spec=orgpolicy_v2.PolicySpec(rules=[orgpolicy_v2.PolicySpec.PolicyRule(enforce=False)]),
        ),
    )
    assert created.name == f"{project.name}/policies/{CONSTRAINT}"
    assert created.etag
    with pytest.raises(exceptions.Conflict):  # ALREADY_EXISTS
        admin.create_policy(parent=f"projects/{pid}", policy=created)
    assert [r.enforce for r in policy_client.get_effective_policy(name=policy_name).spec.rules] == [False]
    op = create_bound_key(session, base, pid, email)
    assert "error" not in op, op
    bound = op["response"]
    assert bound["@type"] == KEY_TYPE
    assert bound["serviceAccountEmail"] == email
    assert bound["keyString"].startswith("AIza")
    got = session.get(f"{base}/v2/{bound['name']}", timeout=60).json()
    assert got["serviceAccountEmail"] == email
    # The binding is immutable.
    r = session.patch(
        f"{base}/v2/{bound['name']}",
        params={"updateMask": "serviceAccountEmail"},
        json={"serviceAccountEmail": email},
        timeout=60,
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["details"][0]["reason"] == "APIKEYS_UPDATE_MASK_CONTAINS_IMMUTABLE_FIELDS"
    # An account of another project, or none at all, cannot be bound.
    op_or_err = session.post(
        f"{base}/v2/projects/{pid}/locations/global/keys",
        json={"serviceAccountEmail": "nobody@elsewhere-1234.iam.gserviceaccount.com"},
        timeout=60,
    )
    assert op_or_err.status_code == 400, op_or_err.text

    # Patch with a stale etag: ABORTED (409); with the right one: enforced again.
    with pytest.raises(exceptions.Conflict):
        admin.update_policy(
            policy=orgpolicy_v2.Policy(
                name=policy_name,
                etag="stale",
                spec=orgpolicy_v2.PolicySpec(rules=[orgpolicy_v2.PolicySpec.PolicyRule(enforce=True)]),
            )
        )
    current = policy_client.get_policy(name=policy_name)
    assert [r.enforce for r in current.spec.rules] == [False]
    updated = admin.update_policy(
        request={
            "policy": orgpolicy_v2.Policy(
                name=policy_name,
                etag=current.etag,
                spec=orgpolicy_v2.PolicySpec(
                    rules=[orgpolicy_v2.PolicySpec.PolicyRule(enforce=True)]
                ),
            ),
            "update_mask": field_mask_pb2.FieldMask(paths=["spec"]),
        }
    )
    assert [r.enforce for r in updated.spec.rules] == [True]
    assert updated.etag != current.etag
    assert create_bound_key(session, base, pid, email)["error"]["code"] == 9
    # The key bound while it was allowed keeps its binding (not retroactive).
    assert session.get(f"{base}/v2/{bound['name']}", timeout=60).json()["serviceAccountEmail"] == email

    # Delete the project's policy: the organization's (enforced) applies again.
    admin.delete_policy(name=policy_name)
    with pytest.raises(exceptions.NotFound):
        policy_client.get_policy(name=policy_name)
    assert [r.enforce for r in policy_client.get_effective_policy(name=policy_name).spec.rules] == [True]
    with pytest.raises(exceptions.NotFound):
        policy_client.get_policy(name=f"projects/{pid}/policies/compute.disableSerialPortAccess")
