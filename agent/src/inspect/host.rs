//! Host identity and basics: machine-id, boot-id, hostname, uptime, kernel.

use crate::facts::HostInfo;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {what}")]
    Malformed { path: PathBuf, what: String },
}

/// Who this host is, as sent in Hello.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub machine_id: String,
    pub boot_id: String,
}

/// `/proc/sys/kernel/random/boot_id`: a UUID, new at every boot.
pub fn parse_boot_id(text: &str) -> Result<String, String> {
    let id = text.trim();
    let valid = id.len() == 36
        && id.chars().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        });
    if valid {
        Ok(id.to_ascii_lowercase())
    } else {
        Err(format!("not a boot id: {id:?}"))
    }
}

/// `/etc/machine-id`: 32 lower-case hex digits.
pub fn parse_machine_id(text: &str) -> Result<String, String> {
    let id = text.trim();
    if id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(id.to_ascii_lowercase())
    } else {
        Err(format!("not a machine id: {id:?}"))
    }
}

/// `/proc/uptime`: "seconds-up seconds-idle".
pub fn parse_uptime(text: &str) -> Result<f64, String> {
    let first = text.split_whitespace().next().ok_or("empty")?;
    let secs: f64 = first
        .parse()
        .map_err(|_| format!("not a number: {first:?}"))?;
    if secs.is_finite() && secs >= 0.0 {
        Ok(secs)
    } else {
        Err(format!("out of range: {first:?}"))
    }
}

fn read(path: &Path) -> Result<String, HostError> {
    std::fs::read_to_string(path).map_err(|error| HostError::Read {
        path: path.to_owned(),
        error,
    })
}

fn malformed(path: &Path, what: String) -> HostError {
    HostError::Malformed {
        path: path.to_owned(),
        what,
    }
}

pub fn read_boot_id(procfs: &Path) -> Result<String, HostError> {
    let path = procfs.join("sys/kernel/random/boot_id");
    parse_boot_id(&read(&path)?).map_err(|w| malformed(&path, w))
}

/// The machine id from `/etc/machine-id` (or D-Bus's copy). A host without
/// one still runs an agent; the collector keys nodes by name.
pub fn read_machine_id(etc: &Path) -> String {
    for path in [
        etc.join("machine-id"),
        PathBuf::from("/var/lib/dbus/machine-id"),
    ] {
        if let Ok(text) = std::fs::read_to_string(&path) {
            match parse_machine_id(&text) {
                Ok(id) => return id,
                Err(w) => tracing::warn!(path = %path.display(), "{w}"),
            }
        }
    }
    String::new()
}

pub fn read_identity(procfs: &Path, etc: &Path) -> Result<Identity, HostError> {
    Ok(Identity {
        machine_id: read_machine_id(etc),
        boot_id: read_boot_id(procfs)?,
    })
}

pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

pub fn read_host_info(procfs: &Path) -> Result<HostInfo, HostError> {
    let path = procfs.join("uptime");
    let uptime = parse_uptime(&read(&path)?).map_err(|w| malformed(&path, w))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default();
    Ok(HostInfo {
        hostname: hostname(),
        kernel: sysinfo::System::kernel_version().unwrap_or_default(),
        os: sysinfo::System::long_os_version().unwrap_or_default(),
        uptime_seconds: uptime as u64,
        boot_time_unix_seconds: (now - uptime).round() as i64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_id_from_a_real_host() {
        // cat /proc/sys/kernel/random/boot_id
        assert_eq!(
            parse_boot_id("8b1e7b0c-3f7e-4a55-9d2e-0c4f6f1f3a2b\n").as_deref(),
            Ok("8b1e7b0c-3f7e-4a55-9d2e-0c4f6f1f3a2b")
        );
        assert!(parse_boot_id("").is_err());
        assert!(parse_boot_id("8b1e7b0c-3f7e-4a55-9d2e").is_err());
        assert!(parse_boot_id("zb1e7b0c-3f7e-4a55-9d2e-0c4f6f1f3a2b").is_err());
    }

    #[test]
    fn machine_id() {
        assert_eq!(
            parse_machine_id("0123456789abcdef0123456789ABCDEF\n").as_deref(),
            Ok("0123456789abcdef0123456789abcdef")
        );
        assert!(parse_machine_id("uninitialized\n").is_err());
    }

    #[test]
    fn uptime() {
        // cat /proc/uptime
        assert_eq!(parse_uptime("35121.42 69283.71\n"), Ok(35121.42));
        assert!(parse_uptime("").is_err());
        assert!(parse_uptime("abc 1").is_err());
        assert!(parse_uptime("-4 1").is_err());
        assert!(parse_uptime("NaN 1").is_err());
    }
}
