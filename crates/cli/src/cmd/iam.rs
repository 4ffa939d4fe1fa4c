//! IAM allow policies, gcloud-like:
//!
//! - `projects get-iam-policy P`
//! - `projects add-iam-policy-binding P --member M --role R`
//! - `projects remove-iam-policy-binding P --member M --role R`
//! - `organizations list|describe O|get-iam-policy O|add-iam-policy-binding O …|
//!   remove-iam-policy-binding O …`
//!
//! Members are written as Google writes them: `user:EMAIL`, `serviceAccount:EMAIL`,
//! `group:EMAIL`, `domain:DOMAIN`, `allAuthenticatedUsers`. Bindings change by
//! read-modify-write with the policy's etag, retried when the policy changed meanwhile.

use crate::context::Ctx;
use crate::output::{self, date, fields, Table};
use clap::Subcommand;
use keyplane_client::policies::{Organization, Policy};

/// The IAM verbs of `keyplane projects`.
#[derive(Debug, Subcommand)]
pub enum ProjectIamCommand {
    /// Show a project's IAM policy (its own bindings; the organization's also apply)
    GetIamPolicy {
        #[arg(value_name = "PROJECT")]
        project: String,
    },
    /// Grant a role on a project, e.g. --member serviceAccount:ci@p.iam.gserviceaccount.com
    /// --role roles/serviceusage.apiKeysAdmin
    AddIamPolicyBinding {
        #[arg(value_name = "PROJECT")]
        project: String,
        #[command(flatten)]
        binding: BindingArgs,
    },
    /// Revoke a role granted on a project
    RemoveIamPolicyBinding {
        #[arg(value_name = "PROJECT")]
        project: String,
        #[command(flatten)]
        binding: BindingArgs,
    },
}

#[derive(Debug, clap::Args)]
pub struct BindingArgs {
    /// user:EMAIL, serviceAccount:EMAIL, group:EMAIL, domain:DOMAIN or allAuthenticatedUsers
    #[arg(long, value_name = "MEMBER")]
    pub member: String,
    /// A predefined role, e.g. roles/viewer (see `keyplane iam roles list`)
    #[arg(long, value_name = "ROLE")]
    pub role: String,
}

/// `keyplane organizations …`.
#[derive(Debug, Subcommand)]
pub enum OrganizationsCommand {
    /// List the organizations the caller may see
    List,
    /// Show an organization (by number)
    Describe {
        #[arg(value_name = "ORGANIZATION")]
        organization: String,
    },
    /// Show an organization's IAM policy (inherited by every project)
    GetIamPolicy {
        #[arg(value_name = "ORGANIZATION")]
        organization: String,
    },
    /// Grant a role on the organization (and so on every project in it)
    AddIamPolicyBinding {
        #[arg(value_name = "ORGANIZATION")]
        organization: String,
        #[command(flatten)]
        binding: BindingArgs,
    },
    /// Revoke a role granted on the organization
    RemoveIamPolicyBinding {
        #[arg(value_name = "ORGANIZATION")]
        organization: String,
        #[command(flatten)]
        binding: BindingArgs,
    },
}

fn org_resource(organization: &str) -> String {
    let id = organization
        .strip_prefix("organizations/")
        .unwrap_or(organization);
    format!("organizations/{id}")
}

fn project_resource(project: &str) -> String {
    let id = project.strip_prefix("projects/").unwrap_or(project);
    format!("projects/{id}")
}

pub async fn run_project(ctx: &Ctx, cmd: ProjectIamCommand) -> anyhow::Result<()> {
    let cp = ctx.control()?;
    match cmd {
        ProjectIamCommand::GetIamPolicy { project } => {
            let p = cp.get_iam_policy(&project_resource(&project)).await?;
            show_policy(ctx, &p)
        }
        ProjectIamCommand::AddIamPolicyBinding { project, binding } => {
            let resource = project_resource(&project);
            let p = cp
                .add_iam_policy_binding(&resource, &binding.member, &binding.role)
                .await?;
            output::note(&format!("Updated IAM policy for project [{project}]."));
            show_policy(ctx, &p)
        }
        ProjectIamCommand::RemoveIamPolicyBinding { project, binding } => {
            let resource = project_resource(&project);
            let p = cp
                .remove_iam_policy_binding(&resource, &binding.member, &binding.role)
                .await?;
            output::note(&format!("Updated IAM policy for project [{project}]."));
            show_policy(ctx, &p)
        }
    }
}

pub async fn run_organizations(ctx: &Ctx, cmd: OrganizationsCommand) -> anyhow::Result<()> {
    let cp = ctx.control()?;
    match cmd {
        OrganizationsCommand::List => {
            let orgs = cp.search_organizations("").await?;
            if ctx.json() {
                return output::json(&serde_json::json!({ "organizations": orgs }));
            }
            if orgs.is_empty() {
                output::note("No organizations.");
                return Ok(());
            }
            let mut t = Table::new(&["DISPLAY_NAME", "ID", "STATE", "CREATED"]);
            for o in &orgs {
                t.row(vec![
                    o.display_name.clone(),
                    org_id(o).to_owned(),
                    o.state.clone(),
                    date(o.create_time.as_deref()),
                ]);
            }
            t.print()?;
            Ok(())
        }
        OrganizationsCommand::Describe { organization } => {
            let o = cp.get_organization(&organization).await?;
            if ctx.json() {
                return output::json(&o);
            }
            output::out(&fields(&[
                ("name", o.name.clone()),
                ("displayName", o.display_name.clone()),
                ("state", o.state.clone()),
                ("createTime", o.create_time.clone().unwrap_or_default()),
            ]))?;
            Ok(())
        }
        OrganizationsCommand::GetIamPolicy { organization } => {
            let p = cp.get_iam_policy(&org_resource(&organization)).await?;
            show_policy(ctx, &p)
        }
        OrganizationsCommand::AddIamPolicyBinding {
            organization,
            binding,
        } => {
            let p = cp
                .add_iam_policy_binding(
                    &org_resource(&organization),
                    &binding.member,
                    &binding.role,
                )
                .await?;
            output::note(&format!(
                "Updated IAM policy for organization [{organization}]."
            ));
            show_policy(ctx, &p)
        }
        OrganizationsCommand::RemoveIamPolicyBinding {
            organization,
            binding,
        } => {
            let p = cp
                .remove_iam_policy_binding(
                    &org_resource(&organization),
                    &binding.member,
                    &binding.role,
                )
                .await?;
            output::note(&format!(
                "Updated IAM policy for organization [{organization}]."
            ));
            show_policy(ctx, &p)
        }
    }
}

fn org_id(o: &Organization) -> &str {
    o.name.strip_prefix("organizations/").unwrap_or(&o.name)
}

/// One row per (role, member); JSON prints the policy as the server sent it.
fn show_policy(ctx: &Ctx, p: &Policy) -> anyhow::Result<()> {
    if ctx.json() {
        return output::json(p);
    }
    let mut t = Table::new(&["ROLE", "MEMBER"]);
    for b in &p.bindings {
        for m in &b.members {
            t.row(vec![b.role.clone(), m.clone()]);
        }
    }
    if p.bindings.is_empty() {
        output::note("No bindings.");
    } else {
        t.print()?;
    }
    output::note(&format!("etag: {}", p.etag));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_accept_bare_and_full_names() {
        assert_eq!(project_resource("my-proj"), "projects/my-proj");
        assert_eq!(project_resource("projects/123"), "projects/123");
        assert_eq!(org_resource("42"), "organizations/42");
        assert_eq!(org_resource("organizations/42"), "organizations/42");
    }
}
