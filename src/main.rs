//! The `distcron` binary: parse the command line; a client command (`jobs`, `runs`, `preview`,
//! `apply`, `export`) runs and exits with its code, anything else (no command, or `serve`) loads
//! the config, starts logging and runs the server.

use std::process::ExitCode;

use clap::Parser;
use distcron::cli::{Command, Main};
use distcron::config::Config;

fn main() -> ExitCode {
    let main = Main::parse();
    let cli = match main.command {
        None => main.server,
        Some(Command::Serve(serve)) => serve.cli,
        Some(command) => return distcron::cli::run(command),
    };
    let config = match Config::load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("distcron: {e}");
            return ExitCode::from(2);
        }
    };
    env_logger::Builder::new().parse_filters(&config.log_level).parse_env("RUST_LOG").format_timestamp_millis().init();
    for (flag, instead) in cli.secrets_in_argv() {
        log::warn!(
            "A secret was passed as a command-line flag; every local user can read it in ps and /proc. flag={flag} use_instead={instead}"
        );
    }
    match distcron::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = format!("distcron: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("{msg}");
            ExitCode::FAILURE
        }
    }
}
