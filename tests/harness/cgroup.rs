//! A small memory cgroup for a test: the OOM killer ends whatever runs in it
//! past its limit. Works on the unified hierarchy (cgroup v2) and on the v1
//! memory controller; removed on drop, after killing anything left in it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

pub struct MemoryCgroup {
    dir: PathBuf,
}

impl MemoryCgroup {
    /// Creates `/sys/fs/cgroup[/memory]/NAME` limited to `limit_mib` MiB of
    /// memory and no swap.
    pub fn new(name: &str, limit_mib: u64) -> MemoryCgroup {
        let limit = (limit_mib << 20).to_string();
        let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let dir = if v2 {
            PathBuf::from("/sys/fs/cgroup").join(name)
        } else {
            PathBuf::from("/sys/fs/cgroup/memory").join(name)
        };
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create cgroup {}: {e}", dir.display()));
        let cg = MemoryCgroup { dir };
        if v2 {
            cg.write("memory.max", &limit);
            cg.write_if_present("memory.swap.max", "0");
        } else {
            cg.write("memory.limit_in_bytes", &limit);
            cg.write_if_present("memory.memsw.limit_in_bytes", &limit);
            cg.write_if_present("memory.oom_control", "0");
        }
        cg
    }

    fn write(&self, file: &str, value: &str) {
        let path = self.dir.join(file);
        std::fs::write(&path, value)
            .unwrap_or_else(|e| panic!("cannot write {value} to {}: {e}", path.display()));
    }

    fn write_if_present(&self, file: &str, value: &str) {
        let path = self.dir.join(file);
        if path.exists() {
            let _ = std::fs::write(&path, value);
        }
    }

    /// Moves process `pid` into this cgroup. (A process inside a node cannot
    /// do it itself: `ip netns exec` mounts a sysfs of its own, without the
    /// cgroup hierarchy.) Memory it allocates from then on counts here.
    pub fn add(&self, pid: u32) {
        self.write("cgroup.procs", &pid.to_string());
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(pids) = std::fs::read_to_string(self.dir.join("cgroup.procs")) {
                for pid in pids.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            if Instant::now() > deadline {
                eprintln!("could not remove cgroup {}", self.dir.display());
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
