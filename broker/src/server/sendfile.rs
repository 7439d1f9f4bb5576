//! `sendfile(2)` from a stored file region to a tokio TCP socket: the kernel moves the bytes
//! from the page cache to the socket, and they never pass through the broker's memory.

use std::io;
use std::os::fd::AsRawFd;

use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::storage::FileRegion;

/// Most bytes one `sendfile` call is asked for; the socket buffer usually takes less.
const SENDFILE_CALL_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// Sends all of `region` on `socket`, waiting for the socket to drain as needed. Fails if the
/// region has no file descriptor, or its file was truncated before or while it was sent (the
/// frame is then short, and the caller must close the connection).
pub async fn send_region(socket: &TcpStream, region: &FileRegion) -> io::Result<()> {
    let fd = region
        .raw_fd()
        .ok_or_else(|| io::Error::other("region without a file descriptor"))?;
    let mut sent = 0u64;
    while sent < region.len() {
        region.check_unchanged()?;
        socket.writable().await?;
        let want = (region.len() - sent).min(SENDFILE_CALL_BYTES_MAX) as usize;
        let offset = region.pos() + sent;
        let result = socket.try_io(Interest::WRITABLE, || {
            let mut off = libc::off_t::try_from(offset).map_err(io::Error::other)?;
            // SAFETY: both descriptors are open for the call (the socket is borrowed, the file
            // is held by the region), and `off` is a valid off_t the kernel updates.
            let n = unsafe { libc::sendfile(socket.as_raw_fd(), fd, &mut off, want) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as u64)
            }
        });
        match result {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "stored file ends inside a region being sent ({sent} of {} bytes)",
                        region.len()
                    ),
                ))
            }
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    debug_assert_eq!(sent, region.len());
    // A truncation during the last call may have cut what it sent.
    region.check_unchanged()
}
