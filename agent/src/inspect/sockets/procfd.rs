//! Which processes hold a socket: `/proc/PID/fd/N` links (`socket:[INODE]`),
//! with the process's name and systemd unit.
//!
//! Scanning every fd of every process is the expensive part, so results are
//! cached by inode and /proc is rescanned only when a socket shows up that
//! the cache has never seen.

use super::SocketError;
use crate::facts::sockets::Process;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// The inode of a `/proc/PID/fd/N` link target, when it is a socket.
pub fn parse_fd_link(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The cgroup path in the contents of `/proc/PID/cgroup`: the unified (v2)
/// hierarchy's, else systemd's v1 hierarchy's, else `None`.
pub fn cgroup_path(contents: &str) -> Option<&str> {
    let mut unified = None;
    let mut systemd = None;
    for line in contents.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            unified = Some(path);
        } else if controllers == "name=systemd" {
            systemd = Some(path);
        }
    }
    // On hybrid hosts the unified hierarchy exists but every process sits
    // in its root; systemd's v1 hierarchy then says more.
    match (unified, systemd) {
        (Some("/"), Some(s)) => Some(s),
        (Some(u), _) => Some(u),
        (None, s) => s,
    }
}

/// The systemd unit a cgroup path belongs to: the innermost `.service` or
/// `.scope` component (`/system.slice/nginx.service` -> `nginx.service`,
/// `/user.slice/user-1000.slice/session-3.scope` -> `session-3.scope`). Paths
/// of container runtimes without systemd get a best-effort name
/// (`/docker/<id>` -> `docker-<id>`, `/kubepods/burstable/pod<uid>/<id>` ->
/// `kubepods-pod<uid>`). A whole `/proc/PID/cgroup` line is accepted too.
pub fn unit_from_cgroup(path: &str) -> Option<String> {
    let path = path.trim_end();
    let path = path.strip_suffix(" (deleted)").unwrap_or(path);
    // "0::/x" or "1:name=systemd:/x": keep what follows the second colon.
    let path = match path.split_once(':') {
        Some((_, rest)) if !path.starts_with('/') => rest.split_once(':')?.1,
        _ => path,
    };
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if let Some(unit) = parts
        .iter()
        .rev()
        .find(|p| p.ends_with(".service") || p.ends_with(".scope"))
    {
        return Some((*unit).to_string());
    }
    if let Some(i) = parts.iter().position(|p| *p == "docker") {
        return parts.get(i + 1).map(|id| format!("docker-{id}"));
    }
    if parts.first().is_some_and(|p| p.starts_with("kubepods")) {
        // cgroupfs driver: /kubepods/<qos>/pod<uid>/<id>; systemd driver:
        // /kubepods.slice/.../kubepods-<qos>-pod<uid>.slice
        if let Some(pod) = parts.iter().find(|p| p.starts_with("pod")) {
            return Some(format!("kubepods-{pod}"));
        }
        return parts
            .iter()
            .rev()
            .find(|p| p.contains("-pod"))
            .map(|p| p.trim_end_matches(".slice").to_string());
    }
    None
}

/// Where a process holds a socket: `/proc/PID/fd/FD`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Holder {
    pid: u32,
    fd: u32,
}

/// The cache of socket owners, and the process facts of those owners.
pub struct Owners {
    procfs: PathBuf,
    /// Inode -> where it is held (sorted); empty when a scan found no one.
    inodes: HashMap<u64, Vec<Holder>>,
    processes: HashMap<u32, Process>,
    scans: u64,
}

impl Owners {
    pub fn new(procfs: PathBuf) -> Self {
        Self {
            procfs,
            inodes: HashMap::new(),
            processes: HashMap::new(),
            scans: 0,
        }
    }

    /// How many times /proc has been scanned.
    pub fn scans(&self) -> u64 {
        self.scans
    }

    /// Makes sure every inode in `wanted` is in the cache, scanning /proc
    /// once if any is not.
    pub fn resolve(&mut self, wanted: &[u64]) -> Result<(), SocketError> {
        let missing: HashSet<u64> = wanted
            .iter()
            .copied()
            .filter(|i| !self.inodes.contains_key(i))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        self.scans += 1;
        let found = scan_fds(&self.procfs, &missing)?;
        for inode in missing {
            self.inodes.insert(inode, Vec::new());
        }
        let mut pids = HashSet::new();
        for (inode, mut holders) in found {
            holders.sort_unstable();
            pids.extend(holders.iter().map(|h| h.pid));
            self.inodes.insert(inode, holders);
        }
        // Re-read even known pids: a scan is rare, and the process may have
        // exec'd since (new name).
        for pid in pids {
            match read_process(&self.procfs, pid) {
                Some(p) => self.processes.insert(pid, p),
                None => self.processes.remove(&pid),
            };
        }
        Ok(())
    }

    /// The processes holding `inode`, sorted by pid, each once.
    pub fn processes_of(&self, inode: u64) -> Vec<Process> {
        let mut out: Vec<Process> = self
            .inodes
            .get(&inode)
            .into_iter()
            .flatten()
            .filter_map(|h| self.processes.get(&h.pid).cloned())
            .collect();
        out.dedup_by_key(|p| p.pid);
        out
    }

