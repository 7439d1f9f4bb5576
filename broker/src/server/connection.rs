//! One client connection: a reader that frames, decodes and dispatches requests in arrival order,
//! and a writer that sends responses in that same order as they complete.
//!
//! Ordering: produce requests append in arrival order and then wait for durability side by side,
//! so one producer's pipelined requests share fsyncs. Every other request waits until the produce
//! requests before it are answered, so it observes their effects, as on a Kafka broker, which
//! handles one request per connection at a time.
//!
//! Limits: a frame larger than `max_frame_bytes` or with a negative size closes the connection
//! before anything is allocated for it; bytes of requests in flight are bounded by a semaphore
//! (the reader stops reading when it is exhausted, so TCP pushes back on the client), and so is
//! the number of requests in flight. A fetch also reserves the most response bytes it may
//! produce, so responses count against the same budget. Bytes of a frame are buffered only as
//! they arrive.

use std::any::Any;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use kafka_protocol::ResponseError;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, RwLock, Semaphore};
use tokio::task::JoinHandle;

use crate::apis::fetch::FETCH_RESPONSE_BYTES_MAX;
use crate::metrics::BrokerMetrics;
use crate::protocol::fetch_frame::{FetchReply, Frame, FramePart};
use crate::storage::FileRegion;

/// Largest request buffer allocated before its bytes arrive; bigger frames grow from there.
const FRAME_PREALLOCATE_BYTES_MAX: usize = 16 * 1024 * 1024;
use crate::apis::{api_versions, ClientConnection, KafkaApis, Reply};
use crate::protocol::{decode_request, encode_response, FrameError, Request};
use crate::storage::Storage;

use super::sendfile;

/// Limits of one connection, from the broker config.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_frame_bytes: u32,
    pub max_inflight_bytes: u32,
    pub max_inflight_requests: u32,
    pub idle_timeout_ms: u64,
}

/// A response on its way to the writer, holding its share of the in-flight byte budget.
struct Pending {
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    /// When the request's last byte was read (the request time metric starts there).
    arrived: tokio::time::Instant,
    body: PendingBody,
    _permit: OwnedSemaphorePermit,
}

// One per queued response; boxing `Answer` would allocate for every ready one.
#[allow(clippy::large_enum_variant)]
enum PendingBody {
    Ready(Answer),
    Waiting(JoinHandle<Answer>),
}

enum Answer {
    Body(ResponseKind),
    /// Records still in storage, sent from there.
    Fetch(FetchReply),
}

