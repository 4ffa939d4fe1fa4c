//! `keyplane iam …` (IAM Admin v1), gcloud-like:
//!
//! - `iam service-accounts create ACCOUNT_ID --project P [--display-name N] [--description D]`
//! - `iam service-accounts list --project P`
//! - `iam service-accounts describe|delete|disable|enable EMAIL`
//! - `iam service-accounts update EMAIL [--display-name N] [--description D]`
//! - `iam service-accounts keys create [FILE] --iam-account EMAIL [--output FILE]`
//! - `iam service-accounts keys list|delete|disable|enable … --iam-account EMAIL`
//! - `iam roles list [--full]`, `iam roles describe ROLE`
//!
//! Accounts are addressed by email under the project wildcard (`projects/-`), as gcloud does.
//! A key file is written once, with mode 0600, and never printed unless `--output -`.

use crate::context::Ctx;
use crate::output::{self, date, fields, Table};
use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use keyplane_client::iam::{Role, ServiceAccount, ServiceAccountKey};
use std::io::Write as _;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum IamCommand {
    /// Service accounts and their keys
    #[command(subcommand, name = "service-accounts")]
    ServiceAccounts(ServiceAccountsCommand),
    /// The predefined roles Keyplane knows
    #[command(subcommand)]
    Roles(RolesCommand),
}

#[derive(Debug, Subcommand)]
pub enum ServiceAccountsCommand {
    /// Create a service account (EMAIL = ACCOUNT_ID@PROJECT.iam.gserviceaccount.com)
    Create {
        /// 6-30 lowercase letters, digits and hyphens, starting with a letter
        account_id: String,
        /// Project id or number
        #[arg(long, value_name = "PROJECT")]
        project: String,
        #[arg(long, value_name = "NAME")]
        display_name: Option<String>,
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
    },
    /// List the service accounts of a project
    List {
        /// Project id or number
        #[arg(long, value_name = "PROJECT")]
        project: String,
    },
    /// Show a service account
    Describe {
        #[arg(value_name = "EMAIL")]
        email: String,
    },
    /// Change a service account's display name or description
    Update {
        #[arg(value_name = "EMAIL")]
        email: String,
        #[arg(long, value_name = "NAME")]
        display_name: Option<String>,
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
    },
    /// Delete a service account and its keys
    Delete {
        #[arg(value_name = "EMAIL")]
        email: String,
    },
    /// Disable a service account: its tokens stop working at once
    Disable {
        #[arg(value_name = "EMAIL")]
        email: String,
    },
    /// Enable a disabled service account
    Enable {
        #[arg(value_name = "EMAIL")]
        email: String,
    },
    /// Keys of a service account
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Args)]
pub struct IamAccount {
    /// The service account's email
    #[arg(long, value_name = "EMAIL")]
    pub iam_account: String,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and write its JSON key file (mode 0600; `-` writes it to stdout)
    Create {
        /// Where to write the key file (gcloud's positional form)
        #[arg(value_name = "FILE", conflicts_with = "output")]
        file: Option<PathBuf>,
        /// Where to write the key file
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        account: IamAccount,
    },
    /// List a service account's keys
    List {
        #[command(flatten)]
        account: IamAccount,
    },
    /// Delete a key: it stops authenticating at once
    Delete {
        #[arg(value_name = "KEY_ID")]
        key_id: String,
        #[command(flatten)]
        account: IamAccount,
    },
    /// Disable a key
    Disable {
        #[arg(value_name = "KEY_ID")]
        key_id: String,
        #[command(flatten)]
        account: IamAccount,
    },
    /// Enable a disabled key
    Enable {
        #[arg(value_name = "KEY_ID")]
        key_id: String,
        #[command(flatten)]
        account: IamAccount,
    },
}

#[derive(Debug, Subcommand)]
pub enum RolesCommand {
    /// List the predefined roles
    List {
        /// Include each role's permissions
        #[arg(long)]
        full: bool,
    },
    /// Show a role and its permissions (e.g. roles/owner)
    Describe {
        #[arg(value_name = "ROLE")]
        role: String,
    },
}