    /// Forgets inodes not in `live`, and processes no remaining inode names.
    pub fn retain(&mut self, live: &HashSet<u64>) {
        self.inodes.retain(|inode, _| live.contains(inode));
        let used: HashSet<u32> = self.inodes.values().flatten().map(|h| h.pid).collect();
        self.processes.retain(|pid, _| used.contains(pid));
    }

    /// Checks every cached holder with one readlink: when a process exited,
    /// closed the socket or exec'd without it (a forked child), the inode is
    /// forgotten so the next `resolve` finds who holds it now.
    pub fn revalidate(&mut self) {
        let procfs = &self.procfs;
        let mut stale = HashSet::new();
        self.inodes.retain(|&inode, holders| {
            let ok = holders.iter().all(|h| {
                let link = procfs.join(format!("{}/fd/{}", h.pid, h.fd));
                std::fs::read_link(link)
                    .ok()
                    .and_then(|t| t.to_str().and_then(parse_fd_link))
                    == Some(inode)
            });
            if !ok {
                stale.extend(holders.iter().map(|h| h.pid));
            }
            ok
        });
        self.processes.retain(|pid, _| !stale.contains(pid));
    }
}

/// Walks `/proc/*/fd` and returns, for each inode of `wanted` that some
/// process holds, where it is held. Processes that vanish or deny access
/// mid-scan are skipped; only an unreadable `procfs` itself is an error.
fn scan_fds(
    procfs: &Path,
    wanted: &HashSet<u64>,
) -> Result<HashMap<u64, Vec<Holder>>, SocketError> {
    let mut found: HashMap<u64, Vec<Holder>> = HashMap::new();
    let entries = std::fs::read_dir(procfs).map_err(|source| SocketError::Proc {
        path: procfs.to_path_buf(),
        source,
    })?;
    for entry in entries.flatten() {
        let Some(pid) = number(&entry.file_name()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd_entry in fds.flatten() {
            let Some(fd) = number(&fd_entry.file_name()) else {
                continue;
            };
            let Ok(target) = std::fs::read_link(fd_entry.path()) else {
                continue;
            };
            if let Some(inode) = target.to_str().and_then(parse_fd_link)
                && wanted.contains(&inode)
            {
                found.entry(inode).or_default().push(Holder { pid, fd });
            }
        }
    }
    Ok(found)
}

fn number(name: &std::ffi::OsStr) -> Option<u32> {
    name.to_str()?.parse().ok()
}

/// Name, unit and cgroup of a process; `None` when it has already exited.
fn read_process(procfs: &Path, pid: u32) -> Option<Process> {
    let dir = procfs.join(pid.to_string());
    let name = std::fs::read_to_string(dir.join("comm")).ok()?;
    let cgroup = std::fs::read_to_string(dir.join("cgroup"))
        .ok()
        .and_then(|c| cgroup_path(&c).map(str::to_string));
    Some(Process {
        pid,
        name: name.trim_end_matches('\n').to_string(),
        unit: cgroup.as_deref().and_then(unit_from_cgroup),
        cgroup,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_from_cgroup_paths() {
        let cases = [
            ("/system.slice/nginx.service", Some("nginx.service")),
            ("0::/system.slice/nginx.service", Some("nginx.service")),
            (
                "1:name=systemd:/system.slice/sshd.service",
                Some("sshd.service"),
            ),
            ("/system.slice/nginx.service/worker", Some("nginx.service")),
            (
                "/user.slice/user-1000.slice/session-3.scope",
                Some("session-3.scope"),
            ),
            (
                "/user.slice/user-1000.slice/user@1000.service/app.slice/app-foo-42.scope",
                Some("app-foo-42.scope"),
            ),
            (
                "/system.slice/docker-0123abcd.scope",
                Some("docker-0123abcd.scope"),
            ),
            ("/docker/0123abcd", Some("docker-0123abcd")),
            (
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1a2b.slice/cri-containerd-99ff.scope",
                Some("cri-containerd-99ff.scope"),
            ),
            (
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1a2b.slice",
                Some("kubepods-besteffort-pod1a2b"),
            ),
            ("/kubepods/burstable/pod1a2b/99ff", Some("kubepods-pod1a2b")),
            ("/system.slice/cron.service (deleted)", Some("cron.service")),
            ("/init.scope", Some("init.scope")),
            ("/", None),
            ("/user.slice", None),
            ("/process_api/b7c4bbd0a7303e1673477726b5c92daf", None),
            ("", None),
            ("garbage", None),
            ("0:", None),
        ];
        for (path, want) in cases {
            assert_eq!(unit_from_cgroup(path).as_deref(), want, "{path}");
        }
    }

    #[test]
    fn cgroup_path_prefers_unified_then_systemd() {
        // This machine's /proc/self/cgroup: hybrid, every process in the v2 root.
        let hybrid = "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/b7c4\n0::/\n";
        assert_eq!(cgroup_path(hybrid), Some("/"));
        let hybrid_unit = "1:name=systemd:/system.slice/a.service\n0::/\n";
        assert_eq!(cgroup_path(hybrid_unit), Some("/system.slice/a.service"));
        assert_eq!(
            cgroup_path("0::/system.slice/b.service\n"),
            Some("/system.slice/b.service")
        );
        assert_eq!(cgroup_path("4:memory:/x\n"), None);
        assert_eq!(cgroup_path(""), None);
        assert_eq!(cgroup_path("::::\n0\n"), None);
    }
}
