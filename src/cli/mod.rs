//! The `distcron` command line as a client (README "CLI"): `jobs`, `runs`, `preview`, `apply`
//! and `export`, talking to a server over HTTP(S); with no command (or `serve`) the binary is
//! the server, exactly as before.
//!
//! Owns: the command tree ([`Main`], [`Command`]), the exit codes scripts rely on (0 ok,
//! 1 error, 2 usage, 3 conflict, 4 not found; see [`CliError::exit_code`]), one-line error
//! messages and the dispatch of each command. Submodules: `client` (server, token, TLS, the
//! blocking HTTP calls), `output` (tables and times), `follow` (a run's output as it grows),
//! `apply` (jobs as code: plan, apply, export).
//! Leaves to others: the server flags and config (`config::Cli`), what the server computes
//! (plans, previews, validation) and the server itself (`crate::run`).

mod apply;
mod client;
mod follow;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde_json::Value;

use crate::config::Cli;
use client::Client;

/// The whole command line: server flags (used when no command is given) or one command.
#[derive(Debug, Parser)]
#[command(
    name = "distcron",
    version,
    about = "A distributed cron: scheduled shell jobs, run exactly once per tick.",
    long_about = "A distributed cron: scheduled shell jobs, run exactly once per tick.\n\nWithout a command (or with `serve`) this starts the server; the other commands are a client of a running server (exit codes: 0 ok, 1 error, 2 usage, 3 conflict, 4 not found).",
    args_conflicts_with_subcommands = true
)]
pub struct Main {
    /// Server flags (no command given).
    #[command(flatten)]
    pub server: Cli,
    /// A client command, or `serve`.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default when no command is given).
    Serve(ServeArgs),
    /// Jobs: list, get, delete, enable, disable, run now, kill.
    Jobs {
        /// Connection and output options.
        #[command(flatten)]
        client: ClientArgs,
        /// What to do.
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Runs: list, get, tail (follow a run's output).
    Runs {
        /// Connection and output options.
        #[command(flatten)]
        client: ClientArgs,
        /// What to do.
        #[command(subcommand)]
        command: RunsCommand,
    },
    /// The next fire times of a cron expression, in a zone.
    Preview(PreviewArgs),
    /// Make the server's jobs what a jobs file declares (prints the plan first).
    Apply(ApplyArgs),
    /// Write the server's jobs as a jobs file (applying it is a no-op).
    Export(ExportArgs),
}

/// `distcron serve [server flags]`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Server flags.
    #[command(flatten)]
    pub cli: Cli,
}

/// Where the server is and how to talk to it; valid before or after the subcommand.
#[derive(Debug, Clone, Default, Args)]
pub struct ClientArgs {
    /// Server URL [default: the local config's listen address, else http://127.0.0.1:8070].
    #[arg(long, env = "DISTCRON_SERVER", global = true, value_name = "URL")]
    pub server: Option<String>,
    /// File holding the bearer token (first line) [default: $DISTCRON_TOKEN, else the local
    /// config's token or data_dir/api_token].
    #[arg(long, env = "DISTCRON_TOKEN_FILE", global = true, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// PEM file of the CA that signed the server's certificate (HTTPS).
    #[arg(long, env = "DISTCRON_CA_FILE", global = true, value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
    /// Local config file read for the default server and token [default: ./config.toml].
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Local data directory whose api_token is used when no token is given.
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Print the server's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// Longest wait for one request, seconds.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 30)]
    pub timeout_secs: u64,
}

/// `distcron jobs ...`.
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Every job (name, schedule, next and last run).
    List {
        /// Only jobs whose name contains this.
        #[arg(long, value_name = "TEXT")]
        filter: Option<String>,
    },
    /// One job.
    Get {
        /// Job name.
        name: String,
    },
    /// Delete a job.
    Delete {
        /// Job name.
        name: String,
        /// Only if the job is still at this version (409, exit 3, otherwise).
        #[arg(long)]
        version: Option<u64>,
    },
    /// Enable a job.
    Enable {
        /// Job name.
        name: String,
    },
    /// Disable a job (it keeps its definition and never fires).
    Disable {
        /// Job name.
        name: String,
    },
    /// Run a job once now, on one worker.
    Run {
        /// Job name.
        name: String,
    },
    /// Kill every live run of a job, wherever it runs.
    Kill {
        /// Job name.
        name: String,
    },
}

