//! Long-running processes started inside a namespace, with their output in a
//! log file and a guaranteed stop.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long a process gets to exit after SIGTERM before it is sent SIGKILL.
pub const GRACE: Duration = Duration::from_secs(5);

/// A process started with `ip netns exec NS PROGRAM ARGS...`. `ip netns exec`
/// replaces itself with the program, so the child's pid is the program's pid
/// and signals reach it directly.
pub struct Proc {
    label: String,
    child: Child,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Starts `program args` inside `netns`, appending stdout and stderr to
    /// `log` (the file is created if needed and a header line marks the start).
    ///
    /// The child gets this process's environment without any `REACHMAP_*`
    /// variable, plus `env`.
    pub fn spawn(
        label: &str,
        netns: &str,
        program: &Path,
        args: &[&str],
        env: &[(&str, PathBuf)],
        log: &Path,
    ) -> Proc {
        let mut file = open_log(log);
        let cmdline = format!("{} {}", program.display(), args.join(" "));
        writeln!(file, "==== harness: starting in {netns}: {cmdline}")
            .expect("cannot write to process log");
        let stderr = file.try_clone().expect("cannot clone log file handle");
        let mut cmd = Command::new("ip");
        scrub_env(&mut cmd);
        let child = cmd
            .envs(env.iter().map(|(k, v)| (*k, v)))
            .args(["netns", "exec", netns])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {label} ({cmdline}): {e}"));
        Proc {
            label: label.to_string(),
            child,
            status: None,
        }
    }

    /// The name the harness gave this process (e.g. `collector`, `agent node-1`).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The process id (valid until the process has been waited for).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the process has exited (reaping it), else `None`.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .unwrap_or_else(|e| panic!("waiting for {}: {e}", self.label));
        }
        self.status
    }

    /// Sends a signal unless the process has already been reaped (its pid may
    /// then belong to someone else).
    pub fn signal(&mut self, sig: Signal) {
        if self.try_status().is_some() {
            return;
        }
        let pid = i32::try_from(self.child.id()).expect("pid out of range");
        // ESRCH just means the process exited between the check and the kill.
        let _ = kill(Pid::from_raw(pid), sig);
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL; returns the exit status.
    pub fn terminate(&mut self, grace: Duration) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        if let Some(status) = self.wait_timeout(grace) {
            return status;
        }
        eprintln!(
            "harness: {} did not exit within {:.1}s of SIGTERM; sending SIGKILL",
            self.label,
            grace.as_secs_f64()
        );
        self.kill()
    }

    /// SIGKILL and wait; returns the exit status.
    pub fn kill(&mut self) -> ExitStatus {
        if let Some(status) = self.try_status() {
            return status;
        }
        self.signal(Signal::SIGKILL);
        let status = self
            .child
            .wait()
            .unwrap_or_else(|e| panic!("waiting for {}: {e}", self.label));
        self.status = Some(status);
        status
    }
}

/// Removes every `REACHMAP_*` variable from the command's environment, so a
/// developer's shell (or an installed agent's settings) cannot leak into the
/// processes under test.
pub fn scrub_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("REACHMAP_") {
            cmd.env_remove(key);
        }
    }
}

fn open_log(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open log {}: {e}", path.display()))
}

/// The last `lines` lines of a log file (or a note why it cannot be read).
pub fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Err(e) => format!("(cannot read {}: {e})\n", path.display()),
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            let mut out = String::new();
            if start > 0 {
                out.push_str(&format!("... ({start} earlier lines)\n"));
            }
            for line in &all[start..] {
                out.push_str(line);
                out.push('\n');
            }
            out
        }
    }
}

/// Log file path for a process label inside the fleet directory.
pub fn log_path(dir: &Path, label: &str) -> PathBuf {
    let file: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    dir.join(format!("{file}.log"))
}

/// Runs `cmd` to completion with captured output, killing it (SIGKILL) if it
/// runs longer than `timeout`; a note about the timeout is appended to stderr.
pub fn output_with_timeout(mut cmd: Command, timeout: Duration) -> Output {
    let what = format!("{cmd:?}");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let pid = i32::try_from(child.id()).expect("pid out of range");
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let (result, timed_out) = match rx.recv_timeout(timeout) {
        Ok(result) => (result, false),
        Err(_) => {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            (rx.recv().expect("output waiter thread vanished"), true)
        }
    };
    let _ = waiter.join();
    let mut out = result.unwrap_or_else(|e| panic!("waiting for {what}: {e}"));
    if timed_out {
        let note = format!(
            "\nharness: killed after {:.1}s timeout: {what}\n",
            timeout.as_secs_f64()
        );
        out.stderr.extend_from_slice(note.as_bytes());
    }
    out
}
