//! `keyplane keys …` (API Keys v2). `keys create` without `--project` does what AI Studio
//! does for a new user: it uses the project named "Default Gemini Project", or makes one
//! (`gen-lang-client-` + 10 digits) with the Generative Language API enabled, and restricts
//! the key to that API, as AI Studio's keys are.

use crate::args::{KeysCommand, KeysUpdateArgs, LookupArgs};
use crate::cmd::projects::number;
use crate::context::Ctx;
use crate::output::{self, date, fields, project_label, Table};
use anyhow::Context as _;
use keyplane_client::resources::{project_number_of, Project};
use keyplane_client::{ClientError, ControlPlane, Key, NewKey};
use keyplane_core::services::GENERATIVE_LANGUAGE;
use rand::Rng;
use std::collections::HashMap;

/// The display name AI Studio gives the project it makes for a new user.
pub const DEFAULT_PROJECT_NAME: &str = "Default Gemini Project";
/// The id prefix of those projects.
pub const DEFAULT_PROJECT_PREFIX: &str = "gen-lang-client-";
/// The display name of a key created without `--display-name`.
pub const DEFAULT_KEY_NAME: &str = "Gemini API Key";

pub async fn run(ctx: &Ctx, cmd: KeysCommand) -> anyhow::Result<()> {
    let cp = ctx.control()?;
    match cmd {
        KeysCommand::Create {
            project,
            display_name,
            key_id,
        } => create(ctx, &cp, project, display_name, key_id).await,
        KeysCommand::List {
            project,
            show_deleted,
        } => list(ctx, &cp, project, show_deleted).await,
        KeysCommand::Describe { name } => {
            let key = cp.get_key(&name).await?;
            if ctx.json() {
                return output::json(&key);
            }
            let project = project_of(&cp, &key).await;
            output::out(&describe(&key, &project))?;
            Ok(())
        }
        KeysCommand::GetKeyString { name } => {
            let key_string = cp.get_key_string(&name).await?;
            if ctx.json() {
                return output::json(&serde_json::json!({ "keyString": key_string }));
            }
            output::line(key_string.expose())?;
            Ok(())
        }
        KeysCommand::Delete { name, etag } => {
            let key = cp.delete_key(&name, etag.as_deref()).await?;
            if ctx.json() {
                return output::json(&key);
            }
            output::line(&format!(
                "Deleted key {}. It stops working at once; `keyplane keys undelete {}` restores it within 30 days.",
                key.name, key.name
            ))?;
            Ok(())
        }
        KeysCommand::Undelete { name } => {
            let key = cp.undelete_key(&name).await?;
            if ctx.json() {
                return output::json(&key);
            }
            output::line(&format!("Restored key {}.", key.name))?;
            Ok(())
        }
        KeysCommand::Update(args) => update(ctx, &cp, args).await,
        KeysCommand::Lookup(LookupArgs { key_string }) => {
            let found = cp.lookup_key(key_string.trim()).await?;
            if ctx.json() {
                return output::json(&found);
            }
            let number = project_number_of(&found.parent).unwrap_or_default();
            let project = match cp.get_project(number).await {
                Ok(p) => project_label(&p.project_id, number),
                Err(_) => found.parent.clone(),
            };
            output::out(&fields(&[
                ("name", found.name.clone()),
                ("parent", found.parent.clone()),
                ("project", project),
            ]))?;
            Ok(())
        }
    }
}

