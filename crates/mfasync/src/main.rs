//! `mfasync`: the command line (PRODUCT.md section 1). Wiring only: the work is
//! done by `mfasync-core` (pure), `mfasync-ldap` and `mfasync-store`.

use clap::{Parser, Subcommand, ValueEnum};
use std::process::ExitCode;

mod alloc;
mod cli;
mod database;
mod http;
mod logging;
mod manual;
mod progress;
mod radius;
mod serve;
mod systemd;
mod terminal;
mod web;

use mfasync_engine::cluster::CliLease;
use mfasync_engine::secrets;

/// Exit codes of PRODUCT.md: 1 refused/failed, 2 bad usage or invalid input.
#[derive(Debug)]
pub enum Failure {
    Refused(String),
    Invalid(Vec<String>),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Refused(format!("{e:#}"))
    }
}

type CmdResult = Result<(), Failure>;

#[derive(Parser)]
#[command(
    name = "mfasync",
    version,
    about = "Directory integration of an MFA server: keeps the MFA user database in step with Active Directory or LDAP"
)]
struct Cli {
    /// The MFA user database: sqlite://PATH (created if missing) or postgres://...
    #[arg(
        long,
        global = true,
        env = "MFASYNC_DATABASE",
        default_value = "sqlite://mfasync.db"
    )]
    database: String,
    /// Machine-readable output on stdout (one JSON document)
    #[arg(long, global = true)]
    json: bool,
    /// How long to wait for a database server (PostgreSQL) to answer:
    /// seconds or a duration ("10s")
    #[arg(long, global = true, env = "MFASYNC_CONNECT_TIMEOUT", default_value = "10",
          value_parser = database::parse_timeout)]
    connect_timeout: std::time::Duration,
    /// A directory password files may be read from (repeatable; default
    /// /etc/mfasync; systemd's $CREDENTIALS_DIRECTORY always)
    #[arg(long = "secrets-dir", global = true, value_name = "DIR")]
    secrets_dirs: Vec<std::path::PathBuf>,
    /// How stderr's log lines are written: text, or one JSON object per line
    #[arg(long, global = true, value_enum, env = "MFASYNC_LOG_FORMAT", default_value_t = logging::LogFormat::Text)]
    log_format: logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Manage the configuration
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// The directory connection
    Directory {
        #[command(subcommand)]
        cmd: DirectoryCmd,
    },
    /// Run one synchronization cycle now
    Sync {
        /// A full synchronization ("Synchronize Now")
        #[arg(long)]
        full: bool,
        /// Compute and print what a sync would change; change nothing
        #[arg(long)]
        plan: bool,
        /// Only this user (a username or a DN), read from the directory now;
        /// nobody else is looked at, so nobody else is disabled or removed
        #[arg(long, value_name = "NAME|DN", conflicts_with = "full")]
        user: Option<String>,
    },
    /// The MFA users
    Users {
        #[command(subcommand)]
        cmd: UsersCmd,
    },
    /// Synchronization history
    History {
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
    /// Pending removals held for administrator approval
    Approvals {
        #[command(subcommand)]
        cmd: ApprovalsCmd,
    },
    /// Welcome and update emails to users: queued by sync, delivered by the
    /// service or by each one-shot sync
    Outbox {
        #[command(subcommand)]
        cmd: OutboxCmd,
    },
    /// The audit trail: user changes by sync, configuration versions, approval decisions
    Audit {
        /// How many entries, newest first
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[command(subcommand)]
        cmd: Option<AuditCmd>,
    },
    /// Verify a password by LDAP bind
    Auth {
        username: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Run the service (periodic sync, portal, REST API)
    Serve {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Session cookies without the Secure flag: only for plain http that is
        /// not on loopback (behind a TLS-terminating proxy, prefer the default)
        #[arg(long)]
        insecure_cookies: bool,
        /// This server's name among the servers sharing the database
        /// (default: the host name)
        #[arg(long)]
        name: Option<String>,
        /// The sync lease period: a runner that stops renewing is replaced
        /// within two periods
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
        lease_seconds: u64,
        /// A reverse proxy whose X-Forwarded-For names the client of
        /// POST /api/v1/auth and portal sign-in (repeatable; default: none,
        /// the socket peer is the client)
        #[arg(long = "trusted-proxy", value_name = "IP")]
        trusted_proxies: Vec<std::net::IpAddr>,
        /// Failed password checks per client address within 5 minutes
        /// (POST /api/v1/auth and portal sign-in, counted apart) after which
        /// the accounts that failed from it get 429 rate-limited from it
        /// without asking the directory; other accounts are still checked
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        auth_client_limit: u64,
        /// Seconds a connection has to send a complete request head (from its
        /// start, or from the first byte after an idle spell); then it is closed
        #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
        header_timeout: u64,
        /// Seconds a kept-alive connection may idle between requests
        #[arg(long, value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86400))]
        idle_timeout: u64,
        /// Connections served at once; more get 503 and are closed
        /// (default: 1024, fewer when the open files limit is low)
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        max_connections: Option<u64>,
    },
    /// The servers sharing this database, and which one runs synchronization
    Servers {
        #[command(subcommand)]
        cmd: ServersCmd,
    },
    /// The database itself
    Db {
        #[command(subcommand)]
        cmd: DbCmd,
    },
    /// Local administrators of the web portal
    Admin {
        #[command(subcommand)]
        cmd: AdminCmd,
    },
    /// Print the shell completion script (bash, zsh, fish, elvish, powershell)
    Completions { shell: clap_complete::Shell },
    /// Write the man pages into DIR (for packaging)
    #[command(hide = true)]
    Manpages { dir: std::path::PathBuf },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Delete the entries older than audit.retention (audited)
    Purge,
}

#[derive(Subcommand)]
enum ServersCmd {
    /// Every registered server: address, version, last heartbeat, the runner
    List,
    /// Only this server may run synchronization (the seed's choice)
    Pin { name: String },
    /// Any server may run synchronization (automatic failover)
    Unpin,
    /// Remove a server that is gone for good from the list
    Forget { name: String },
}

#[derive(Subcommand)]
enum DbCmd {
    /// Copy every table of --database (SQLite) into a PostgreSQL database,
    /// verified by per-table row counts and checksums
    Migrate {
        /// The target: postgres://...
        #[arg(long)]
        to: String,
        /// Replace what the target holds (refused otherwise when not empty)
        #[arg(long)]
        overwrite: bool,
    },
    /// Seal the passwords stored in clear in every configuration version
    /// with the secret key (MFASYNC_SECRET_KEY_FILE)
    Rekey {
        /// Also move passwords sealed with this old key to the current one
        #[arg(long, value_name = "FILE")]
        old_key_file: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand)]
enum AdminCmd {
    /// Set (create or replace) a local administrator's password, read from stdin
    SetPassword {
        username: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove a local administrator, ending its sessions and revoking its API tokens
    Remove { username: String },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Validate a TOML configuration and store it as the active configuration
    Apply {
        file: std::path::PathBuf,
        /// Only validate
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the active configuration as TOML (secrets are never printed)
    Export,
    /// Print a commented starter configuration (Active Directory by default)
    Example {
        /// For OpenLDAP instead
        #[arg(long)]
        openldap: bool,
    },
}

#[derive(Subcommand)]
enum DirectoryCmd {
    /// Connect, TLS, bind, read the RootDSE; report each step and what the server supports
    Test,
}

#[derive(Subcommand)]
enum UsersCmd {
    /// Every MFA user
    Export {
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
        /// CSV: the values as stored, without the quote that stops a spreadsheet from running a formula
        #[arg(long)]
        raw: bool,
        /// Also the users in the recycle bin, with an extra field deleted_at
        #[arg(long)]
        include_deleted: bool,
    },
    /// Why a user is (or is not) an MFA user: its entry read now and decided
    /// step by step as a sync would, against what is stored
    Explain {
        /// A username or a DN
        #[arg(value_name = "NAME|DN")]
        name: String,
    },
    /// The recycle bin: users a sync removed, kept for sync.retention
    Deleted,
    /// Put a user of the recycle bin back among the MFA users, with its MFA data
    Restore {
        /// Its username, or its directory id when several share the username
        name: String,
    },
    /// Delete a user of the recycle bin for good
    Purge {
        /// Its username, or its directory id when several share the username
        name: String,
    },
    /// OATH TOTP secrets of users whose method is oath-token (the RADIUS server checks their codes)
    Otp {
        #[command(subcommand)]
        cmd: OtpCmd,
    },
}

#[derive(Subcommand)]
enum OtpCmd {
    /// Give the user a new secret (replacing any): prints the otpauth:// URI and its QR code, once
    Enroll {
        /// The MFA user's username
        username: String,
    },
    /// Remove the user's secret
    Remove {
        /// The MFA user's username
        username: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Json,
    Csv,
}

#[derive(Subcommand)]
enum OutboxCmd {
    /// The emails, newest first, with their status and last error
    List {
        /// Only these: pending, sent or failed
        #[arg(long, value_parser = ["pending", "sent", "failed"])]
        status: Option<String>,
        /// How many, newest first
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Queue emails again (pending, due now, retried until email.give_up_after from now)
    #[command(group(clap::ArgGroup::new("which").required(true).args(["ids", "failed"])))]
    Retry {
        /// The emails' ids (outbox list)
        ids: Vec<i64>,
        /// Every email given up
        #[arg(long)]
        failed: bool,
    },
    /// Deliver the emails due now (for at most 30 seconds), without a sync
    Send,
}

#[derive(Subcommand)]
enum ApprovalsCmd {
    /// The pending approvals and the users each would disable or remove
    List,
    /// Apply the held changes that still hold against the directory now
    Approve {
        id: String,
        /// Only this held user (repeatable); the others stay pending
        #[arg(long = "user", value_name = "USERNAME")]
        users: Vec<String>,
    },
    /// Keep the users; the same set is not asked about again until the directory changes
    Reject {
        id: String,
        /// Only this held user (repeatable); the others stay pending
        #[arg(long = "user", value_name = "USERNAME")]
        users: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // (a password check is a short process: nothing to give back)
    if !matches!(cli.command, Command::Auth { .. }) {
        alloc::tune();
    }
    logging::init(cli.log_format);
    mfasync_engine::notify::install(Box::new(logging::Observer));
    // A password check is one short request: a single-threaded runtime starts
    // faster (no worker threads), which is most of what such a process costs.
    let mut builder = if matches!(cli.command, Command::Auth { .. }) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            logging::error(format_args!("cannot start the runtime: {e}"));
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Refused(msg)) => {
            logging::error(msg);
            ExitCode::from(1)
        }
        Err(Failure::Invalid(problems)) => {
            for p in problems {
                logging::error(p);
            }
            ExitCode::from(2)
        }
    }
}

/// Pretty JSON on stdout, written as it is serialized (a long plan is never
/// a string in memory).
fn print_json(v: &impl serde::Serialize) -> CmdResult {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    serde_json::to_writer_pretty(&mut out, v)
        .map_err(|e| Failure::Refused(e.to_string()))
        .and_then(|()| {
            writeln!(out)
                .and_then(|()| out.flush())
                .map_err(|e| Failure::Refused(e.to_string()))
        })
}

async fn open_store(url: &str) -> Result<Box<dyn mfasync_store::Store>, Failure> {
    database::open(url, false).await
}

/// The active configuration, parsed.
async fn active_config(store: &dyn mfasync_store::Store) -> Result<mfasync_core::Config, Failure> {
    let v = store
        .active_config()
        .await
        .map_err(|e| Failure::Refused(e.to_string()))?
        .ok_or_else(|| {
            Failure::Refused("no configuration yet: run `mfasync config apply FILE` first".into())
        })?;
    parse_stored_config(&v)
}

/// A stored configuration version, parsed and validated.
fn parse_stored_config(v: &mfasync_store::ConfigVersion) -> Result<mfasync_core::Config, Failure> {
    mfasync_core::config::parse(&v.toml).map_err(|errs| {
        Failure::Refused(format!(
            "stored configuration version {} is invalid: {}",
            v.version,
            errs.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ))
    })
}

async fn run(cli: Cli) -> CmdResult {
    database::set_connect_timeout(cli.connect_timeout);
    secrets::allow_dirs(&cli.secrets_dirs);
    match cli.command {
        Command::Config {
            cmd: ConfigCmd::Apply { file, dry_run },
        } => cli::config::apply(&cli.database, &file, dry_run, cli.json).await,
        Command::Config {
            cmd: ConfigCmd::Example { openldap },
        } => {
            print!(
                "{}",
                match openldap {
                    true => manual::EXAMPLE_OPENLDAP,
                    false => manual::EXAMPLE_AD,
                }
            );
            Ok(())
        }
        Command::Completions { shell } => {
            manual::completions(<Cli as clap::CommandFactory>::command(), shell);
            Ok(())
        }
        Command::Manpages { dir } => {
            let written = manual::manpages(<Cli as clap::CommandFactory>::command(), &dir)
                .map_err(Failure::Refused)?;
            for p in written {
                println!("{}", p.display());
            }
            Ok(())
        }
        Command::Config {
            cmd: ConfigCmd::Export,
        } => {
            let store = open_store(&cli.database).await?;
            let cfg = active_config(store.as_ref()).await?;
            print!("{}", cfg.to_toml_redacted());
            Ok(())
        }
        Command::Directory {
            cmd: DirectoryCmd::Test,
        } => cli::directory::test(&cli.database, cli.json).await,
        Command::Sync {
            user: Some(user),
            plan,
            ..
        } => cli::sync::run_user(&cli.database, &user, plan, cli.json).await,
        Command::Sync { full, plan, .. } => {
            cli::sync::run(&cli.database, full, plan, cli.json).await
        }
        Command::Users {
            cmd: UsersCmd::Explain { name },
        } => cli::explain::run(&cli.database, &name, cli.json).await,
        Command::Users {
            cmd:
                UsersCmd::Export {
                    format,
                    raw,
                    include_deleted,
                },
        } => cli::users::export(&cli.database, format, raw, include_deleted).await,
        Command::Users {
            cmd: UsersCmd::Deleted,
        } => cli::bin::list(&cli.database, cli.json).await,
        Command::Users {
            cmd: UsersCmd::Restore { name },
        } => cli::bin::restore(&cli.database, &name, cli.json).await,
        Command::Users {
            cmd: UsersCmd::Purge { name },
        } => cli::bin::purge(&cli.database, &name, cli.json).await,
        Command::Users {
            cmd: UsersCmd::Otp { cmd },
        } => match cmd {
            OtpCmd::Enroll { username } => {
                cli::users::otp_enroll(&cli.database, &username, cli.json).await
            }
            OtpCmd::Remove { username } => {
                cli::users::otp_remove(&cli.database, &username, cli.json).await
            }
        },
        Command::History { limit } => {
            let store = open_store(&cli.database).await?;
            cli::history::cli(store.as_ref(), limit, cli.json).await
        }
        Command::Approvals { cmd } => {
            let store: std::sync::Arc<dyn mfasync_store::Store> =
                open_store(&cli.database).await?.into();
            match cmd {
                ApprovalsCmd::List => {
                    // a stored configuration says when pending approvals expire
                    let cfg = active_config(store.as_ref()).await.ok();
                    cli::approvals::cli_list(store.as_ref(), cfg.as_ref(), cli.json).await
                }
                ApprovalsCmd::Approve { id, users } => {
                    let cfg = active_config(store.as_ref()).await?;
                    let lease = CliLease::take(store.as_ref(), "approve")
                        .await
                        .map_err(Failure::Refused)?;
                    let work =
                        cli::approvals::cli_approve(store.as_ref(), &cfg, &id, &users, cli.json);
                    let r = lease.hold(&store, work).await;
                    lease.release(store.as_ref()).await;
                    r
                }
                ApprovalsCmd::Reject { id, users } => {
                    let cfg = active_config(store.as_ref()).await?;
                    let lease = CliLease::take(store.as_ref(), "reject")
                        .await
                        .map_err(Failure::Refused)?;
                    let r = cli::approvals::cli_reject(store.as_ref(), &cfg, &id, &users, cli.json)
                        .await;
                    lease.release(store.as_ref()).await;
                    r
                }
            }
        }
        Command::Outbox { cmd } => {
            let store = open_store(&cli.database).await?;
            match cmd {
                OutboxCmd::List { status, limit } => {
                    let status = status
                        .as_deref()
                        .and_then(mfasync_store::OutboxStatus::parse);
                    cli::outbox::cli_list(store.as_ref(), status, limit, cli.json).await
                }
                OutboxCmd::Retry { ids, failed } => {
                    let target = match failed {
                        true => mfasync_store::RetryTarget::Failed,
                        false => mfasync_store::RetryTarget::Ids(ids),
                    };
                    cli::outbox::cli_retry(store.as_ref(), target, cli.json).await
                }
                OutboxCmd::Send => {
                    let cfg = active_config(store.as_ref()).await?;
                    // not while a server runs synchronization: it sends them
                    let lease = CliLease::take(store.as_ref(), "outbox send")
                        .await
                        .map_err(Failure::Refused)?;
                    let r = cli::outbox::cli_send(store.as_ref(), &cfg, cli.json).await;
                    lease.release(store.as_ref()).await;
                    r
                }
            }
        }
        Command::Audit { limit, cmd: None } => {
            let store = open_store(&cli.database).await?;
            cli::audit::cli_list(store.as_ref(), limit, cli.json).await
        }
        Command::Audit {
            cmd: Some(AuditCmd::Purge),
            ..
        } => {
            let store = open_store(&cli.database).await?;
            let cfg = active_config(store.as_ref()).await?;
            cli::retention::cli(store.as_ref(), &cfg, cli.json).await
        }
        Command::Auth {
            username,
            password_stdin,
        } => cli::auth::check(&cli.database, &username, password_stdin, cli.json).await,
        Command::Admin {
            cmd:
                AdminCmd::SetPassword {
                    username,
                    password_stdin,
                },
        } => cli::admins::set_password(&cli.database, &username, password_stdin, cli.json).await,
        Command::Admin {
            cmd: AdminCmd::Remove { username },
        } => {
            let store = open_store(&cli.database).await?;
            cli::admins::cli_remove(store.as_ref(), &username, cli.json).await
        }
        Command::Serve {
            listen,
            insecure_cookies,
            name,
            lease_seconds,
            trusted_proxies,
            auth_client_limit,
            header_timeout,
            idle_timeout,
            max_connections,
        } => {
            let name = name.unwrap_or_else(mfasync_engine::cluster::default_name);
            if name.trim().is_empty() {
                return Err(Failure::Invalid(vec!["--name must not be empty".into()]));
            }
            let store = open_store(&cli.database).await?;
            let node = mfasync_engine::node::Options {
                name,
                lease: std::time::Duration::from_secs(lease_seconds),
            };
            let limits = web::AuthLimits {
                trusted_proxies,
                client_max_failures: usize::try_from(auth_client_limit).unwrap_or(usize::MAX),
            };
            let http = http::Options {
                header_timeout: std::time::Duration::from_secs(header_timeout),
                idle_timeout: std::time::Duration::from_secs(idle_timeout),
                max_connections: max_connections.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            };
            serve::run(store, &listen, !insecure_cookies, node, limits, http)
                .await
                .map_err(Failure::from)
        }
        Command::Servers { cmd } => {
            let store = open_store(&cli.database).await?;
            cli::servers::cli(store.as_ref(), cmd, cli.json).await
        }
        Command::Db {
            cmd: DbCmd::Migrate { to, overwrite },
        } => cli::servers::cli_migrate(&cli.database, &to, overwrite, cli.json).await,
        Command::Db {
            cmd: DbCmd::Rekey { old_key_file },
        } => {
            let store = open_store(&cli.database).await?;
            cli::rekey::cli(store.as_ref(), old_key_file.as_deref(), cli.json).await
        }
    }
}
