//! The collector under test: where it is, or one started and stopped for the run.

use crate::Args;
use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub fn loopback_host(url: &str) -> anyhow::Result<()> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .with_context(|| {
            format!("{url:?} is not an https:// (or, with --insecure, http://) URL")
        })?;
    let hostport = rest.split('/').next().unwrap_or_default();
    let addr: SocketAddr = hostport.parse().with_context(|| {
        format!("{url:?}: the collector must be given as http://127.x.y.z:PORT")
    })?;
    if !addr.ip().is_loopback() {
        bail!("{url:?} is not a loopback address: the load generator only talks to 127.0.0.0/8");
    }
    Ok(())
}

/// The reachmap-collector whose command line names `port`.
pub fn find_collector(port: u16) -> Option<u32> {
    let needle = format!(":{port}");
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args
            .first()
            .is_some_and(|a| a.ends_with("reachmap-collector"))
            && args.iter().any(|a| a.ends_with(&needle))
        {
            found.push(pid);
        }
    }
    (found.len() == 1).then(|| found[0])
}

pub fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

pub struct Spawned {
    pub child: std::process::Child,
    pub dir: PathBuf,
    command: Vec<std::ffi::OsString>,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        // SIGTERM first (a clean shutdown), then SIGKILL.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(8);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn spawn_collector(args: &Args, bin: &PathBuf, grpc: SocketAddr) -> anyhow::Result<Spawned> {
    let dir = std::env::temp_dir().join(format!("reachmap-loadgen-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut command: Vec<std::ffi::OsString> = vec![
        bin.into(),
        "--listen".into(),
        grpc.to_string().into(),
        "--http".into(),
        args.http.to_string().into(),
        "--data-dir".into(),
        dir.join("data").into(),
        "--probe-interval".into(),
        args.probe_interval.to_string().into(),
    ];
    if args.zones == 0 {
        command.push("--full-mesh-max".into());
        command.push(args.agents.max(1).to_string().into());
    }
    if args.insecure {
        command.push("--insecure".into());
    }
    command.extend(args.collector_arg.iter().map(Into::into));
    let child = start(&command, &dir)?;
    Ok(Spawned {
        child,
        dir,
        command,
    })
}

fn start(
    command: &[std::ffi::OsString],
    dir: &std::path::Path,
) -> anyhow::Result<std::process::Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("collector.log"))?;
    let (bin, rest) = command.split_first().context("empty command")?;
    std::process::Command::new(bin)
        .args(rest)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", bin.to_string_lossy()))
}

impl Spawned {
    /// SIGKILL, then the same collector on the same data directory.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = start(&self.command, &self.dir)?;
        Ok(())
    }
}
