//! The scrape endpoint: `GET /metrics` over HTTP/1.x at `--metrics-listen`, one response per
//! connection, then close. A Prometheus scrape needs no more than that, so this is a small
//! bounded responder rather than an HTTP framework: a request head is at most
//! [`REQUEST_HEAD_BYTES_MAX`] and must arrive within [`REQUEST_TIMEOUT_MS`], at most
//! [`SCRAPES_MAX`] are served at once (more are closed unanswered), anything but
//! `GET /metrics` gets 404 or 405.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

/// Largest request head read (request line and headers).
pub const REQUEST_HEAD_BYTES_MAX: usize = 8 * 1024;
/// How long a scraper has to send its request head.
pub const REQUEST_TIMEOUT_MS: u64 = 5_000;
/// Scrapes served at once.
pub const SCRAPES_MAX: usize = 8;

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `render()` at `/metrics` on `listener` until `stop` changes.
pub async fn serve(
    listener: TcpListener,
    render: Arc<dyn Fn() -> String + Send + Sync>,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(SCRAPES_MAX));
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!(%peer, max = SCRAPES_MAX, "metrics: too many scrapes at once; closing");
            continue;
        };
        let render = Arc::clone(&render);
        tokio::spawn(async move {
            if let Err(e) = answer(stream, render.as_ref()).await {
                tracing::debug!(%peer, error = %e, "metrics: scrape failed");
            }
            drop(slot);
        });
    }
}

async fn answer(
    mut stream: TcpStream,
    render: &(dyn Fn() -> String + Send + Sync),
) -> std::io::Result<()> {
    let head = tokio::time::timeout(
        Duration::from_millis(REQUEST_TIMEOUT_MS),
        read_head(&mut stream),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request head timed out"))??;
    let (status, content_type, body) = match route(&head) {
        Route::Metrics => ("200 OK", CONTENT_TYPE, render()),
        Route::NotFound => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "metrics are at /metrics\n".to_string(),
        ),
        Route::NotAllowed => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET\n".to_string(),
        ),
        Route::Bad => (
            "400 Bad Request",
            "text/plain; charset=utf-8",
            "malformed request\n".to_string(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Reads until the blank line ending the head; errors past [`REQUEST_HEAD_BYTES_MAX`] or at
/// the end of the stream.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&chunk[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Ok(head);
        }
        if head.len() > REQUEST_HEAD_BYTES_MAX {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "request head too large",
            ));
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    NotFound,
    NotAllowed,
    Bad,
}

fn route(head: &[u8]) -> Route {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let Ok(line) = std::str::from_utf8(line) else {
        return Route::Bad;
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Route::Bad;
    };
    if parts.next().is_some() || !version.starts_with("HTTP/1.") {
        return Route::Bad;
    }
    if method != "GET" {
        return Route::NotAllowed;
    }
    let path = target.split('?').next().unwrap_or_default();
    if path == "/metrics" {
        Route::Metrics
    } else {
        Route::NotFound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_metrics_is_served() {
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics
        );
        assert_eq!(
            route(b"GET /metrics?name[]=x HTTP/1.0\r\n\r\n"),
            Route::Metrics
        );
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"POST /metrics HTTP/1.1\r\n\r\n"), Route::NotAllowed);
        assert_eq!(route(b"GET /metrics\r\n\r\n"), Route::Bad);
        assert_eq!(route(b"GET /metrics SPDY/3 extra\r\n\r\n"), Route::Bad);
        assert_eq!(route(b"\xff\xfe /metrics HTTP/1.1\r\n\r\n"), Route::Bad);
        assert_eq!(route(b""), Route::Bad);
    }

    #[tokio::test]
    async fn a_scrape_gets_the_rendered_text_and_junk_gets_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = watch::channel(false);
        let render: Arc<dyn Fn() -> String + Send + Sync> =
            Arc::new(|| "x_total 1\n# EOF\n".into());
        let server = tokio::spawn(serve(listener, render, stop_rx));
        let ask = |request: Vec<u8>| async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(&request).await.unwrap();
            let mut out = String::new();
            let _ = s.read_to_string(&mut out).await;
            out
        };
        let ok = ask(b"GET /metrics HTTP/1.1\r\nHost: b\r\n\r\n".to_vec()).await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains(CONTENT_TYPE), "{ok}");
        assert!(ok.ends_with("\r\n\r\nx_total 1\n# EOF\n"), "{ok}");
        let missing = ask(b"GET /other HTTP/1.1\r\n\r\n".to_vec()).await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        // A head past the limit is closed unanswered; the endpoint keeps serving.
        let huge = ask(vec![b'a'; REQUEST_HEAD_BYTES_MAX + 2048]).await;
        assert!(huge.is_empty(), "{huge}");
        let again = ask(b"GET /metrics HTTP/1.0\r\n\r\n".to_vec()).await;
        assert!(again.starts_with("HTTP/1.1 200 OK\r\n"), "{again}");
        stop_tx.send(true).unwrap();
        server.await.unwrap();
    }
}
