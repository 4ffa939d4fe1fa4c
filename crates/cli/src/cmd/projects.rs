//! `keyplane projects create|list|describe|search|update|delete|undelete` (Resource
//! Manager v3).

use crate::args::ProjectsCommand;
use crate::context::Ctx;
use crate::output::{self, date, fields, Table};
use keyplane_client::resources::{project_number_of, Project};

pub async fn run(ctx: &Ctx, cmd: ProjectsCommand) -> anyhow::Result<()> {
    let cp = ctx.control()?;
    match cmd {
        ProjectsCommand::Iam(c) => return super::iam::run_project(ctx, c).await,
        ProjectsCommand::Quotas { project } => return super::quotas::quotas(ctx, &project).await,
        ProjectsCommand::SetTier { project, tier } => {
            return super::quotas::set_tier(ctx, &project, &tier).await
        }
        ProjectsCommand::Create { id, display_name } => {
            let p = cp.create_project(&id, display_name.as_deref()).await?;
            if ctx.json() {
                return output::json(&p);
            }
            output::out(&describe(&p))?;
        }
        ProjectsCommand::List { show_deleted } => {
            let projects = cp.list_projects(show_deleted).await?;
            if ctx.json() {
                return output::json(&serde_json::json!({ "projects": projects }));
            }
            if projects.is_empty() {
                output::note("No projects.");
                return Ok(());
            }
            let mut t = Table::new(&["PROJECT_ID", "NAME", "PROJECT_NUMBER", "STATE", "CREATED"]);
            for p in &projects {
                t.row(vec![
                    p.project_id.clone(),
                    p.display_name.clone(),
                    number(p).to_owned(),
                    p.state.clone(),
                    date(p.create_time.as_deref()),
                ]);
            }
            t.print()?;
        }
        ProjectsCommand::Describe { project } => {
            let p = cp.get_project(&project).await?;
            if ctx.json() {
                return output::json(&p);
            }
            output::out(&describe(&p))?;
        }
        ProjectsCommand::Search { query } => {
            let projects = cp.search_projects(&query).await?;
            if ctx.json() {
                return output::json(&serde_json::json!({ "projects": projects }));
            }
            if projects.is_empty() {
                output::note("No projects match.");
                return Ok(());
            }
            let mut t = Table::new(&["PROJECT_ID", "NAME", "PROJECT_NUMBER", "STATE", "LABELS"]);
            for p in &projects {
                let labels: Vec<String> =
                    p.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                t.row(vec![
                    p.project_id.clone(),
                    p.display_name.clone(),
                    number(p).to_owned(),
                    p.state.clone(),
                    labels.join(","),
                ]);
            }
            t.print()?;
        }
        ProjectsCommand::Update {
            project,
            display_name,
            update_labels,
            remove_labels,
            clear_labels,
        } => {
            let labels_change =
                clear_labels || !update_labels.is_empty() || !remove_labels.is_empty();
            anyhow::ensure!(
                display_name.is_some() || labels_change,
                "nothing to update: give --display-name, --update-labels, --remove-labels or --clear-labels"
            );
            let (labels, etag) = if labels_change {
                // Read-modify-write, guarded by the etag.
                let current = cp.get_project(&project).await?;
                let mut labels: serde_json::Map<String, serde_json::Value> = if clear_labels {
                    serde_json::Map::new()
                } else {
                    current
                        .labels
                        .iter()
                        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                        .collect()
                };
                for k in &remove_labels {
                    labels.remove(k);
                }
                for kv in &update_labels {
                    let (k, v) = kv.split_once('=').ok_or_else(|| {
                        anyhow::anyhow!("--update-labels takes KEY=VALUE, got {kv:?}")
                    })?;
                    labels.insert(k.to_owned(), serde_json::Value::String(v.to_owned()));
                }
                (Some(labels), Some(current.etag))
            } else {
                (None, None)
            };
            let p = cp
                .update_project(
                    &project,
                    display_name.as_deref(),
                    labels.as_ref(),
                    etag.as_deref().filter(|e| !e.is_empty()),
                )
                .await?;
            if ctx.json() {
                return output::json(&p);
            }
            output::out(&describe(&p))?;
        }
        ProjectsCommand::Delete { project } => {
            let p = cp.delete_project(&project).await?;
            if ctx.json() {
                return output::json(&p);
            }
            output::line(&format!(
                "Project {} is pending deletion (DELETE_REQUESTED): its API keys stopped working. \
                 `keyplane projects undelete {}` restores it.",
                p.project_id, p.project_id
            ))?;
        }
        ProjectsCommand::Undelete { project } => {
            let p = cp.undelete_project(&project).await?;
            if ctx.json() {
                return output::json(&p);
            }
            output::line(&format!("Restored project {}.", p.project_id))?;
        }
    }
    Ok(())
}

/// The project number of a project (`projects/{NUMBER}`).
pub fn number(p: &Project) -> &str {
    project_number_of(&p.name).unwrap_or_default()
}

fn describe(p: &Project) -> String {
    fields(&[
        ("projectId", p.project_id.clone()),
        ("projectNumber", number(p).to_owned()),
        ("name", p.name.clone()),
        ("displayName", p.display_name.clone()),
        ("state", p.state.clone()),
        ("parent", p.parent.clone()),
        (
            "labels",
            p.labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
        ),
        ("createTime", p.create_time.clone().unwrap_or_default()),
        ("deleteTime", p.delete_time.clone().unwrap_or_default()),
    ])
}
