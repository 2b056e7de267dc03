//! The `proxy` binary: a thin CLI over the `proxy` library.

use clap::{ArgMatches, CommandFactory as _, FromArgMatches as _};
use proxy::cli::{Cli, Command, LogFormat, init_logging, run};

fn main() -> std::process::ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let format = cli.log_format;
    let result = match cli.command {
        Command::Run(args) => run_daemon(args, format, &matches),
        Command::Cleanup(args) => {
            init_logging(format);
            args.execute()
        }
        Command::Inspect(args) => {
            init_logging(format);
            args.execute()
        }
        Command::Diff(args) => {
            init_logging(format);
            return match args.execute() {
                Ok(true) => std::process::ExitCode::SUCCESS,
                Ok(false) => std::process::ExitCode::from(1),
                Err(error) => {
                    tracing::error!("{error:#}");
                    std::process::ExitCode::from(2)
                }
            };
        }
        Command::Explain(args) => {
            init_logging(format);
            args.execute()
        }
        Command::Config(args) => {
            init_logging(format);
            args.execute()
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `proxy run`: the configuration file may set the log format, so it is read
/// (with the flags over it) before logging starts.
fn run_daemon(args: run::RunArgs, format: LogFormat, matches: &ArgMatches) -> anyhow::Result<()> {
    let no_matches = ArgMatches::default();
    let run_matches = matches.subcommand_matches("run").unwrap_or(&no_matches);
    match run::resolve(args, format, run_matches) {
        Ok(settings) => {
            init_logging(settings.log_format);
            settings.execute()
        }
        Err(error) => {
            init_logging(format);
            Err(error.into())
        }
    }
}