/// `distcron runs ...`.
#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// Runs, newest first.
    List(RunsListArgs),
    /// One run, its output included.
    Get {
        /// Run id.
        id: String,
    },
    /// A run's output; with --follow, as it grows until the run ends.
    Tail(TailArgs),
}

/// `distcron runs list` filters.
#[derive(Debug, Args)]
pub struct RunsListArgs {
    /// Only runs of this job.
    #[arg(long)]
    pub job: Option<String>,
    /// Only runs with this status (succeeded, failed, running, ...).
    #[arg(long)]
    pub status: Option<String>,
    /// Only runs on this worker.
    #[arg(long)]
    pub worker: Option<String>,
    /// Started at or after (RFC 3339).
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// Started before (RFC 3339).
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,
    /// Page size (1-1000).
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// The next page, as printed after the previous one.
    #[arg(long)]
    pub cursor: Option<String>,
}

/// `distcron runs tail`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["id", "job"])))]
pub struct TailArgs {
    /// Run id.
    pub id: Option<String>,
    /// The newest run of this job instead of a run id.
    #[arg(long)]
    pub job: Option<String>,
    /// Keep printing output until the run ends; the exit code is then 0 only if it succeeded.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// How often to look for new output while following, ms.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub poll_ms: u64,
}

/// `distcron preview EXPR`.
#[derive(Debug, Args)]
pub struct PreviewArgs {
    /// Cron expression (quote it).
    pub expr: String,
    /// IANA time zone [default: the server's default_tz].
    #[arg(long)]
    pub tz: Option<String>,
    /// How many fire times (1-100).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub count: u32,
    /// Fire times after this time (RFC 3339) [default: now].
    #[arg(long, value_name = "TIME")]
    pub after: Option<String>,
    /// How 6-field expressions read: distcron (seconds first) or seed (5 fields + year).
    #[arg(long, value_parser = ["distcron", "seed"])]
    pub dialect: Option<String>,
    /// Connection and output options.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `distcron apply`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["file", "plan"])))]
pub struct ApplyArgs {
    /// The jobs file (TOML: top-level `managed_by`, then `[[jobs]]` tables in the API's job shape).
    #[arg(short = 'f', long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Apply a plan saved with --out instead of planning again.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["prune", "dry_run"])]
    pub plan: Option<PathBuf>,
    /// Also delete the jobs labelled with the file's managed_by that it no longer declares.
    #[arg(long)]
    pub prune: bool,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Save the plan (with each job's planned version) to this file, for `apply --plan`.
    #[arg(short = 'o', long, value_name = "PATH")]
    pub out: Option<PathBuf>,
    /// Connection and output options.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `distcron export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Only the jobs with this label, written as the file's managed_by.
    #[arg(long, value_name = "LABEL")]
    pub managed_by: Option<String>,
    /// Write to this file instead of standard output.
    #[arg(short = 'o', long, value_name = "PATH")]
    pub out: Option<PathBuf>,
    /// Connection options.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// A client command's failure: one line for the operator and the exit code for scripts.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line or its input makes no sense (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The server answered with an error (exit 4 on 404, 3 on 409, else 1).
    #[error("{message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The API's error code (`job_not_found`, `version_conflict`, ...).
        code: String,
        /// The API's message, with the field when it names one.
        message: String,
    },
    /// Something changed on the server since it was read (exit 3).
    #[error("{0}")]
    Conflict(String),
    /// Something asked for does not exist (exit 4).
    #[error("{0}")]
    NotFound(String),
    /// Anything else: the server cannot be reached, a file cannot be read (exit 1).
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    /// The process exit code: 1 error, 2 usage, 3 conflict, 4 not found.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => 2,
            Self::Conflict(_) => 3,
            Self::NotFound(_) => 4,
            Self::Api { status: 409, .. } => 3,
            Self::Api { status: 404, .. } => 4,
            Self::Api { .. } | Self::Failed(_) => 1,
        }
    }
}

