//! `keyplane projects create|list|describe` (Resource Manager v3).

use crate::args::ProjectsCommand;
use crate::context::Ctx;
use crate::output::{self, date, fields, Table};
use keyplane_client::resources::{project_number_of, Project};

pub async fn run(ctx: &Ctx, cmd: ProjectsCommand) -> anyhow::Result<()> {
    let cp = ctx.control()?;
    match cmd {
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
        ("createTime", p.create_time.clone().unwrap_or_default()),
        ("deleteTime", p.delete_time.clone().unwrap_or_default()),
    ])
}
