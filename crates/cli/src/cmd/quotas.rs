//! Plans, quotas and usage (Keyplane's admin API): `keyplane projects quotas P`,
//! `keyplane projects set-tier P TIER` and `keyplane usage P [--since 1h]`.

use crate::context::Ctx;
use crate::output::{self, fields, Table};
use clap::Args;
use keyplane_client::admin::{ProjectQuotas, QuotaLimits};

#[derive(Debug, Args)]
pub struct UsageArgs {
    /// Project id or number
    #[arg(value_name = "PROJECT")]
    pub project: String,
    /// How far back: `90s`, `15m`, `6h`, `7d` [default: 1h]; or use --start
    #[arg(long, value_name = "DURATION", conflicts_with = "start")]
    pub since: Option<String>,
    /// Range start (RFC 3339)
    #[arg(long, value_name = "TIME")]
    pub start: Option<String>,
    /// Range end (RFC 3339) [default: now]
    #[arg(long, value_name = "TIME")]
    pub end: Option<String>,
}

fn limit(v: Option<u64>) -> String {
    v.map_or_else(|| "unlimited".to_owned(), |n| n.to_string())
}

fn used(n: u64, of: Option<u64>) -> String {
    match of {
        Some(l) => format!("{n}/{l}"),
        None => n.to_string(),
    }
}

fn limits_line(l: &QuotaLimits) -> String {
    format!(
        "{} RPM, {} input TPM, {} RPD",
        limit(l.requests_per_minute),
        limit(l.input_tokens_per_minute),
        limit(l.requests_per_day)
    )
}

fn print_quotas(ctx: &Ctx, q: &ProjectQuotas) -> anyhow::Result<()> {
    if ctx.json() {
        return output::json(q);
    }
    output::out(&fields(&[
        ("project", q.project.clone()),
        ("projectId", q.project_id.clone()),
        ("tier", q.tier.clone()),
        ("limits", limits_line(&q.limits)),
    ]))?;
    if q.models.is_empty() {
        output::note("No model called since the server started.");
        return Ok(());
    }
    let mut t = Table::new(&[
        "MODEL",
        "REQUESTS/MIN",
        "INPUT TOKENS/MIN",
        "REQUESTS TODAY",
    ]);
    for m in &q.models {
        t.row(vec![
            m.model.clone(),
            used(m.requests_this_minute, m.limits.requests_per_minute),
            used(m.input_tokens_this_minute, m.limits.input_tokens_per_minute),
            used(m.requests_today, m.limits.requests_per_day),
        ]);
    }
    t.print()?;
    Ok(())
}

pub async fn quotas(ctx: &Ctx, project: &str) -> anyhow::Result<()> {
    let q = ctx.control()?.project_quotas(project).await?;
    print_quotas(ctx, &q)
}

pub async fn set_tier(ctx: &Ctx, project: &str, tier: &str) -> anyhow::Result<()> {
    let q = ctx.control()?.set_project_tier(project, tier).await?;
    print_quotas(ctx, &q)
}

/// `90s`, `15m`, `6h`, `7d` as seconds.
fn parse_since(s: &str) -> anyhow::Result<i64> {
    let s = s.trim();
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = n
        .parse()
        .map_err(|_| anyhow::anyhow!("--since {s:?}: expected a number and a unit, e.g. 15m"))?;
    let per = match unit {
        "s" => 1,
        "m" | "" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => anyhow::bail!("--since {s:?}: the unit is s, m, h or d"),
    };
    anyhow::ensure!(n > 0, "--since {s:?}: must be more than zero");
    n.checked_mul(per)
        .ok_or_else(|| anyhow::anyhow!("--since {s:?}: too long"))
}

pub async fn usage(ctx: &Ctx, args: UsageArgs) -> anyhow::Result<()> {
    let start = match (&args.since, &args.start) {
        (Some(since), _) => {
            let secs = parse_since(since)?;
            let t = time::OffsetDateTime::now_utc() - time::Duration::seconds(secs);
            Some(
                t.format(&time::format_description::well_known::Rfc3339)
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
            )
        }
        (None, start) => start.clone(),
    };
    let u = ctx
        .control()?
        .project_usage(&args.project, start.as_deref(), args.end.as_deref())
        .await?;
    if ctx.json() {
        return output::json(&u);
    }
    output::out(&fields(&[
        ("project", u.project.clone()),
        ("from", u.start_time.clone()),
        ("to", u.end_time.clone()),
        ("requests", u.totals.requests.to_string()),
        ("errors", u.totals.errors.to_string()),
        ("promptTokens", u.totals.prompt_tokens.to_string()),
        ("candidatesTokens", u.totals.candidates_tokens.to_string()),
    ]))?;
    if u.buckets.is_empty() {
        output::note("No calls in this range.");
        return Ok(());
    }
    let mut t = Table::new(&[
        "MINUTE", "MODEL", "METHOD", "KEY", "STATUS", "REQUESTS", "PROMPT", "OUTPUT", "AVG MS",
    ]);
    for b in &u.buckets {
        let key = b
            .key
            .as_deref()
            .and_then(|k| k.rsplit('/').next())
            .unwrap_or("-")
            .to_owned();
        t.row(vec![
            b.start_time.clone(),
            b.model.clone(),
            b.method.clone(),
            key,
            b.code.to_string(),
            b.requests.to_string(),
            b.prompt_tokens.to_string(),
            b.candidates_tokens.to_string(),
            (b.latency_ms_sum / b.requests.max(1)).to_string(),
        ]);
    }
    t.print()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_since;

    #[test]
    fn durations() {
        assert_eq!(parse_since("90s").unwrap(), 90);
        assert_eq!(parse_since("15m").unwrap(), 900);
        assert_eq!(parse_since("15").unwrap(), 900);
        assert_eq!(parse_since("6h").unwrap(), 21_600);
        assert_eq!(parse_since("7d").unwrap(), 604_800);
        for bad in ["", "h", "0m", "3w", "-1h", "99999999999999999999d"] {
            assert!(parse_since(bad).is_err(), "{bad}");
        }
    }
}