/// Runs a client command: prints its result, or one line on stderr, and returns the exit code.
pub fn run(command: Command) -> ExitCode {
    let result = match command {
        // main.rs starts the server for `serve`; reaching here is a wiring mistake.
        Command::Serve(_) => Err(CliError::Usage("serve starts the server; run it without other commands".into())),
        Command::Jobs { client, command } => jobs(&client, command),
        Command::Runs { client, command } => runs(&client, command),
        Command::Preview(args) => preview(&args),
        Command::Apply(args) => apply::apply(&args),
        Command::Export(args) => apply::export(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("distcron: {}", output::one_line(&e.to_string()));
            ExitCode::from(e.exit_code())
        }
    }
}

/// Prints `value` as pretty JSON.
fn print_json(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()));
}

fn jobs(args: &ClientArgs, command: JobsCommand) -> Result<(), CliError> {
    let client = Client::connect(args)?;
    let job_path = |name: &str, tail: &str| format!("/api/v1/jobs/{}{tail}", client::segment(name));
    match command {
        JobsCommand::List { filter } => {
            let query: Vec<(&str, String)> = filter.into_iter().map(|f| ("q", f)).collect();
            let body = client.get("/api/v1/jobs", &query)?;
            if args.json {
                print_json(&body);
            } else {
                print!("{}", output::jobs_table(&body));
                for bad in body["invalid_jobs"].as_array().into_iter().flatten() {
                    eprintln!(
                        "warning: stored job {} is not a valid job and is not scheduled: {}",
                        output::text(&bad["name"]),
                        output::text(&bad["invalid"])
                    );
                }
            }
        }
        JobsCommand::Get { name } => {
            let body = client.get(&job_path(&name, ""), &[])?;
            if args.json {
                print_json(&body);
            } else {
                print!("{}", output::job_details(&body));
            }
        }
        JobsCommand::Delete { name, version } => {
            let query = version.map(|v| format!("?version={v}")).unwrap_or_default();
            let body = client.send("DELETE", &format!("{}{query}", job_path(&name, "")), None)?;
            report(args, &body, || format!("Deleted job {name} (it was at version {}).", body["deleted"]["version"]));
        }
        JobsCommand::Enable { name } => {
            let body = client.send("POST", &job_path(&name, "/enable"), None)?;
            report(args, &body, || format!("Enabled job {name} (version {}).", body["version"]));
        }
        JobsCommand::Disable { name } => {
            let body = client.send("POST", &job_path(&name, "/disable"), None)?;
            report(args, &body, || format!("Disabled job {name} (version {}).", body["version"]));
        }
        JobsCommand::Run { name } => {
            let body = client.send("POST", &job_path(&name, "/run"), None)?;
            report(args, &body, || {
                format!(
                    "Run of job {name} requested (request {}); see it with: distcron runs list --job {name}",
                    output::text(&body["request"])
                )
            });
        }
        JobsCommand::Kill { name } => {
            let body = client.send("POST", &job_path(&name, "/kill"), None)?;
            report(args, &body, || format!("Kill of every live run of job {name} requested."));
        }
    }
    Ok(())
}

/// Prints the server's JSON, or `line()` for humans.
fn report(args: &ClientArgs, body: &Value, line: impl FnOnce() -> String) {
    if args.json {
        print_json(body);
    } else {
        println!("{}", line());
    }
}

