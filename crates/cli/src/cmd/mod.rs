//! One module per command group; `run` dispatches.

pub(crate) mod audit;
mod generate;
pub(crate) mod iam;
mod keys;
pub(crate) mod org_policies;
mod projects;
pub(crate) mod quotas;
mod serve;
pub(crate) mod service_accounts;
mod services;
pub(crate) mod users;

use crate::args::{Cli, Command};
use crate::context::Ctx;

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let ctx = Ctx::new(&cli);
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Projects(c) => projects::run(&ctx, c).await,
        Command::Services(c) => services::run(&ctx, c).await,
        Command::Keys(c) => keys::run(&ctx, c).await,
        Command::Iam(c) => service_accounts::run(&ctx, c).await,
        Command::OrgPolicies(c) => org_policies::run(&ctx, c).await,
        Command::Organizations(c) => iam::run_organizations(&ctx, c).await,
        Command::Generate(args) => generate::run(&ctx, args).await,
        Command::Users(c) => users::run(&ctx, c).await,
        Command::Audit(args) => audit::run(&ctx, args).await,
        Command::Usage(args) => quotas::usage(&ctx, args).await,
    }
}
