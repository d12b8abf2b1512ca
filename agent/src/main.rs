use clap::Parser;
use reachmap_agent::config::{Config, Flags};
use tokio_util::sync::CancellationToken;

/// reachmap agent: watches this host's network facts and streams them to the
/// reachmap collector.
#[derive(Parser, Debug)]
#[command(name = "reachmap-agent", version)]
struct Cli {
    #[command(flatten)]
    flags: Flags,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Print everything the agent sees on this host once, and exit (no collector needed)
    Snapshot {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Format {
    Text,
    Json,
}

fn snapshot(flags: &Flags, format: Format) -> std::process::ExitCode {
    let Some(runtime) = runtime(&mut tokio::runtime::Builder::new_current_thread()) else {
        return std::process::ExitCode::FAILURE;
    };
    let defaults = reachmap_agent::oneshot::Paths::default();
    let paths = reachmap_agent::oneshot::Paths {
        procfs: flags.procfs.clone().unwrap_or(defaults.procfs),
        kmsg: flags.kmsg.clone().unwrap_or(defaults.kmsg),
        rootfs: flags.rootfs.clone().unwrap_or(defaults.rootfs),
        etc: defaults.etc,
    };
    match runtime.block_on(reachmap_agent::oneshot::read(&paths)) {
        Ok(s) => {
            let out = match format {
                Format::Json => reachmap_agent::oneshot::json(&s),
                Format::Text => reachmap_agent::oneshot::text(&s),
            };
            let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("reachmap-agent: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn main() -> std::process::ExitCode {
    let large_blocks_returned = reachmap_agent::alloc::return_large_blocks();
    let cli: Cli = reachmap_agent::config::parse_args("reachmap-agent");
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("REACHMAP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    tracing::debug!(large_blocks_returned, "malloc mmap threshold fixed");
    if let Some(Command::Snapshot { format }) = cli.command {
        return snapshot(&cli.flags, format);
    }
    let config = match Config::load(&cli.flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("reachmap-agent: {e}");
            // EX_CONFIG
            return std::process::ExitCode::from(78);
        }
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(2);
    let Some(runtime) = runtime(&mut builder) else {
        return std::process::ExitCode::FAILURE;
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(signals(shutdown.clone()));
        reachmap_agent::run(config, shutdown).await
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("reachmap-agent: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Builds the runtime, or says why it could not on stderr.
fn runtime(builder: &mut tokio::runtime::Builder) -> Option<tokio::runtime::Runtime> {
    builder
        .enable_all()
        .build()
        .map_err(|e| eprintln!("reachmap-agent: cannot start runtime: {e}"))
        .ok()
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