fn runs(args: &ClientArgs, command: RunsCommand) -> Result<(), CliError> {
    let client = Client::connect(args)?;
    match command {
        RunsCommand::List(list) => {
            let mut query = vec![("limit", list.limit.to_string())];
            for (key, value) in [
                ("job", list.job),
                ("status", list.status),
                ("worker", list.worker),
                ("from", list.from),
                ("to", list.to),
                ("cursor", list.cursor),
            ] {
                if let Some(v) = value {
                    query.push((key, v));
                }
            }
            let body = client.get("/api/v1/runs", &query)?;
            if args.json {
                print_json(&body);
            } else {
                print!("{}", output::runs_table(&body));
                if let Some(cursor) = body["next_cursor"].as_str() {
                    eprintln!("More runs: add --cursor {cursor}");
                }
            }
        }
        RunsCommand::Get { id } => {
            let body = client.get(&format!("/api/v1/runs/{}", client::segment(&id)), &[])?;
            if args.json {
                print_json(&body);
            } else {
                print!("{}", output::run_details(&body));
            }
        }
        RunsCommand::Tail(tail) => follow::tail(&client, args, &tail)?,
    }
    Ok(())
}

fn preview(args: &PreviewArgs) -> Result<(), CliError> {
    let client = Client::connect(&args.client)?;
    let mut query = vec![("expr", args.expr.clone()), ("count", args.count.to_string())];
    for (key, value) in [("tz", &args.tz), ("after", &args.after), ("dialect", &args.dialect)] {
        if let Some(v) = value {
            query.push((key, v.clone()));
        }
    }
    let body = client.get("/api/v1/cron/preview", &query)?;
    if args.client.json {
        print_json(&body);
    } else {
        print!("{}", output::preview(&body));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Main, clap::Error> {
        Main::try_parse_from(std::iter::once("distcron").chain(args.iter().copied()))
    }

    #[test]
    fn no_command_is_the_server_with_its_flags() {
        let main = parse(&["--role", "worker", "--config", "/etc/distcron.toml"]).expect("server flags");
        assert!(main.command.is_none());
        assert_eq!(main.server.role, Some(crate::config::Role::Worker));
        let main = parse(&[]).expect("bare");
        assert!(main.command.is_none());
        let main = parse(&["serve", "--listen", "127.0.0.1:9"]).expect("serve");
        assert!(matches!(main.command, Some(Command::Serve(ServeArgs { cli: Cli { listen: Some(_), .. } }))));
    }

    #[test]
    fn client_options_go_before_or_after_the_subcommand() {
        for args in [
            &["jobs", "--server", "http://h:1", "--json", "get", "a"][..],
            &["jobs", "get", "a", "--server", "http://h:1", "--json"][..],
        ] {
            let Some(Command::Jobs { client, command: JobsCommand::Get { name } }) =
                parse(args).expect("parses").command
            else {
                panic!("jobs get: {args:?}");
            };
            assert_eq!((client.server.as_deref(), client.json, name.as_str()), (Some("http://h:1"), true, "a"));
        }
    }

    #[test]
    fn usage_errors_exit_2_and_conflicts_3_and_not_found_4() {
        for bad in [
            &["jobs"][..],
            &["jobs", "get"][..],
            &["runs", "tail"][..],
            &["apply"][..],
            &["apply", "--plan", "p.json", "--prune"][..],
            &["--role", "worker", "jobs", "list"][..],
            &["preview", "* * * * *", "--count", "0"][..],
        ] {
            let e = parse(bad).expect_err(&format!("{bad:?} is a usage error"));
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
        let api = |status| CliError::Api { status, code: String::new(), message: String::new() };
        assert_eq!(
            (api(409).exit_code(), api(404).exit_code(), api(400).exit_code(), api(503).exit_code()),
            (3, 4, 1, 1)
        );
        assert_eq!(CliError::Usage(String::new()).exit_code(), 2);
    }
}
