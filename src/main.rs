//! The `distcron` binary: parse the command line, load the config, start logging, run.

use std::process::ExitCode;

use clap::Parser;
use distcron::config::{Cli, Config};

fn main() -> ExitCode {
    let cli = Cli::parse();
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
