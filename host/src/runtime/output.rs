//! Bounded capture of a guest's stdout and stderr.
//!
//! Output is kept up to a byte budget and the rest is dropped and counted; unlike wasmtime's
//! `MemoryOutputPipe` a full buffer never traps the guest, because printing too much is not a
//! reason to fail an order. The invoker turns the captured bytes into log lines inside the
//! invocation span.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

#[derive(Debug, Default)]
struct Buffer {
    kept: Vec<u8>,
    dropped: usize,
}

/// A cloneable handle on one bounded capture buffer.
#[derive(Debug, Clone)]
pub struct CapturedOutput {
    capacity: usize,
    buffer: Arc<Mutex<Buffer>>,
}

impl CapturedOutput {
    /// A buffer keeping at most `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            buffer: Arc::new(Mutex::new(Buffer::default())),
        }
    }

    fn append(&self, bytes: &[u8]) {
        let mut buf = self.buffer.lock().unwrap_or_else(|p| p.into_inner());
        let room = self.capacity.saturating_sub(buf.kept.len());
        let keep = room.min(bytes.len());
        buf.kept.extend_from_slice(&bytes[..keep]);
        buf.dropped += bytes.len() - keep;
    }

    /// The kept bytes and how many were dropped, emptying the buffer.
    pub fn take(&self) -> (Vec<u8>, usize) {
        let mut buf = self.buffer.lock().unwrap_or_else(|p| p.into_inner());
        let taken = std::mem::take(&mut *buf);
        (taken.kept, taken.dropped)
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Always writable: excess is dropped, not refused.
        Ok(64 << 10)
    }
}

#[async_trait::async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

impl AsyncWrite for CapturedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_up_to_capacity_and_counts_the_rest() {
        let out = CapturedOutput::new(8);
        out.append(b"hello ");
        out.append(b"world");
        let (kept, dropped) = out.take();
        assert_eq!(kept, b"hello wo");
        assert_eq!(dropped, 3);
        assert_eq!(out.take(), (Vec::new(), 0));
    }
}
