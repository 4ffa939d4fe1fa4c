//! One module per command group; `run` dispatches.

mod generate;
mod keys;
mod projects;
mod serve;
mod services;

use crate::args::{Cli, Command};
use crate::context::Ctx;

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let ctx = Ctx::new(&cli);
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Projects(c) => projects::run(&ctx, c).await,
        Command::Services(c) => services::run(&ctx, c).await,
        Command::Keys(c) => keys::run(&ctx, c).await,
        Command::Generate(args) => generate::run(&ctx, args).await,
    }
}
