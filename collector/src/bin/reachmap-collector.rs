use clap::Parser;
use reachmap_collector::config::{Config, Flags};
use tokio_util::sync::CancellationToken;

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
}

#[derive(clap::Subcommand, Debug)]
enum CaCommand {
    /// Print the pin agents are given (`sha256:` of the CA's public key)
    Pin,
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
    if let Some(Command::Ca {
        what: CaCommand::Pin,
    }) = cli.command
    {
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
