//! Where the reader stopped: `BOOT_ID SEQ\n` in a small file, written
//! atomically (temp file + rename), so a restarted agent does not report the
//! same records twice.
//!
//! On start, records with seq <= the saved seq are skipped when the saved boot
//! id is this boot's. After a reboot (another boot id) or without a state file
//! everything still in the kernel's buffer is read: it all happened in this
//! boot, and an OOM kill that happened while the agent was down is exactly
//! what an operator wants to see.

use super::KmsgError;
use std::io::Write;
use std::path::Path;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResumeState {
    pub boot_id: String,
    pub seq: u64,
}

impl ResumeState {
    /// The last seq already reported in this boot, if the state is this boot's.
    pub fn seq_for_boot(&self, boot_id: &str) -> Option<u64> {
        (self.boot_id == boot_id).then_some(self.seq)
    }

    /// Reads the state file; a missing file is no state.
    pub fn load(path: &Path) -> Result<Option<ResumeState>, KmsgError> {
        match std::fs::read_to_string(path) {
            Ok(text) => parse_state(&text)
                .map(Some)
                .map_err(|what| KmsgError::BadState {
                    path: path.to_owned(),
                    what,
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(KmsgError::Io {
                path: path.to_owned(),
                error,
            }),
        }
    }

    /// Writes the state to a temp file next to `path` and renames it over.
    /// The temp file's name is this process's own, so writers sharing a
    /// directory never rename each other's half-written files.
    pub fn save(&self, path: &Path) -> Result<(), KmsgError> {
        let io = |error| KmsgError::Io {
            path: path.to_owned(),
            error,
        };
        let mut tmp_name = path.as_os_str().to_owned();
        tmp_name.push(format!(
            ".{}.{:x}.tmp",
            std::process::id(),
            rand::random::<u32>()
        ));
        let tmp = Path::new(&tmp_name);
        let written = std::fs::File::create(tmp).and_then(|mut file| {
            writeln!(file, "{} {}", self.boot_id, self.seq)?;
            file.sync_all()?;
            std::fs::rename(tmp, path)
        });
        if written.is_err() {
            let _ = std::fs::remove_file(tmp);
        }
        written.map_err(io)
    }
}

/// `BOOT_ID SEQ`.
pub fn parse_state(text: &str) -> Result<ResumeState, String> {
    let mut words = text.split_whitespace();
    let (Some(boot_id), Some(seq), None) = (words.next(), words.next(), words.next()) else {
        return Err(format!("expected \"BOOT_ID SEQ\", got {:?}", text.trim()));
    };
    let seq = seq
        .parse()
        .map_err(|_| format!("seq is not a number: {seq:?}"))?;
    Ok(ResumeState {
        boot_id: boot_id.to_owned(),
        seq,
    })
}