async fn create(
    ctx: &Ctx,
    cp: &ControlPlane,
    project: Option<String>,
    display_name: Option<String>,
    key_id: Option<String>,
) -> anyhow::Result<()> {
    // The studio path (no --project) makes keys as AI Studio does: restricted to the
    // Generative Language API. A key in a named project is a console key: unrestricted
    // until `keys update` restricts it.
    let studio = project.is_none();
    let project = match project {
        Some(p) => cp.get_project(&p).await?,
        None => default_project(cp).await?,
    };
    let new = NewKey {
        key_id,
        display_name: Some(display_name.unwrap_or_else(|| DEFAULT_KEY_NAME.to_owned())),
        restrictions: studio
            .then(|| serde_json::json!({"apiTargets": [{"service": GENERATIVE_LANGUAGE}]})),
        ..NewKey::default()
    };
    let parent = if project.project_id.is_empty() {
        number(&project).to_owned()
    } else {
        project.project_id.clone()
    };
    let key = cp.create_key(&parent, &new).await?;
    if ctx.json() {
        return output::json(&key);
    }
    let label = project_label(&project.project_id, number(&project));
    let key_string = key
        .key_string
        .as_ref()
        .map(|s| s.expose().to_owned())
        .unwrap_or_default();
    output::out(&fields(&[
        ("name", key.name.clone()),
        ("displayName", key.display_name.clone()),
        ("project", label),
        ("created", date(key.create_time.as_deref())),
        ("keyString", key_string.clone()),
    ]))?;
    if key_string.is_empty() {
        output::line("The server did not return the key string; `keyplane keys get-key-string NAME` prints it.")?;
    } else {
        output::line("Store this key string safely now: it is shown only once. Anyone who has it can use the Gemini API as this project.")?;
    }
    Ok(())
}

/// `keys update`: only the named fields change (an update mask of exactly those).
async fn update(ctx: &Ctx, cp: &ControlPlane, args: KeysUpdateArgs) -> anyhow::Result<()> {
    let (body, mask) = update_request(&args)?;
    let key = cp.update_key(&args.name, &body, &mask).await?;
    if ctx.json() {
        return output::json(&key);
    }
    let project = project_of(cp, &key).await;
    output::line(&format!("Updated key {}.", key.name))?;
    output::out(&describe(&key, &project))?;
    Ok(())
}

/// The partial key and the update mask `keys update` sends.
fn update_request(args: &KeysUpdateArgs) -> anyhow::Result<(serde_json::Value, Vec<&'static str>)> {
    use serde_json::{json, Map, Value};
    let mut key = Map::new();
    let mut restrictions = Map::new();
    let mut mask = Vec::new();
    if let Some(d) = &args.display_name {
        key.insert("displayName".into(), Value::String(d.clone()));
        mask.push("displayName");
    }
    if args.clear_restrictions {
        mask.push("restrictions");
    }
    if !args.allowed_ips.is_empty() {
        restrictions.insert(
            "serverKeyRestrictions".into(),
            json!({ "allowedIps": args.allowed_ips }),
        );
        mask.push("restrictions.serverKeyRestrictions");
    }
    if !args.allowed_referrers.is_empty() {
        restrictions.insert(
            "browserKeyRestrictions".into(),
            json!({ "allowedReferrers": args.allowed_referrers }),
        );
        mask.push("restrictions.browserKeyRestrictions");
    }
    if !args.api_target.is_empty() {
        let mut targets = Vec::new();
        for t in &args.api_target {
            let (service, methods) = match t.split_once(':') {
                Some((s, m)) => (
                    s.trim(),
                    m.split(',')
                        .map(str::trim)
                        .filter(|m| !m.is_empty())
                        .collect::<Vec<_>>(),
                ),
                None => (t.trim(), Vec::new()),
            };
            anyhow::ensure!(
                !service.is_empty(),
                "--api-target needs a service name, e.g. generativelanguage.googleapis.com"
            );
            let mut target = json!({ "service": service });
            if !methods.is_empty() {
                target["methods"] = json!(methods);
            }
            targets.push(target);
        }
        restrictions.insert("apiTargets".into(), Value::Array(targets));
        mask.push("restrictions.apiTargets");
    }
    anyhow::ensure!(
        !mask.is_empty(),
        "nothing to update: give --display-name, --allowed-ips, --allowed-referrers, --api-target or --clear-restrictions"
    );
    if !restrictions.is_empty() {
        key.insert("restrictions".into(), Value::Object(restrictions));
    }
    Ok((Value::Object(key), mask))
}