pub async fn run(ctx: &Ctx, cmd: IamCommand) -> anyhow::Result<()> {
    match cmd {
        IamCommand::ServiceAccounts(c) => accounts(ctx, c).await,
        IamCommand::Roles(c) => roles(ctx, c).await,
    }
}

async fn accounts(ctx: &Ctx, cmd: ServiceAccountsCommand) -> anyhow::Result<()> {
    let cp = ctx.control()?;
    match cmd {
        ServiceAccountsCommand::Create {
            account_id,
            project,
            display_name,
            description,
        } => {
            let sa = cp
                .create_service_account(
                    &project,
                    &account_id,
                    display_name.as_deref(),
                    description.as_deref(),
                )
                .await?;
            if ctx.json() {
                return output::json(&sa);
            }
            output::line(&format!("Created service account [{}].", sa.email))?;
        }
        ServiceAccountsCommand::List { project } => {
            let accounts = cp.list_service_accounts(&project).await?;
            if ctx.json() {
                return output::json(&serde_json::json!({ "accounts": accounts }));
            }
            if accounts.is_empty() {
                output::note(&format!("No service accounts in project {project}."));
                return Ok(());
            }
            let mut t = Table::new(&["DISPLAY NAME", "EMAIL", "DISABLED"]);
            for sa in &accounts {
                t.row(vec![
                    sa.display_name.clone().unwrap_or_default(),
                    sa.email.clone(),
                    sa.disabled.to_string(),
                ]);
            }
            t.print()?;
        }
        ServiceAccountsCommand::Describe { email } => {
            let sa = cp.get_service_account(None, &email).await?;
            if ctx.json() {
                return output::json(&sa);
            }
            output::out(&describe_account(&sa))?;
        }
        ServiceAccountsCommand::Update {
            email,
            display_name,
            description,
        } => {
            if display_name.is_none() && description.is_none() {
                bail!("nothing to update: give --display-name or --description");
            }
            let sa = cp
                .update_service_account(
                    None,
                    &email,
                    display_name.as_deref(),
                    description.as_deref(),
                )
                .await?;
            if ctx.json() {
                return output::json(&sa);
            }
            output::line(&format!("Updated service account [{}].", sa.email))?;
        }
        ServiceAccountsCommand::Delete { email } => {
            cp.delete_service_account(None, &email).await?;
            done(ctx, &format!("Deleted service account [{email}]."))?;
        }
        ServiceAccountsCommand::Disable { email } => {
            cp.set_service_account_enabled(None, &email, false).await?;
            done(ctx, &format!("Disabled service account [{email}]."))?;
        }
        ServiceAccountsCommand::Enable { email } => {
            cp.set_service_account_enabled(None, &email, true).await?;
            done(ctx, &format!("Enabled service account [{email}]."))?;
        }
        ServiceAccountsCommand::Keys(k) => keys(ctx, &cp, k).await?,
    }
    Ok(())
}

/// `{}` for `--format json`, else the sentence.
fn done(ctx: &Ctx, sentence: &str) -> anyhow::Result<()> {
    if ctx.json() {
        return output::json(&serde_json::json!({}));
    }
    output::line(sentence)?;
    Ok(())
}

fn describe_account(sa: &ServiceAccount) -> String {
    fields(&[
        ("name", sa.name.clone()),
        ("email", sa.email.clone()),
        ("displayName", sa.display_name.clone().unwrap_or_default()),
        ("description", sa.description.clone().unwrap_or_default()),
        ("projectId", sa.project_id.clone()),
        ("uniqueId", sa.unique_id.clone()),
        ("oauth2ClientId", sa.oauth2_client_id.clone()),
        ("disabled", sa.disabled.to_string()),
    ])
}

