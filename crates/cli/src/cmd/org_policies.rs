//! `keyplane org-policies describe|enable-enforce|disable-enforce|delete CONSTRAINT`
//! (Org Policy v2), gcloud-like: on a project with `--project`, else on the organization
//! (`--organization`, or the one the credentials see).

use crate::context::Ctx;
use crate::output::{self, fields};
use clap::{Args, Subcommand};
use keyplane_client::ControlPlane;
use serde_json::Value;

#[derive(Debug, Subcommand)]
pub enum OrgPoliciesCommand {
    /// Show the policy set on a resource (or, with --effective, the one that applies)
    Describe {
        #[command(flatten)]
        target: Target,
        /// The policy in effect (inherited from the organization, or the default)
        #[arg(long)]
        effective: bool,
    },
    /// Enforce a boolean constraint on the resource
    EnableEnforce {
        #[command(flatten)]
        target: Target,
    },
    /// Stop enforcing a boolean constraint on the resource
    DisableEnforce {
        #[command(flatten)]
        target: Target,
    },
    /// Set a boolean constraint's policy: `set CONSTRAINT --enforce true|false`
    Set {
        #[command(flatten)]
        target: Target,
        /// Whether the constraint is enforced on the resource
        #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
        enforce: bool,
    },
    /// Delete the policy set on the resource (it inherits again)
    Delete {
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Debug, Args)]
pub struct Target {
    /// The constraint, e.g. iam.managed.disableServiceAccountApiKeyCreation
    /// (a `constraints/` prefix is accepted)
    #[arg(value_name = "CONSTRAINT")]
    pub constraint: String,
    /// A project id or number
    #[arg(long, value_name = "PROJECT", conflicts_with = "organization")]
    pub project: Option<String>,
    /// The organization number [default: the installation's organization]
    #[arg(long, value_name = "ORGANIZATION")]
    pub organization: Option<String>,
}

impl Target {
    fn constraint(&self) -> &str {
        self.constraint
            .strip_prefix("constraints/")
            .unwrap_or(&self.constraint)
    }

    /// `projects/P` or `organizations/N`.
    async fn parent(&self, cp: &ControlPlane) -> anyhow::Result<String> {
        if let Some(p) = &self.project {
            return Ok(format!("projects/{p}"));
        }
        if let Some(o) = &self.organization {
            let o = o.strip_prefix("organizations/").unwrap_or(o);
            return Ok(format!("organizations/{o}"));
        }
        Ok(cp.default_policy_organization().await?)
    }
}

pub async fn run(ctx: &Ctx, cmd: OrgPoliciesCommand) -> anyhow::Result<()> {
    let cp = ctx.control()?;
    match cmd {
        OrgPoliciesCommand::Describe { target, effective } => {
            let parent = target.parent(&cp).await?;
            let policy = cp
                .get_org_policy(&parent, target.constraint(), effective)
                .await?;
            if ctx.json() {
                return output::json(&policy);
            }
            output::out(&describe(&policy))?;
        }
        OrgPoliciesCommand::EnableEnforce { target } => set(ctx, &cp, &target, true).await?,
        OrgPoliciesCommand::DisableEnforce { target } => set(ctx, &cp, &target, false).await?,
        OrgPoliciesCommand::Set { target, enforce } => set(ctx, &cp, &target, enforce).await?,
        OrgPoliciesCommand::Delete { target } => {
            let parent = target.parent(&cp).await?;
            cp.delete_org_policy(&parent, target.constraint()).await?;
            if ctx.json() {
                return output::json(&serde_json::json!({}));
            }
            output::line(&format!(
                "Deleted the policy for constraints/{} on {parent}; it inherits again.",
                target.constraint()
            ))?;
        }
    }
    Ok(())
}

async fn set(ctx: &Ctx, cp: &ControlPlane, target: &Target, enforce: bool) -> anyhow::Result<()> {
    let parent = target.parent(cp).await?;
    let policy = cp
        .set_org_policy_enforce(&parent, target.constraint(), enforce)
        .await?;
    if ctx.json() {
        return output::json(&policy);
    }
    output::line(&format!(
        "{} constraints/{} on {parent}.",
        if enforce {
            "Enforced"
        } else {
            "Stopped enforcing"
        },
        target.constraint()
    ))?;
    Ok(())
}

/// `true`/`false` from the unconditional rule, `reset` or `-`.
fn enforcement(spec: &Value) -> String {
    if spec["reset"] == true {
        return "default (reset)".to_owned();
    }
    spec["rules"]
        .as_array()
        .and_then(|rules| rules.iter().find(|r| r.get("condition").is_none()))
        .and_then(|r| r["enforce"].as_bool())
        .map(|b| b.to_string())
        .unwrap_or_else(|| "-".to_owned())
}

fn describe(policy: &Value) -> String {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let mut rows = vec![
        ("name", text(&policy["name"])),
        ("enforced", enforcement(&policy["spec"])),
        ("etag", text(&policy["etag"])),
        ("updateTime", text(&policy["spec"]["updateTime"])),
    ];
    if policy.get("dryRunSpec").is_some() {
        rows.push(("dryRunEnforced", enforcement(&policy["dryRunSpec"])));
    }
    fields(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn describes_policies() {
        let shown = describe(&json!({
            "name": "projects/1/policies/c",
            "spec": {"rules": [{"enforce": false}], "updateTime": "2026-01-01T00:00:00Z"},
            "etag": "CL1"
        }));
        assert!(shown.contains("false"), "{shown}");
        assert!(shown.contains("CL1"), "{shown}");
        assert_eq!(enforcement(&json!({"reset": true})), "default (reset)");
        assert_eq!(enforcement(&json!({})), "-");
    }
}
