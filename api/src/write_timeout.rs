//! A connection whose writes may not stall for ever: a client that stops reading (a
//! large response, a WebSocket it never drains) holds a connection slot and its buffers
//! only until one write has waited `limit`; then the write fails and the connection
//! ends (counted in `patchbay_http_write_timeouts_total`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub struct WriteTimeout<S> {
    inner: S,
    limit: Duration,
    /// Since when a write, flush or shutdown has been waiting.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
    timeouts: Counter,
}

impl<S> WriteTimeout<S> {
    pub fn new(inner: S, limit: Duration, timeouts: Counter) -> WriteTimeout<S> {
        WriteTimeout {
            inner,
            limit,
            stalled: None,
            timeouts,
        }
    }

    /// The inner stream made no progress: wait, unless it has waited `limit` already.
    fn stalled<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let limit = self.limit;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.timeouts.inc();
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client did not read for too long",
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn progress<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.stalled(cx),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteTimeout<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.progress(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.progress(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.progress(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.progress(cx, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_reader_that_stops_reading_ends_the_write_after_the_limit() {
        // A 1 KiB pipe nobody reads.
        let (client, _server) = tokio::io::duplex(1024);
        let counter = Counter::default();
        let limit = Duration::from_millis(200);
        let mut w = WriteTimeout::new(client, limit, counter.clone());
        let started = tokio::time::Instant::now();
        let r = w.write_all(&[0u8; 64 * 1024]).await;
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= limit);
        assert_eq!(counter.get(), 1);
    }

    #[tokio::test]
    async fn a_reader_that_keeps_reading_is_never_cut() {
        let (client, mut server) = tokio::io::duplex(1024);
        let mut w = WriteTimeout::new(client, Duration::from_millis(500), Counter::default());
        let reader = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut buf = [0u8; 512];
            let mut total = 0;
            loop {
                // A slow reader: 512 bytes every 50 ms (no write waits 500 ms).
                tokio::time::sleep(Duration::from_millis(50)).await;
                match server.read(&mut buf).await {
                    Ok(0) | Err(_) => return total,
                    Ok(n) => total += n,
                }
            }
        });
        w.write_all(&[1u8; 8 * 1024]).await.unwrap();
        drop(w);
        assert!(reader.await.unwrap() >= 7 * 1024);
    }
}
