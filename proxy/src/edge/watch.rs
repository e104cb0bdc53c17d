//! Files re-read when they change on disk: certificates, JWKS and API key
//! lists. A background task asks its owner to reload on a fixed interval;
//! the owner compares a digest of the bytes it read with the last one so
//! an unchanged file costs one read and no parse.

use std::sync::Weak;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

/// How often watched files are checked, unless the caller picks another
/// interval: 1 second.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// Something that re-reads its files when asked. `reload` does blocking
/// file IO and runs on the blocking pool.
pub trait Reload: Send + Sync + 'static {
    /// Re-reads the files; keeps the current state if they are unchanged
    /// or unusable.
    fn reload(&self);
}

/// A digest of several byte strings, each prefixed by its length so that
/// moving bytes from one file to the other changes it.
pub(crate) fn fingerprint(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finalize().into()
}

/// Calls `target.reload()` every `every` until the target is dropped.
/// Must be called within a tokio runtime.
pub fn spawn_reload<T: Reload>(target: Weak<T>, every: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(t) = target.upgrade() else { break };
            if tokio::task::spawn_blocking(move || t.reload())
                .await
                .is_err()
            {
                break;
            }
        }
    })
}
