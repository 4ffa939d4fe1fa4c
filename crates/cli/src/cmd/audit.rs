//! `keyplane audit [--project P] [--since T]`: the audit log of control-plane mutations.

use crate::context::Ctx;
use crate::output::{self, Table};
use clap::Args;

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only entries about this project (id or number)
    #[arg(long, value_name = "PROJECT")]
    pub project: Option<String>,
    /// Only entries at or after this time (RFC 3339, e.g. 2026-01-31T12:00:00Z)
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
}

pub async fn run(ctx: &Ctx, args: AuditArgs) -> anyhow::Result<()> {
    let cp = ctx.control()?;
    let logs = cp
        .list_audit_logs(args.project.as_deref(), args.since.as_deref())
        .await?;
    if ctx.json() {
        return output::json(&serde_json::json!({ "auditLogs": logs }));
    }
    if logs.is_empty() {
        output::note("No audit entries.");
        return Ok(());
    }
    let mut t = Table::new(&["TIME", "PRINCIPAL", "METHOD", "RESOURCE", "RESULT"]);
    for e in &logs {
        t.row(vec![
            e.time.clone(),
            if e.principal.is_empty() {
                "-".to_owned()
            } else {
                e.principal.clone()
            },
            e.method.clone(),
            e.resource.clone(),
            e.result.clone(),
        ]);
    }
    t.print()?;
    Ok(())
}
