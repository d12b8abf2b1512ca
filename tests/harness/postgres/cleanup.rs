//! Cleaning up after servers: killing a postmaster and its children,
//! clearing the lock files a killed one leaves, and sweeping the directories
//! (and servers) of test processes that died.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{DIR_PREFIX, PG_SYSTEM_USER, STARTUP};
use crate::patient;
use crate::process::output_with_timeout;

static SWEEP: Mutex<()> = Mutex::new(());

/// The system temporary directory when the postgres user can reach it and
/// the socket path stays short, else /tmp.
pub(super) fn base_dir() -> PathBuf {
    let tmp = std::env::temp_dir();
    let reachable = tmp
        .ancestors()
        .all(|dir| std::fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o001 != 0));
    if reachable && tmp.as_os_str().len() <= 40 {
        tmp
    } else {
        PathBuf::from("/tmp")
    }
}

/// Stops the servers of, and removes, directories left by test processes
/// that are gone. Directories of live processes are left alone.
pub(super) fn sweep_stale(base: &Path, bin: &Path) {
    let _guard = SWEEP
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(owner) = stale_owner(&name) else {
            continue;
        };
        if Path::new("/proc").join(owner.to_string()).exists() {
            continue;
        }
        let dir = entry.path();
        let pid = std::fs::read_to_string(dir.join("data/postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next()?.trim().parse::<i32>().ok())
            .filter(|pid| is_postgres(*pid));
        if let Some(pid) = pid {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", PG_SYSTEM_USER, "--"])
                .arg(bin.join("pg_ctl"))
                .arg("stop")
                .arg("-D")
                .arg(dir.join("data"))
                .args(["-m", "immediate", "-w"])
                .current_dir(&dir);
            let _ = output_with_timeout(cmd, patient(STARTUP));
            if is_postgres(pid) && kill_server(pid) {
                remove_dead_lock(&dir.join("data"), &dir.join("sock"));
            }
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => eprintln!("harness: removed stale PostgreSQL dir {}", dir.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => eprintln!("harness: cannot remove {}: {e}", dir.display()),
        }
    }
}

/// After a kill: removes `postmaster.pid`, the shared memory segment it
/// names and the socket's lock file. Where nothing reaps orphans (some
/// containers' init), the killed postmaster stays a zombie whose pid, in
/// either lock file, the next start would take for a running server.
pub(super) fn remove_dead_lock(data: &Path, socket_dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(socket_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".s.PGSQL.") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    let lock = data.join("postmaster.pid");
    let Ok(text) = std::fs::read_to_string(&lock) else {
        return;
    };
    // Line 7: "<shm key> <shm id>"; the segment outlives a killed server.
    let shmid = text
        .lines()
        .nth(6)
        .and_then(|line| line.split_whitespace().nth(1))
        .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()));
    if let Some(id) = shmid {
        let mut cmd = Command::new("ipcrm");
        cmd.args(["-m", id]);
        let _ = output_with_timeout(cmd, Duration::from_secs(10));
    }
    if let Err(e) = std::fs::remove_file(&lock)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        panic!("cannot remove {}: {e}", lock.display());
    }
}

/// The pid in a directory name `rmt-pg-<pid>-XXXXXX`, if it is one of ours.
fn stale_owner(name: &str) -> Option<u32> {
    let (pid, rest) = name.strip_prefix(DIR_PREFIX)?.split_once('-')?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) || rest.is_empty() {
        return None;
    }
    pid.parse().ok()
}

/// Whether `pid` is a live (not zombie) process named `postgres`.
pub(super) fn is_postgres(pid: i32) -> bool {
    matches!(proc_stat(pid), Some((comm, state, _)) if comm == "postgres" && state != 'Z')
}

/// `(comm, state, ppid)` from /proc/PID/stat.
fn proc_stat(pid: i32) -> Option<(String, char, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let mut rest = text.get(close + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((comm, state, ppid))
}

/// Children of `parent`, from /proc.
fn children(parent: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| matches!(proc_stat(*pid), Some((_, _, ppid)) if ppid == parent))
        .collect()
}

/// SIGKILLs the postmaster and its children (stopped first, so it cannot
/// start new ones meanwhile) and waits up to 10 s for all of them to be
/// gone. Returns whether they are.
pub(super) fn kill_server(postmaster: i32) -> bool {
    let _ = kill(Pid::from_raw(postmaster), Signal::SIGSTOP);
    let mut pids = children(postmaster);
    pids.insert(0, postmaster);
    for pid in &pids {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let alive = pids
            .iter()
            .any(|pid| matches!(proc_stat(*pid), Some((_, state, _)) if state != 'Z'));
        if !alive {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_owner_parses_only_our_names() {
        assert_eq!(stale_owner("rmt-pg-123-AbC9xy"), Some(123));
        for name in [
            "rmt-pg--x",
            "rmt-pg-12",
            "rmt-pg-1x-a",
            "rmt-123-pg-a",
            "pg-1-a",
        ] {
            assert_eq!(stale_owner(name), None, "{name}");
        }
    }

    #[test]
    fn proc_stat_reads_this_process() {
        let me = i32::try_from(std::process::id()).expect("pid");
        let (_, state, ppid) = proc_stat(me).expect("own /proc stat");
        assert_ne!(state, 'Z');
        assert!(ppid >= 0);
    }
}
