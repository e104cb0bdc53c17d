//! The last good snapshot on disk: `<cache-dir>/snapshot.pb`, a
//! `vakt.discovery.v1.Snapshot`. It is written to a temporary file, synced
//! and renamed, so a crash leaves the old file or the new one.

use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

use vakt_api::pb::discovery::v1::Snapshot;
use vakt_api::prost::Message;

const FILE: &str = "snapshot.pb";

/// A snapshot read back from disk, with when it was written.
pub(crate) struct Cached {
    pub snapshot: Snapshot,
    pub written_at: SystemTime,
}

/// Reads the cached snapshot; a missing or unreadable file is `None`.
pub(crate) fn load(dir: &Path) -> Option<Cached> {
    let path = dir.join(FILE);
    let bytes = std::fs::read(&path).ok()?;
    let written_at = std::fs::metadata(&path).ok()?.modified().ok()?;
    match Snapshot::decode(bytes.as_slice()) {
        Ok(snapshot) => Some(Cached {
            snapshot,
            written_at,
        }),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "snapshot cache unreadable");
            None
        }
    }
}

/// Writes `snapshot` durably, replacing the previous one.
pub(crate) fn save(dir: &Path, snapshot: &Snapshot) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&snapshot.encode_to_vec())?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(FILE))?;
    std::fs::File::open(dir)?.sync_all()
}
