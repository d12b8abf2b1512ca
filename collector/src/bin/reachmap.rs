use reachmap_collector::cli::{Cli, run};
use std::io::Write;

fn main() -> std::process::ExitCode {
    let cli: Cli = reachmap_collector::cli::parse_args("reachmap");
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("reachmap: cannot start runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let gating = cli.command.gates();
    match runtime.block_on(run(cli)) {
        Ok(out) => {
            let mut stdout = std::io::stdout().lock();
            // A closed pipe (`| head`) is not an error worth a message.
            let _ = stdout.write_all(out.as_bytes());
            std::process::ExitCode::SUCCESS
        }
        Err(reachmap_collector::cli::CliError::WouldBreak(out)) => {
            let _ = std::io::stdout().lock().write_all(out.as_bytes());
            std::process::ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("reachmap: {e}");
            std::process::ExitCode::from(e.exit_code(gating))
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        reachmap_collector::cli::Cli::command().debug_assert();
    }
}