/// Serves one connection until the client leaves, sends something we must close on, idles out,
/// or `shutdown` turns true. In-flight requests are answered before the socket closes.
pub async fn serve<S, R, W>(
    mut reader: R,
    writer: W,
    peer: SocketAddr,
    apis: Arc<KafkaApis<S>>,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
) where
    S: Storage + Clone,
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let budget = Arc::new(Semaphore::new(limits.max_inflight_bytes as usize));
    let ordering = Arc::new(RwLock::new(()));
    let (tx, rx) = mpsc::channel::<Pending>(limits.max_inflight_requests as usize);
    let writer_task = tokio::spawn(write_responses(
        writer,
        rx,
        peer,
        Arc::clone(apis.metrics()),
    ));
    let idle = Duration::from_millis(limits.idle_timeout_ms);
    let client = ClientConnection::new(peer.ip().to_string());
    let reason = loop {
        let size = tokio::select! {
            biased;
            _ = shutdown.changed() => break "broker shutting down".to_string(),
            r = tokio::time::timeout(idle, reader.read_i32()) => match r {
                Ok(Ok(size)) => size,
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break "client closed".to_string(),
                Ok(Err(e)) => break format!("read error: {e}"),
                Err(_) if budget.available_permits() == limits.max_inflight_bytes as usize => {
                    break format!("idle for {} ms", limits.idle_timeout_ms)
                }
                Err(_) => continue,
            },
        };
        if size < 0 || size as u32 > limits.max_frame_bytes {
            break format!("frame size {size} outside 0..={}", limits.max_frame_bytes);
        }
        let size = size as usize;
        // A frame larger than the whole budget takes all of it, so it waits for everything
        // before it to finish rather than deadlocking.
        let want = size.clamp(1, limits.max_inflight_bytes as usize) as u32;
        let permit = match Arc::clone(&budget).acquire_many_owned(want).await {
            Ok(p) => p,
            Err(_) => break "budget closed".to_string(),
        };
        // Sized up front (the budget already holds `size`), up to a bound, so large produce
        // requests are not copied through doubling buffers.
        let mut frame = Vec::with_capacity(size.min(FRAME_PREALLOCATE_BYTES_MAX));
        match (&mut reader)
            .take(size as u64)
            .read_to_end(&mut frame)
            .await
        {
            Ok(n) if n == size => {}
            Ok(n) => break format!("connection closed after {n} of {size} frame bytes"),
            Err(e) => break format!("read error: {e}"),
        }
        let arrived = tokio::time::Instant::now();
        let pending = match decode_request(Bytes::from(frame)) {
            Ok(request) => {
                // A fetch's response can be far larger than its request: reserve its size
                // too, so pipelined fetches cannot pile up unbounded response memory.
                let mut permit = permit;
                let extra = response_bytes_max(&request)
                    .min(limits.max_inflight_bytes as usize - want as usize);
                if extra > 0 {
                    match Arc::clone(&budget).acquire_many_owned(extra as u32).await {
                        Ok(p) => permit.merge(p),
                        Err(_) => break "budget closed".to_string(),
                    }
                }
                let (key, version, correlation_id) = (
                    request.api_key,
                    request.api_version,
                    request.header.correlation_id,
                );
                tracing::debug!(%peer, api = ?key, version, correlation_id, "request");
                // Produce requests overlap their waits for fsync (group commit across one
                // connection's pipeline); anything else first waits for them, so a fetch or
                // offset lookup sees every write acknowledged before it on this connection.
                let produce_guard = if key == ApiKey::Produce {
                    Some(Arc::clone(&ordering).read_owned().await)
                } else {
                    drop(Arc::clone(&ordering).write_owned().await);
                    None
                };
                let body = match apis.handle(request, &client) {
                    Reply::Now(body) => Some(PendingBody::Ready(Answer::Body(body))),
                    Reply::Fetch(reply) => Some(PendingBody::Ready(Answer::Fetch(reply))),
                    Reply::Later(future) => Some(PendingBody::Waiting(tokio::spawn(async move {
                        let body = future.await;
                        drop(produce_guard);
                        Answer::Body(body)
                    }))),
                    Reply::FetchLater(future) => {
                        Some(PendingBody::Waiting(tokio::spawn(async move {
                            let reply = future.await;
                            drop(produce_guard);
                            Answer::Fetch(reply)
                        })))
                    }
                    Reply::Nothing => None,
                };
                body.map(|body| Pending {
                    key,
                    version,
                    correlation_id,
                    arrived,
                    body,
                    _permit: permit,
                })
            }
            Err(FrameError::UnsupportedVersion {
                peek,
                key: ApiKey::ApiVersions,
            }) => {
                // KIP-511: answer in v0 with UNSUPPORTED_VERSION and our ranges; the client retries.
                tracing::info!(%peer, version = peek.api_version, "ApiVersions version not supported; answering v0");
                Some(Pending {
                    key: ApiKey::ApiVersions,
                    version: 0,
                    correlation_id: peek.correlation_id,
                    arrived,
                    body: PendingBody::Ready(Answer::Body(ResponseKind::ApiVersions(
                        api_versions(0, ResponseError::UnsupportedVersion.code()),
                    ))),
                    _permit: permit,
                })
            }
            Err(e) => break format!("{e}"),
        };
        if let Some(p) = pending {
            if tx.send(p).await.is_err() {
                break "writer stopped".to_string();
            }
        }
    };
    // Before the answers still in flight drain: a leader stops naming a follower whose fetch
    // connection this was to consumers at once.
    client.close();
    drop(tx);
    if let Err(e) = writer_task.await {
        tracing::error!(%peer, error = %e, "connection writer failed");
    }
    tracing::info!(%peer, reason = %reason, "disconnected");
}

/// The most response bytes a request can produce beyond a small fixed part.
fn response_bytes_max(request: &Request) -> usize {
    match &request.body {
        RequestKind::Fetch(f) => {
            let asked = if request.api_version >= 3 {
                f.max_bytes
            } else {
                FETCH_RESPONSE_BYTES_MAX
            };
            asked.clamp(0, FETCH_RESPONSE_BYTES_MAX) as usize
        }
        _ => 0,
    }
}

