"""IAM allow policies on projects and the organization, driven by Resource Manager's GAPIC
client (google-cloud-resource-manager, REST transport) with the owner key file Keyplane
wrote at first start: getIamPolicy, setIamPolicy with the etag (a stale etag raises the
client's 409 exception), testIamPermissions, organizations get and search, and Google's
errors for an unknown role, a bad member and a project the caller may not see.
"""

from __future__ import annotations

import uuid

import pytest
from google.api_core import exceptions
from google.cloud import resourcemanager_v3
from google.iam.v1 import iam_policy_pb2, options_pb2, policy_pb2
from google.oauth2 import service_account

from conftest import Keyplane

UNIVERSE = "keyplane.internal"


@pytest.fixture(scope="module")
def creds(keyplane: Keyplane) -> service_account.Credentials:
    return service_account.Credentials.from_service_account_file(str(keyplane.credentials))


@pytest.fixture(scope="module")
def opts(keyplane: Keyplane) -> dict[str, str]:
    return {"api_endpoint": keyplane.base_url, "universe_domain": UNIVERSE}


@pytest.fixture(scope="module")
def projects(creds, opts) -> resourcemanager_v3.ProjectsClient:
    return resourcemanager_v3.ProjectsClient(credentials=creds, transport="rest", client_options=opts)


@pytest.fixture(scope="module")
def orgs(creds, opts) -> resourcemanager_v3.OrganizationsClient:
    return resourcemanager_v3.OrganizationsClient(
        credentials=creds, transport="rest", client_options=opts
    )


def new_project(projects: resourcemanager_v3.ProjectsClient) -> resourcemanager_v3.Project:
    pid = f"ip-{uuid.uuid4().hex[:8]}"
    return projects.create_project(project=resourcemanager_v3.Project(project_id=pid)).result(
        timeout=60
    )


def test_project_policy_read_modify_write(projects, creds) -> None:
    project = new_project(projects)
    resource = project.name  # projects/NUMBER
    policy = projects.get_iam_policy(
        request=iam_policy_pb2.GetIamPolicyRequest(
            resource=resource, options=options_pb2.GetPolicyOptions(requested_policy_version=3)
        )
    )
    assert policy.version == 1
    assert [(b.role, list(b.members)) for b in policy.bindings] == [
        ("roles/owner", [f"serviceAccount:{creds.service_account_email}"])
    ]
    assert policy.etag  # bytes, decoded from base64 by the client

    stale = policy_pb2.Policy()
    stale.CopyFrom(policy)
    policy.bindings.add(role="roles/viewer", members=["user:viewer@example.com"])
    updated = projects.set_iam_policy(request={"resource": resource, "policy": policy})
    assert updated.etag != policy.etag
    assert {b.role for b in updated.bindings} == {"roles/owner", "roles/viewer"}
    assert projects.get_iam_policy(request={"resource": resource}) == updated

    # The etag read before the change is stale now: ABORTED, HTTP 409.
    stale.bindings.add(role="roles/editor", members=["user:late@example.com"])
    with pytest.raises(exceptions.Conflict) as e:
        projects.set_iam_policy(request={"resource": resource, "policy": stale})
    assert e.value.response.json()["error"]["status"] == "ABORTED"

    # Unknown roles and bad members: InvalidArgument (HTTP 400); nothing changes.
    for binding in (
        policy_pb2.Binding(role="roles/nope", members=["user:a@example.com"]),
        policy_pb2.Binding(role="roles/viewer", members=["alice"]),
    ):
        bad = policy_pb2.Policy()
        bad.CopyFrom(updated)
        bad.bindings.append(binding)
        with pytest.raises(exceptions.BadRequest):
            projects.set_iam_policy(request={"resource": resource, "policy": bad})
    assert projects.get_iam_policy(request={"resource": resource}) == updated

    held = projects.test_iam_permissions(
        request={
            "resource": f"projects/{project.project_id}",
            "permissions": ["apikeys.keys.create", "orgpolicy.policy.set"],
        }
    )
    assert list(held.permissions) == ["apikeys.keys.create"]


def test_unknown_projects_are_permission_denied(projects) -> None:
    with pytest.raises(exceptions.Forbidden) as e:
        projects.get_iam_policy(request={"resource": f"projects/ip-none-{uuid.uuid4().hex[:8]}"})
    assert e.value.reason == "IAM_PERMISSION_DENIED"
    held = projects.test_iam_permissions(
        request={"resource": "projects/999999999999", "permissions": ["resourcemanager.projects.get"]}
    )
    assert list(held.permissions) == []


def test_organizations_get_search_and_policy(orgs, projects, creds) -> None:
    found = list(orgs.search_organizations(request={}))
    assert len(found) == 1
    org = orgs.get_organization(name=found[0].name)
    assert org.name == found[0].name
    assert org.state == resourcemanager_v3.Organization.State.ACTIVE
    policy = orgs.get_iam_policy(request={"resource": org.name})
    owners = [b for b in policy.bindings if b.role == "roles/owner"]
    assert owners and f"serviceAccount:{creds.service_account_email}" in owners[0].members
    held = orgs.test_iam_permissions(
        request={"resource": org.name, "permissions": ["resourcemanager.projects.create"]}
    )
    assert list(held.permissions) == ["resourcemanager.projects.create"]
