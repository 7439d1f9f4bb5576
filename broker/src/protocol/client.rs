//! A minimal Kafka protocol client: one connection, one request at a time, typed requests and
//! responses from `kafka-protocol`. It runs over any byte stream, so the same code talks to a
//! real broker over tokio TCP (follower fetchers, `sim check`) and to the real broker shell
//! over turmoil's simulated TCP (`sim system`).
//!
//! Deliberately small: no pipelining, no retries, no metadata cache. Callers decide what to
//! retry.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::RequestHeader;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest response frame the client accepts (a fetch of a few partitions fits easily).
pub const RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Why a call produced no response. Every variant leaves the connection unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The stream failed or closed.
    Io(String),
    /// The response did not decode or did not match the request.
    Protocol(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Io(e) => write!(f, "io: {e}"),
            CallError::Protocol(e) => write!(f, "protocol: {e}"),
        }
    }
}

/// One client connection to one broker.
pub struct KafkaConn<R, W> {
    reader: R,
    writer: W,
    correlation_id: i32,
    client_id: StrBytes,
}

impl<R, W> KafkaConn<R, W>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    pub fn new(reader: R, writer: W, client_id: &str) -> Self {
        KafkaConn {
            reader,
            writer,
            correlation_id: 0,
            client_id: StrBytes::from_string(client_id.to_string()),
        }
    }

    /// Sends `request` at `version` and waits for its response.
    pub async fn call<Q: Request>(
        &mut self,
        request: &Q,
        version: i16,
    ) -> Result<Q::Response, CallError> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let correlation_id = self.correlation_id;
        let header = RequestHeader::default()
            .with_request_api_key(Q::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(self.client_id.clone()));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, Q::header_version(version))
            .map_err(|e| CallError::Protocol(format!("encode header: {e}")))?;
        request
            .encode(&mut body, version)
            .map_err(|e| CallError::Protocol(format!("encode request: {e}")))?;
        let mut frame = BytesMut::with_capacity(4 + body.len());
        frame.put_i32(body.len() as i32);
        frame.extend_from_slice(&body);
        self.writer
            .write_all(&frame)
            .await
            .map_err(|e| CallError::Io(e.to_string()))?;
        self.writer
            .flush()
            .await
            .map_err(|e| CallError::Io(e.to_string()))?;

        let size = self
            .reader
            .read_i32()
            .await
            .map_err(|e| CallError::Io(e.to_string()))?;
        let size = usize::try_from(size)
            .ok()
            .filter(|s| (4..=RESPONSE_BYTES_MAX).contains(s))
            .ok_or_else(|| CallError::Protocol(format!("response frame of {size} bytes")))?;
        // Read into spare capacity: a follower's fetch response is up to 32 MiB, not worth
        // zeroing first.
        let mut buf = BytesMut::with_capacity(size);
        while buf.len() < size {
            let n = (&mut self.reader)
                .take((size - buf.len()) as u64)
                .read_buf(&mut buf)
                .await
                .map_err(|e| CallError::Io(e.to_string()))?;
            if n == 0 {
                return Err(CallError::Io(format!(
                    "connection closed after {} of {size} response bytes",
                    buf.len()
                )));
            }
        }
        let mut buf = buf.freeze();
        let got = buf.get_i32();
        if got != correlation_id {
            return Err(CallError::Protocol(format!(
                "correlation id {got}, expected {correlation_id}"
            )));
        }
        if <Q::Response as HeaderVersion>::header_version(version) >= 1 {
            skip_tagged_fields(&mut buf)?;
        }
        <Q::Response as Decodable>::decode(&mut buf, version)
            .map_err(|e| CallError::Protocol(format!("decode response: {e}")))
    }
}

/// Skips the tagged-field section of a flexible response header.
fn skip_tagged_fields(buf: &mut Bytes) -> Result<(), CallError> {
    let count = read_uvarint(buf)?;
    for _ in 0..count {
        let _tag = read_uvarint(buf)?;
        let len = read_uvarint(buf)? as usize;
        if buf.remaining() < len {
            return Err(CallError::Protocol("truncated tagged field".into()));
        }
        buf.advance(len);
    }
    Ok(())
}

fn read_uvarint(buf: &mut Bytes) -> Result<u32, CallError> {
    let mut value = 0u32;
    for shift in (0..35).step_by(7) {
        if !buf.has_remaining() {
            return Err(CallError::Protocol("truncated varint".into()));
        }
        let b = buf.get_u8();
        value |= u32::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(CallError::Protocol("varint too long".into()))
}
