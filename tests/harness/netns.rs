//! Network namespace naming, creation, deletion and the sweep of leftovers.
//!
//! Every namespace the harness creates is named `rmt-<pid>-<tag>-<suffix>`,
//! where `<pid>` is the test process. A namespace under that prefix whose pid no
//! longer runs was left behind by a crashed run and may be removed; nothing
//! outside the prefix is ever touched.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Prefix of every namespace the harness creates.
pub const PREFIX: &str = "rmt-";

/// Longest sanitised test tag kept in a namespace name.
const MAX_TAG: usize = 24;

static SEQ: AtomicUsize = AtomicUsize::new(0);
static SWEEP: Mutex<()> = Mutex::new(());

/// Reduces a test name to `[a-z0-9-]`, at most 24 characters, never empty.
pub fn sanitise_tag(test_name: &str) -> String {
    let mut tag = String::new();
    for c in test_name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            tag.push(c);
        } else if !tag.ends_with('-') && !tag.is_empty() {
            tag.push('-');
        }
    }
    tag.truncate(MAX_TAG);
    let tag = tag.trim_matches('-');
    if tag.is_empty() {
        "t".to_string()
    } else {
        tag.to_string()
    }
}

/// A fresh name prefix for one fleet: `rmt-<pid>-<tag>-<seq>`, unique within
/// this process (the sequence number) and across processes (the pid).
pub fn fleet_prefix(test_name: &str) -> String {
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    format!(
        "{PREFIX}{}-{}-{seq}",
        std::process::id(),
        sanitise_tag(test_name)
    )
}

/// The pid a harness namespace name was created by, if the name is one of ours.
pub fn owner_pid(name: &str) -> Option<i32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, tail) = rest.split_once('-')?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) || tail.is_empty() {
        return None;
    }
    pid.parse().ok()
}

/// Runs a command and panics, showing its output, unless it succeeds.
pub fn run(args: &[&str]) -> Output {
    let out = run_unchecked(args);
    if !out.status.success() {
        panic!("command failed: {}\n{}", args.join(" "), describe(&out));
    }
    out
}

/// Runs a command and returns its output whatever the exit status. Panics only
/// when the program cannot be started at all.
pub fn run_unchecked(args: &[&str]) -> Output {
    let (program, rest) = args.split_first().expect("run: empty command line");
    Command::new(program)
        .args(rest)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", args.join(" ")))
}

/// Exit status, stdout and stderr of a finished command, for failure messages.
pub fn describe(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Names of all network namespaces on the machine.
pub fn list() -> Vec<String> {
    let out = run(&["ip", "netns", "list"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Whether a network namespace with this name exists.
pub fn exists(name: &str) -> bool {
    list().iter().any(|n| n == name)
}

/// Creates a network namespace.
pub fn add(name: &str) {
    run(&["ip", "netns", "add", name]);
}

/// Pids of the processes running inside a namespace.
pub fn pids(name: &str) -> Vec<i32> {
    let out = run_unchecked(&["ip", "netns", "pids", name]);
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Kills (SIGKILL) every process still inside the namespace, then deletes it.
/// Returns an error description if the namespace is still there afterwards.
pub fn delete(name: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stray = pids(name);
        if stray.is_empty() {
            break;
        }
        for pid in &stray {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = run_unchecked(&["ip", "netns", "del", name]);
    if exists(name) {
        return Err(format!(
            "namespace {name} survived deletion\n{}",
            describe(&out)
        ));
    }
    // Files `ip netns exec` mounts over /etc in the namespace (see
    // `Fleet::etc_file`); `ip netns del` leaves them.
    let etc = etc_dir(name);
    if etc.exists() {
        std::fs::remove_dir_all(&etc)
            .map_err(|e| format!("cannot remove {}: {e}", etc.display()))?;
    }
    Ok(())
}

/// `/etc/netns/NAME`: `ip netns exec NAME` bind-mounts each file in it over
/// the same file in /etc, for the processes it starts.
pub fn etc_dir(name: &str) -> std::path::PathBuf {
    Path::new("/etc/netns").join(name)
}

/// Removes namespaces left by earlier runs of the harness whose process is
/// gone. Namespaces of live processes (including this one) are left alone.
pub fn sweep_stale() {
    // One sweep at a time: parallel tests would otherwise race for the same
    // leftovers.
    let _guard = SWEEP
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for name in list() {
        let Some(pid) = owner_pid(&name) else {
            continue;
        };
        if Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        match delete(&name) {
            Ok(()) => eprintln!("harness: removed stale namespace {name}"),
            Err(e) => eprintln!("harness: could not remove stale namespace: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_sanitised() {
        assert_eq!(
            sanitise_tag("fleet::three_nodes_appear"),
            "fleet-three-nodes-appear"
        );
        assert_eq!(sanitise_tag("::Weird Name!!"), "weird-name");
        assert_eq!(sanitise_tag("ö/ä"), "t");
        assert!(sanitise_tag(&"x".repeat(500)).len() <= MAX_TAG);
        assert!(!sanitise_tag("abcdefghijklmnopqrstuvw_yz").ends_with('-'));
    }

    #[test]
    fn prefixes_are_unique_and_owned() {
        let a = fleet_prefix("same");
        let b = fleet_prefix("same");
        assert_ne!(a, b);
        assert_eq!(
            owner_pid(&format!("{a}-hub")),
            Some(std::process::id() as i32)
        );
    }

    #[test]
    fn foreign_names_are_not_ours() {
        for name in [
            "rmdemo-1-hub",
            "rmt-x-hub",
            "rmt--hub",
            "rmt-12",
            "netns0",
            "rmtest-1-a",
        ] {
            assert_eq!(owner_pid(name), None, "{name}");
        }
        assert_eq!(owner_pid("rmt-12-a-0-n1"), Some(12));
    }
}
