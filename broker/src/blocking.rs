//! Where the shell runs blocking storage work (fsync, retention, shutdown flushes).
//!
//! On a multi-threaded runtime (production) the work goes to tokio's blocking pool, so a slow
//! fsync never stalls request handling. On a current-thread runtime (the turmoil simulation and
//! in-process tests, where storage is the in-memory `MemStorage`) it runs inline: a thread pool
//! would make the order of events depend on the operating system's scheduler, and the
//! simulation must replay byte-for-byte from its seed.

use tokio::runtime::{Handle, RuntimeFlavor};

/// Runs `work` off the async worker threads when there are several, inline when there is one.
pub async fn run_blocking<T, F>(work: F) -> std::io::Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    if Handle::current().runtime_flavor() == RuntimeFlavor::CurrentThread {
        return Ok(work());
    }
    tokio::task::spawn_blocking(work)
        .await
        .map_err(std::io::Error::other)
}
