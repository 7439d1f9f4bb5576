//! Where the shell runs blocking storage work (fsync, retention, shutdown flushes).
//!
//! On a multi-threaded runtime (production) the work goes to tokio's blocking pool, so a slow
//! fsync never stalls request handling. On a current-thread runtime (the turmoil simulation and
//! in-process tests, where storage is the in-memory `MemStorage`) it runs inline: a thread pool
//! would make the order of events depend on the operating system's scheduler, and the
//! simulation must replay byte-for-byte from its seed.

//!
//! Inline work takes no time on the runtime's clock, which would make an fsync instantaneous
//! and hide every bug that lives between a write and its fsync. The simulator therefore sets a
//! latency ([`set_inline_latency`]) that inline work waits on tokio's (simulated) clock before
//! it runs, as a disk would take.

use std::cell::Cell;
use std::time::Duration;

use tokio::runtime::{Handle, RuntimeFlavor};

thread_local! {
    static INLINE_LATENCY: Cell<Duration> = const { Cell::new(Duration::ZERO) };
}

/// How long inline blocking work waits (simulated time) before it runs, on this thread.
pub fn set_inline_latency(latency: Duration) {
    INLINE_LATENCY.with(|l| l.set(latency));
}

/// Runs `work` off the async worker threads when there are several, inline when there is one.
pub async fn run_blocking<T, F>(work: F) -> std::io::Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    if Handle::current().runtime_flavor() == RuntimeFlavor::CurrentThread {
        let latency = INLINE_LATENCY.with(Cell::get);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        return Ok(work());
    }
    tokio::task::spawn_blocking(work)
        .await
        .map_err(std::io::Error::other)
}
