//! The `proxy` binary: a thin CLI over the `proxy` library.

use clap::Parser as _;
use proxy::cli::{Cli, Command, init_logging};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Run(args) => args.execute(),
        Command::Cleanup(args) => args.execute(),
        Command::Inspect(args) => args.execute(),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