/// The active project named "Default Gemini Project", made (with the Generative Language
/// API enabled) when there is none.
async fn default_project(cp: &ControlPlane) -> anyhow::Result<Project> {
    let projects = cp.list_projects(false).await?;
    if let Some(p) = projects.into_iter().find(|p| {
        p.display_name == DEFAULT_PROJECT_NAME && (p.state.is_empty() || p.state == "ACTIVE")
    }) {
        return Ok(p);
    }
    let mut last_err = None;
    for _ in 0..5 {
        let digits: u64 = rand::thread_rng().gen_range(0..10_000_000_000);
        let id = format!("{DEFAULT_PROJECT_PREFIX}{digits:010}");
        match cp.create_project(&id, Some(DEFAULT_PROJECT_NAME)).await {
            Ok(p) => {
                cp.enable_service(&p.project_id, GENERATIVE_LANGUAGE)
                    .await
                    .with_context(|| {
                        format!("enabling {GENERATIVE_LANGUAGE} in the new project {id}")
                    })?;
                output::note(&format!(
                    "Created project {} (\"{DEFAULT_PROJECT_NAME}\") with {GENERATIVE_LANGUAGE} enabled.",
                    project_label(&p.project_id, number(&p))
                ));
                return Ok(p);
            }
            Err(e @ ClientError::Api { .. }) if e.status() == Some("ALREADY_EXISTS") => {
                last_err = Some(e);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(last_err
        .map(anyhow::Error::from)
        .unwrap_or_else(|| anyhow::anyhow!("could not create the {DEFAULT_PROJECT_NAME}")))
}

async fn list(
    ctx: &Ctx,
    cp: &ControlPlane,
    project: Option<String>,
    show_deleted: bool,
) -> anyhow::Result<()> {
    let projects = match &project {
        Some(p) => vec![cp.get_project(p).await?],
        None => cp.list_projects(false).await?,
    };
    let labels: HashMap<String, String> = projects
        .iter()
        .map(|p| {
            (
                number(p).to_owned(),
                project_label(&p.project_id, number(p)),
            )
        })
        .collect();
    let mut keys: Vec<Key> = Vec::new();
    for p in &projects {
        let parent = if p.project_id.is_empty() {
            number(p)
        } else {
            p.project_id.as_str()
        };
        keys.extend(cp.list_keys(parent, show_deleted).await?);
    }
    if ctx.json() {
        return output::json(&serde_json::json!({ "keys": keys }));
    }
    if keys.is_empty() {
        output::note("No API keys.");
        return Ok(());
    }
    let mut t = Table::new(&["KEY", "NAME", "PROJECT", "CREATED"]);
    for k in &keys {
        let number = k.project_number().unwrap_or_default();
        let mut name = k.display_name.clone();
        if k.is_deleted() {
            name.push_str(" (deleted)");
        }
        t.row(vec![
            masked(k),
            name,
            labels
                .get(number)
                .cloned()
                .unwrap_or_else(|| project_label("", number)),
            date(k.create_time.as_deref()),
        ]);
    }
    t.print()?;
    Ok(())
}

/// `…abcd`, from the server's `maskedKeyString`.
fn masked(k: &Key) -> String {
    k.masked_key_string
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "…".to_owned())
}

/// `id (number)` of the key's project, or `projects/NUMBER` when it cannot be read.
async fn project_of(cp: &ControlPlane, key: &Key) -> String {
    let number = key.project_number().unwrap_or_default();
    match cp.get_project(number).await {
        Ok(p) => project_label(&p.project_id, number),
        Err(_) => project_label("", number),
    }
}

fn describe(k: &Key, project: &str) -> String {
    let restrictions = k
        .restrictions
        .as_ref()
        .filter(|r| r.as_object().is_none_or(|o| !o.is_empty()))
        .map(|r| r.to_string())
        .unwrap_or_else(|| "none".to_owned());
    fields(&[
        ("name", k.name.clone()),
        ("displayName", k.display_name.clone()),
        ("key", masked(k)),
        ("project", project.to_owned()),
        ("uid", k.uid.clone()),
        ("createTime", k.create_time.clone().unwrap_or_default()),
        ("updateTime", k.update_time.clone().unwrap_or_default()),
        ("deleteTime", k.delete_time.clone().unwrap_or_default()),
        ("etag", k.etag.clone()),
        ("restrictions", restrictions),
    ])
}
