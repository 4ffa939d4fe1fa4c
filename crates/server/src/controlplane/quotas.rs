//! Plans, quotas and usage, Keyplane-specific (Google keeps these in the AI Studio pages,
//! Cloud Billing and Cloud Monitoring, none of which has a wire API the SDKs use):
//!
//! - `GET /v1/keyplane/projects/{project}/quotas`: the project's tier, the tier's limits,
//!   and per model called since start its limits and what it has used this minute and
//!   today (needs `serviceusage.quotas.get` on the project).
//! - `POST /v1/keyplane/projects/{project}:setTier` `{"tier": "tier-1"}`: changes the
//!   billing tier; the next call is counted against the new limits (needs
//!   `resourcemanager.organizations.setIamPolicy`: the platform's administrators, not the
//!   project's owners, decide plans).
//! - `GET /v1/keyplane/projects/{project}/usage?startTime=…&endTime=…`: the usage buckets
//!   (one per minute, key, model, method and status) in `[startTime, endTime)`, RFC 3339,
//!   the last hour by default and at most 31 days, buckets not yet written included
//!   (needs `serviceusage.quotas.get`).
//!
//! A project is named by id or number; unknown and forbidden projects answer the same 403.

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use keyplane_core::quota::{Limits, Tier, UsageRow};
use keyplane_core::{now, rfc3339};
use keyplane_wire::{parse_json_body, ApiError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::store_error;
use crate::app::AppState;
use crate::authz::{self, Resource};
use crate::controlplane::users::MANAGE_PERMISSION;
use crate::identity::Caller;
use crate::meter::now_ms;

pub const READ_PERMISSION: &str = "serviceusage.quotas.get";
/// The longest usage range one read returns.
const MAX_RANGE_MINUTES: i64 = 31 * 24 * 60;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/keyplane/projects/{project}/quotas", get(quotas))
        .route("/v1/keyplane/projects/{project}/usage", get(usage))
        .route(
            "/v1/keyplane/projects/{project}",
            axum::routing::post(project_verb),
        )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LimitsJson {
    /// Absent: no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_tokens_per_minute: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_per_day: Option<u64>,
}

impl From<Limits> for LimitsJson {
    fn from(l: Limits) -> Self {
        LimitsJson {
            requests_per_minute: l.rpm,
            input_tokens_per_minute: l.tpm,
            requests_per_day: l.rpd,
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ModelQuotaJson {
    model: String,
    limits: LimitsJson,
    requests_this_minute: u64,
    input_tokens_this_minute: u64,
    requests_today: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct QuotasJson {
    project: String,
    project_id: String,
    tier: String,
    /// The tier's limits for a model without an exception.
    limits: LimitsJson,
    models: Vec<ModelQuotaJson>,
}

async fn quotas(
    State(state): State<AppState>,
    caller: Caller,
    Path(project): Path<String>,
) -> Result<Json<QuotasJson>, ApiError> {
    let p = authz::project(&state, &caller, READ_PERMISSION, &project).await?;
    Ok(Json(quotas_json(&state, p.number, &p.project_id)))
}

fn quotas_json(state: &AppState, number: i64, project_id: &str) -> QuotasJson {
    let tier = state.quotas.tier(number);
    let models = state
        .quotas
        .usage(number, now_ms())
        .into_iter()
        .map(|u| ModelQuotaJson {
            model: u.model,
            limits: u.limits.into(),
            requests_this_minute: u.minute_requests,
            input_tokens_this_minute: u.minute_tokens,
            requests_today: u.day_requests,
        })
        .collect();
    QuotasJson {
        project: format!("projects/{number}"),
        project_id: project_id.to_owned(),
        tier: tier.as_str().to_owned(),
        limits: state.quotas.table().limits(tier, "").into(),
        models,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetTier {
    tier: String,
}

/// `POST /v1/keyplane/projects/{project}:setTier`.
async fn project_verb(
    State(state): State<AppState>,
    caller: Caller,
    Path(rest): Path<String>,
    body: Bytes,
) -> Result<Json<QuotasJson>, ApiError> {
    let (project, verb) = rest
        .rsplit_once(':')
        .ok_or_else(|| ApiError::not_found("The requested URL was not found on this server."))?;
    if verb != "setTier" {
        return Err(ApiError::not_found(format!(
            "Method '{verb}' is not served on projects here (setTier is)."
        )));
    }
    authz::require(&state, &caller, MANAGE_PERMISSION, &Resource::Organization).await?;
    let req: SetTier = parse_json_body(&body)?;
    let tier = Tier::parse(&req.tier).ok_or_else(|| {
        ApiError::bad_request_fields(vec![(
            "tier",
            format!(
                "Invalid value \"{}\": a tier is one of free, tier-1, tier-2, tier-3.",
                req.tier
            ),
        )])
    })?;
    let mut p = authz::project(&state, &caller, READ_PERMISSION, project).await?;
    if p.state != keyplane_core::ProjectState::Active {
        return Err(ApiError::failed_precondition(format!(
            "Project {} is being deleted; its tier cannot change.",
            p.project_id
        )));
    }
    if p.tier != tier.as_str() {
        let expected = p.etag.clone();
        p.tier = tier.as_str().to_owned();
        p.update_time = now();
        p.etag = super::new_etag();
        state
            .store
            .update_project(&p, &expected)
            .await
            .map_err(store_error)?;
    }
    state.quotas.set_tier(p.number, tier.as_str());
    Ok(Json(quotas_json(&state, p.number, &p.project_id)))
}

#[derive(Debug, Deserialize)]
struct UsageParams {
    #[serde(rename = "startTime", alias = "start_time")]
    start_time: Option<String>,
    #[serde(rename = "endTime", alias = "end_time")]
    end_time: Option<String>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
struct BucketJson {
    /// The minute's start.
    start_time: String,
    model: String,
    method: String,
    /// `projects/{n}/locations/global/keys/{uid}`; absent for callers without a key.
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    /// The HTTP status answered.
    code: i32,
    requests: i64,
    prompt_tokens: i64,
    candidates_tokens: i64,
    /// Sum of the calls' latencies (first byte in to last byte out), in milliseconds.
    latency_ms_sum: i64,
}

#[derive(Debug, Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct TotalsJson {
    requests: i64,
    /// Calls answered with a status other than 2xx.
    errors: i64,
    prompt_tokens: i64,
    candidates_tokens: i64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct UsageJson {
    project: String,
    start_time: String,
    end_time: String,
    buckets: Vec<BucketJson>,
    totals: TotalsJson,
}

fn parse_time(name: &str, value: &str) -> Result<OffsetDateTime, ApiError> {
    OffsetDateTime::parse(value, &Rfc3339).map_err(|_| {
        ApiError::bad_request_fields(vec![(
            name,
            format!(
                "Invalid value \"{value}\": an RFC 3339 time is expected (2026-12-02T18:00:00Z)."
            ),
        )])
    })
}

fn minute_of(t: OffsetDateTime) -> i64 {
    t.unix_timestamp().div_euclid(60)
}

async fn usage(
    State(state): State<AppState>,
    caller: Caller,
    Path(project): Path<String>,
    params: Result<Query<UsageParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<UsageJson>, ApiError> {
    let Query(params) =
        params.map_err(|e| ApiError::invalid_argument(format!("Invalid query: {e}")))?;
    let p = authz::project(&state, &caller, READ_PERMISSION, &project).await?;
    let end = match &params.end_time {
        Some(t) => parse_time("end_time", t)?,
        None => now(),
    };
    let start = match &params.start_time {
        Some(t) => parse_time("start_time", t)?,
        None => end - time::Duration::hours(1),
    };
    // Whole minutes: a bucket is in the range when its minute starts in it; the minute
    // `end` falls in is included when `end` is not on its boundary.
    let from = minute_of(start);
    let to = minute_of(end) + i64::from(end.unix_timestamp() % 60 != 0 || end.nanosecond() != 0);
    if to <= from {
        return Err(ApiError::bad_request_fields(vec![(
            "end_time",
            "end_time must be after start_time.",
        )]));
    }
    if to - from > MAX_RANGE_MINUTES {
        return Err(ApiError::bad_request_fields(vec![(
            "start_time",
            "A usage read covers at most 31 days.",
        )]));
    }
    let stored = state
        .store
        .usage(p.number, from, to)
        .await
        .map_err(store_error)?;
    let pending = state
        .meter
        .pending_of(p.number)
        .into_iter()
        .filter(|r| r.minute >= from && r.minute < to);
    let rows = merge(stored.into_iter().chain(pending));
    let mut totals = TotalsJson::default();
    let buckets = rows
        .into_iter()
        .map(|r| {
            totals.requests += r.requests;
            if !(200..300).contains(&r.code) {
                totals.errors += r.requests;
            }
            totals.prompt_tokens += r.prompt_tokens;
            totals.candidates_tokens += r.candidates_tokens;
            BucketJson {
                start_time: OffsetDateTime::from_unix_timestamp(r.minute * 60)
                    .map(rfc3339)
                    .unwrap_or_default(),
                key: (!r.key_id.is_empty()).then(|| {
                    format!(
                        "projects/{}/locations/global/keys/{}",
                        r.project_number, r.key_id
                    )
                }),
                model: r.model,
                method: r.method,
                code: r.code,
                requests: r.requests,
                prompt_tokens: r.prompt_tokens,
                candidates_tokens: r.candidates_tokens,
                latency_ms_sum: r.latency_ms,
            }
        })
        .collect();
    Ok(Json(UsageJson {
        project: format!("projects/{}", p.number),
        start_time: rfc3339(start),
        end_time: rfc3339(end),
        buckets,
        totals,
    }))
}

/// Rows with the same identity summed, ordered by minute, model, method, key, status.
fn merge(rows: impl Iterator<Item = UsageRow>) -> Vec<UsageRow> {
    let mut by_id: BTreeMap<(i64, String, String, String, i32), UsageRow> = BTreeMap::new();
    for r in rows {
        let id = (
            r.minute,
            r.model.clone(),
            r.method.clone(),
            r.key_id.clone(),
            r.code,
        );
        match by_id.get_mut(&id) {
            Some(acc) => {
                acc.requests += r.requests;
                acc.prompt_tokens += r.prompt_tokens;
                acc.candidates_tokens += r.candidates_tokens;
                acc.latency_ms += r.latency_ms;
            }
            None => {
                by_id.insert(id, r);
            }
        }
    }
    by_id.into_values().collect()
}
