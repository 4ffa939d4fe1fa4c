//! `keyplane users create|list|disable|enable` (Keyplane's people, `user:EMAIL`). A new
//! user's password is read from stdin (`--password-stdin`, the default) or from a file
//! (`--password-file F`); it is never taken on the command line nor printed.

use crate::context::Ctx;
use crate::output::{self, Table};
use anyhow::Context;
use clap::Subcommand;
use std::io::Read;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a user who signs in with an email and a password (at least 8 characters)
    Create {
        /// The user's email address
        #[arg(value_name = "EMAIL")]
        email: String,
        /// Read the password from stdin (the default)
        #[arg(long, conflicts_with = "password_file")]
        password_stdin: bool,
        /// Read the password from a file (its first line)
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// A display name
        #[arg(long, value_name = "NAME")]
        display_name: Option<String>,
    },
    /// List users
    List,
    /// Disable a user: sign-in is refused and its access tokens stop working
    Disable {
        #[arg(value_name = "EMAIL")]
        email: String,
    },
    /// Enable a disabled user again
    Enable {
        #[arg(value_name = "EMAIL")]
        email: String,
    },
}

/// The first line of `text`, without its line ending.
fn first_line(text: &str) -> &str {
    text.split('\n').next().unwrap_or("").trim_end_matches('\r')
}

fn read_password(file: Option<&PathBuf>) -> anyhow::Result<String> {
    let text = match file {
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the password file {}", f.display()))?,
        None => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("cannot read the password from stdin")?;
            s
        }
    };
    let password = first_line(&text).to_owned();
    anyhow::ensure!(!password.is_empty(), "the password is empty");
    Ok(password)
}

pub async fn run(ctx: &Ctx, cmd: UsersCommand) -> anyhow::Result<()> {
    let cp = ctx.control()?;
    match cmd {
        UsersCommand::Create {
            email,
            password_stdin: _,
            password_file,
            display_name,
        } => {
            let password = read_password(password_file.as_ref())?;
            let u = cp
                .create_user(&email, &password, display_name.as_deref())
                .await?;
            if ctx.json() {
                return output::json(&u);
            }
            output::line(&format!("Created user:{}.", u.email))?;
        }
        UsersCommand::List => {
            let users = cp.list_users().await?;
            if ctx.json() {
                return output::json(&serde_json::json!({ "users": users }));
            }
            if users.is_empty() {
                output::note("No users.");
                return Ok(());
            }
            let mut t = Table::new(&["EMAIL", "DISPLAY NAME", "STATE", "CREATED"]);
            for u in &users {
                t.row(vec![
                    u.email.clone(),
                    u.display_name.clone(),
                    if u.disabled { "DISABLED" } else { "ENABLED" }.to_owned(),
                    output::date(u.create_time.as_deref()),
                ]);
            }
            t.print()?;
        }
        UsersCommand::Disable { email } => set(ctx, &cp, &email, true).await?,
        UsersCommand::Enable { email } => set(ctx, &cp, &email, false).await?,
    }
    Ok(())
}

async fn set(
    ctx: &Ctx,
    cp: &keyplane_client::ControlPlane,
    email: &str,
    disabled: bool,
) -> anyhow::Result<()> {
    let u = cp.set_user_disabled(email, disabled).await?;
    if ctx.json() {
        return output::json(&u);
    }
    let what = if disabled { "Disabled" } else { "Enabled" };
    output::line(&format!("{what} user:{}.", u.email))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_the_first_line() {
        assert_eq!(first_line("hunter22\n"), "hunter22");
        assert_eq!(first_line("hunter22\r\nmore"), "hunter22");
        assert_eq!(first_line("a b c d e"), "a b c d e");
    }
}
