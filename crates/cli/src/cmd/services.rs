//! `keyplane services enable|disable|list` (Service Usage v1).

use crate::args::ServicesCommand;
use crate::context::Ctx;
use crate::output::{self, Table};
use keyplane_client::resources::Service;

pub async fn run(ctx: &Ctx, cmd: ServicesCommand) -> anyhow::Result<()> {
    let cp = ctx.control()?;
    match cmd {
        ServicesCommand::Enable { service, project } => {
            let s = cp.enable_service(&project, &service).await?;
            if ctx.json() {
                return output::json(&s);
            }
            output::line(&format!("Enabled {} in project {project}.", service_id(&s)))?;
        }
        ServicesCommand::Disable { service, project } => {
            let s = cp.disable_service(&project, &service).await?;
            if ctx.json() {
                return output::json(&s);
            }
            output::line(&format!(
                "Disabled {} in project {project}.",
                service_id(&s)
            ))?;
        }
        ServicesCommand::List { project, all } => {
            let filter = if all { None } else { Some("state:ENABLED") };
            let services = cp.list_services(&project, filter).await?;
            if ctx.json() {
                return output::json(&serde_json::json!({ "services": services }));
            }
            if services.is_empty() {
                output::note(&format!("No enabled services in project {project}."));
                return Ok(());
            }
            let mut t = Table::new(&["SERVICE", "TITLE", "STATE"]);
            for s in &services {
                t.row(vec![
                    service_id(s).to_owned(),
                    s.config
                        .as_ref()
                        .map(|c| c.title.clone())
                        .unwrap_or_default(),
                    s.state.clone(),
                ]);
            }
            t.print()?;
        }
    }
    Ok(())
}

/// `generativelanguage.googleapis.com` from a service resource.
fn service_id(s: &Service) -> &str {
    match &s.config {
        Some(c) if !c.name.is_empty() => &c.name,
        _ => s.name.rsplit('/').next().unwrap_or(&s.name),
    }
}
