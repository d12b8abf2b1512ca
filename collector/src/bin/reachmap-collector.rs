use clap::Parser;
use reachmap_collector::config::{Config, Flags};
use tokio_util::sync::CancellationToken;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// reachmap collector: keeps the fleet's state from every agent's stream and
/// answers the reachmap CLI.
#[derive(Parser, Debug)]
#[command(name = "reachmap-collector", version)]
struct Cli {
    #[command(flatten)]
    flags: Flags,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// The collector's certificate authority
    Ca {
        #[command(subcommand)]
        what: CaCommand,
    },
    /// Bootstrap and API tokens, made on the collector's host without credentials (running or not; it reads them)
    Token {
        #[command(subcommand)]
        what: TokenCommand,
    },
    /// Issue a query client's certificate: writes a bundle (certificate, key, CA) the reachmap CLI reads with --credentials
    IssueClient {
        /// The client's name, as the collector logs it
        name: String,
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Where to write the bundle (0600) [default: standard output]
        #[arg(short, long, value_name = "FILE")]
        out: Option<std::path::PathBuf>,
        #[arg(long, default_value = "365d", value_name = "DURATION")]
        lifetime: humantime::Duration,
    },
}

#[derive(clap::Subcommand, Debug)]
enum TokenCommand {
    /// Make a token and print it
    Create {
        /// How long it is valid [default: 1h for enrolment, 30d for API tokens]
        #[arg(long, value_name = "DURATION")]
        ttl: Option<humantime::Duration>,
        /// Enrolment: how many nodes may use it
        #[arg(long, default_value_t = 1, value_name = "N")]
        uses: u32,
        /// Enrolment: the only node name it may enrol
        #[arg(long, value_name = "NAME")]
        node: Option<String>,
        /// An API token with this role instead of an enrolment token
        #[arg(long, value_enum)]
        role: Option<RoleArg>,
        #[arg(long, default_value = "", value_name = "TEXT")]
        description: String,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum RoleArg {
    Viewer,
    Operator,
}

#[derive(clap::Subcommand, Debug)]
enum CaCommand {
    /// Print the pin agents are given (`sha256:` of the CA's public key)
    Pin,
    /// Make the CA and the server certificate now (as the first start would) and print the pin
    Init,
}

fn main() -> std::process::ExitCode {
    let cli: Cli = reachmap_collector::cli::parse_args("reachmap-collector");
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("REACHMAP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = match Config::load(&cli.flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("reachmap-collector: {e}");
            return std::process::ExitCode::from(78);
        }
    };
    match cli.command {
        Some(Command::Ca {
            what: CaCommand::Pin,
        }) => {
            return match reachmap_collector::trust::read_pin(&config.data_dir) {
                Ok(pin) => {
                    println!("{pin}");
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("reachmap-collector: {e}");
                    std::process::ExitCode::FAILURE
                }
            };
        }
        Some(Command::Ca {
            what: CaCommand::Init,
        }) => {
            return match reachmap_collector::load_authority(&config) {
                Ok((a, _)) => {
                    println!("{}", a.pin);
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("reachmap-collector: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            };
        }
        Some(Command::Token {
            what:
                TokenCommand::Create {
                    ttl,
                    uses,
                    node,
                    role,
                    description,
                },
        }) => {
            use reachmap_collector::trust::TokenKind;
            let kind = match role {
                None => TokenKind::Enroll,
                Some(RoleArg::Viewer) => TokenKind::Viewer,
                Some(RoleArg::Operator) => TokenKind::Operator,
            };
            return match reachmap_collector::trust::Trust::create_token_offline(
                &config.data_dir,
                &config.store_at,
                kind,
                ttl.map(Into::into),
                uses,
                node,
                description,
            ) {
                Ok((token, _)) => {
                    println!("{token}");
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("reachmap-collector: {e}");
                    std::process::ExitCode::FAILURE
                }
            };
        }
        Some(Command::IssueClient {
            name,
            role,
            out,
            lifetime,
        }) => {
            let role = match role {
                RoleArg::Viewer => reachmap_tls::Role::Viewer,
                RoleArg::Operator => reachmap_tls::Role::Operator,
            };
            return match issue_client(&config, &name, role, out.as_deref(), lifetime.into()) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("reachmap-collector: {e}");
                    std::process::ExitCode::FAILURE
                }
            };
        }
        None => {}
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("reachmap-collector: cannot start runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(signals(shutdown.clone()));
        reachmap_collector::run(config, shutdown).await
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("reachmap-collector: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn issue_client(
    config: &Config,
    name: &str,
    role: reachmap_tls::Role,
    out: Option<&std::path::Path>,
    lifetime: std::time::Duration,
) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    reachmap_proto::check_node_name(name).map_err(|e| e.replace("node name", "client name"))?;
    let own = config
        .own_ca
        .as_ref()
        .map(|(c, k)| (c.as_path(), k.as_path()));
    let ca = reachmap_collector::trust::Authority::existing_ca(&config.data_dir, own)
        .map_err(|e| e.to_string())?;
    let (issued, key_pem) = ca
        .issue_client(name, role, lifetime)
        .map_err(|e| e.to_string())?;
    reachmap_collector::trust::Trust::record_client_offline(
        &config.data_dir,
        &config.store_at,
        name,
        role,
        &issued,
    )
    .map_err(|e| format!("issued, but cannot record it for `reachmap client revoke`: {e}"))?;
    let bundle = format!(
        "{}{}{}",
        reachmap_tls::pem::cert_pem(&issued.der),
        key_pem,
        ca.ca_cert_pem
    );
    match out {
        None => print!("{bundle}"),
        Some(path) => {
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(path)
                .and_then(|mut f| f.write_all(bundle.as_bytes()))
                .map_err(|e| format!("{}: {e}", path.display()))?;
            eprintln!(
                "wrote {} ({role} {name}, serial {}); use it with reachmap --credentials {}",
                path.display(),
                issued.serial,
                path.display()
            );
        }
    }
    Ok(())
}

async fn signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    shutdown.cancel();
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