async fn keys(
    ctx: &Ctx,
    cp: &keyplane_client::ControlPlane,
    cmd: KeysCommand,
) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Create {
            file,
            output,
            account,
        } => {
            let Some(path) = output.or(file) else {
                bail!("give the file to write the key to: --output FILE (or - for stdout)");
            };
            let to_stdout = path.as_os_str() == "-";
            if !to_stdout && path.exists() {
                bail!(
                    "{} already exists; the key file is written only to a new file",
                    path.display()
                );
            }
            let key = cp
                .create_service_account_key(None, &account.iam_account)
                .await?;
            let text = key.key_file()?;
            if to_stdout {
                output::out(text.expose())?;
                return Ok(());
            }
            write_private(&path, text.expose().as_bytes()).with_context(|| {
                format!(
                    "key {} was created but could not be written to {}; delete it with `keyplane iam service-accounts keys delete {} --iam-account {}`",
                    key.key_id(),
                    path.display(),
                    key.key_id(),
                    account.iam_account
                )
            })?;
            if ctx.json() {
                let mut shown = key.clone();
                shown.private_key_data = None;
                return output::json(&shown);
            }
            output::line(&format!(
                "Created key [{}] of [{}] and wrote it to [{}].",
                key.key_id(),
                account.iam_account,
                path.display()
            ))?;
        }
        KeysCommand::List { account } => {
            let keys = cp
                .list_service_account_keys(None, &account.iam_account)
                .await?;
            if ctx.json() {
                return output::json(&serde_json::json!({ "keys": keys }));
            }
            if keys.is_empty() {
                output::note(&format!("No keys for {}.", account.iam_account));
                return Ok(());
            }
            output::out(&keys_table(&keys))?;
        }
        KeysCommand::Delete { key_id, account } => {
            cp.delete_service_account_key(None, &account.iam_account, &key_id)
                .await?;
            done(
                ctx,
                &format!("Deleted key [{key_id}] of [{}].", account.iam_account),
            )?;
        }
        KeysCommand::Disable { key_id, account } => {
            cp.set_service_account_key_enabled(None, &account.iam_account, &key_id, false)
                .await?;
            done(
                ctx,
                &format!("Disabled key [{key_id}] of [{}].", account.iam_account),
            )?;
        }
        KeysCommand::Enable { key_id, account } => {
            cp.set_service_account_key_enabled(None, &account.iam_account, &key_id, true)
                .await?;
            done(
                ctx,
                &format!("Enabled key [{key_id}] of [{}].", account.iam_account),
            )?;
        }
    }
    Ok(())
}

fn keys_table(keys: &[ServiceAccountKey]) -> String {
    let mut t = Table::new(&["KEY_ID", "CREATED_AT", "EXPIRES_AT", "DISABLED"]);
    for k in keys {
        t.row(vec![
            k.key_id().to_owned(),
            date(Some(&k.valid_after_time)),
            date(Some(&k.valid_before_time)),
            k.disabled.to_string(),
        ]);
    }
    t.render()
}

/// Writes a new file with mode 0600 (never replacing one).
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

async fn roles(ctx: &Ctx, cmd: RolesCommand) -> anyhow::Result<()> {
    let cp = ctx.control()?;
    match cmd {
        RolesCommand::List { full } => {
            let roles = cp.list_roles(full).await?;
            if ctx.json() {
                return output::json(&serde_json::json!({ "roles": roles }));
            }
            let mut t = Table::new(&["NAME", "TITLE", "STAGE"]);
            for r in &roles {
                t.row(vec![r.name.clone(), r.title.clone(), r.stage.clone()]);
            }
            t.print()?;
        }
        RolesCommand::Describe { role } => {
            let r = cp.get_role(&role).await?;
            if ctx.json() {
                return output::json(&r);
            }
            output::out(&describe_role(&r))?;
        }
    }
    Ok(())
}

fn describe_role(r: &Role) -> String {
    let mut out = fields(&[
        ("name", r.name.clone()),
        ("title", r.title.clone()),
        ("description", r.description.clone()),
        ("stage", r.stage.clone()),
    ]);
    out.push_str("includedPermissions:\n");
    for p in &r.included_permissions {
        out.push_str(&format!("- {p}\n"));
    }
    out
}