async fn write_responses<W: AsyncWrite + Unpin + 'static>(
    writer: W,
    mut rx: mpsc::Receiver<Pending>,
    peer: SocketAddr,
    metrics: Arc<BrokerMetrics>,
) {
    let mut out = BufWriter::with_capacity(WRITE_BUFFER_BYTES, writer);
    let mut scratch = Vec::new();
    while let Some(pending) = rx.recv().await {
        let answer = match pending.body {
            PendingBody::Ready(answer) => answer,
            PendingBody::Waiting(handle) => match handle.await {
                Ok(answer) => answer,
                Err(e) => {
                    tracing::error!(%peer, error = %e, "request task failed; closing connection");
                    return;
                }
            },
        };
        let (key, version, correlation_id) = (pending.key, pending.version, pending.correlation_id);
        let frame = match answer {
            Answer::Body(body) => {
                encode_response(key, version, correlation_id, &body).map(|bytes| Frame {
                    parts: vec![FramePart::Bytes(bytes)],
                })
            }
            Answer::Fetch(reply) => reply.encode(version, correlation_id),
        };
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => {
                tracing::error!(%peer, api = ?key, version, error = %e,
                    "could not encode response; closing connection");
                return;
            }
        };
        if let Err(e) = write_frame(&mut out, &frame, &mut scratch).await {
            // Includes stored bytes that changed or vanished under the response: the frame
            // is cut short, so only closing the connection keeps the client's stream sane.
            tracing::info!(%peer, api = ?key, error = %e, "write failed; closing connection");
            return;
        }
        metrics.request_time(key as i16, pending.arrived.elapsed());
        // Flush once nothing else is ready, so pipelined responses share a write.
        if rx.is_empty() {
            if let Err(e) = out.flush().await {
                tracing::info!(%peer, error = %e, "write failed");
                return;
            }
        }
    }
    let _ = out.flush().await;
    let _ = out.shutdown().await;
}

/// Bytes buffered before a write to the socket.
const WRITE_BUFFER_BYTES: usize = 256 * 1024;
/// Regions smaller than this are copied through the write buffer: one `sendfile` per small
/// batch would cost more syscalls than the copy saves.
const SENDFILE_BYTES_MIN: u64 = 64 * 1024;

/// Writes one frame: encoded parts through the buffer, file regions by `sendfile` when the
/// socket is a real TCP socket and the region a real file, else read into `scratch` and
/// written.
async fn write_frame<W: AsyncWrite + Unpin + 'static>(
    out: &mut BufWriter<W>,
    frame: &Frame,
    scratch: &mut Vec<u8>,
) -> std::io::Result<()> {
    for part in &frame.parts {
        match part {
            FramePart::Bytes(b) => out.write_all(b).await?,
            FramePart::File(region) => {
                let sendable = region.len() >= SENDFILE_BYTES_MIN
                    && region.raw_fd().is_some()
                    && (out.get_ref() as &dyn Any).is::<tokio::net::tcp::OwnedWriteHalf>();
                if sendable {
                    out.flush().await?;
                    let socket = (out.get_mut() as &mut dyn Any)
                        .downcast_mut::<tokio::net::tcp::OwnedWriteHalf>()
                        .expect("checked above");
                    sendfile::send_region(socket.as_ref(), region).await?;
                } else {
                    copy_region(out, region, scratch).await?;
                }
            }
        }
    }
    Ok(())
}

/// Most bytes of a region read into memory at once on the copying path.
const COPY_CHUNK_BYTES: usize = 256 * 1024;

async fn copy_region<W: AsyncWrite + Unpin>(
    out: &mut BufWriter<W>,
    region: &FileRegion,
    scratch: &mut Vec<u8>,
) -> std::io::Result<()> {
    let mut done = 0u64;
    while done < region.len() {
        let n = (region.len() - done).min(COPY_CHUNK_BYTES as u64) as usize;
        scratch.resize(n, 0);
        region.read_into(done, &mut scratch[..n])?;
        out.write_all(&scratch[..n]).await?;
        done += n as u64;
    }
    Ok(())
}
