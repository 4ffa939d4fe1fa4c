//! `keyplane`: runs the server (`serve`) and drives a running one through its control
//! plane (projects, services, keys) and its Gemini API (`generate`).
//!
//! main only parses the command line, runs the command and turns a failure into one line
//! on stderr and exit status 1. The commands live in `cmd/`, output formatting in
//! `output.rs`, credential and server discovery in `context.rs`.

mod args;
mod cmd;
mod context;
mod output;

use clap::Parser;
use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    if !cli.command.is_serve() {
        // A client command never shows a panic or a backtrace; the server keeps the
        // default hook (a panicking request task must not end the process).
        output::install_panic_hook();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cmd::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => output::report_error(&e),
    }
}
