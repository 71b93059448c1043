//! Bounded capture of a guest's stdout and stderr.
//!
//! Output is kept up to a byte budget and a line budget (each kept line becomes one log record,
//! so 64 KiB of newlines must not become 64 Ki log records) and the rest is dropped and
//! counted; unlike wasmtime's `MemoryOutputPipe` a full buffer never traps the guest, because
//! printing too much is not a reason to fail an order. The invoker turns the captured bytes
//! into log lines inside the invocation span.

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
    /// Line breaks in `kept`.
    lines: usize,
    dropped: usize,
}

/// A cloneable handle on one bounded capture buffer.
#[derive(Debug, Clone)]
pub struct CapturedOutput {
    capacity: usize,
    max_lines: usize,
    buffer: Arc<Mutex<Buffer>>,
}

impl CapturedOutput {
    /// A buffer keeping at most `capacity` bytes in at most `max_lines` lines.
    pub fn new(capacity: usize, max_lines: usize) -> Self {
        Self {
            capacity,
            max_lines,
            buffer: Arc::new(Mutex::new(Buffer::default())),
        }
    }

    fn append(&self, bytes: &[u8]) {
        let mut buf = self.buffer.lock().unwrap_or_else(|p| p.into_inner());
        let room = self.capacity.saturating_sub(buf.kept.len());
        let mut keep = room.min(bytes.len());
        // Keep up to (and including) the line break that reaches the line budget.
        let lines_left = self.max_lines.saturating_sub(buf.lines);
        if let Some((at, _)) = bytes[..keep]
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .nth(lines_left.saturating_sub(1))
            .filter(|_| lines_left > 0)
        {
            keep = at + 1;
        } else if lines_left == 0 {
            keep = 0;
        }
        buf.lines += bytes[..keep].iter().filter(|b| **b == b'\n').count();
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
    fn keeps_up_to_the_line_budget_and_counts_the_rest() {
        let out = CapturedOutput::new(1 << 20, 3);
        out.append(b"a\nb");
        out.append(&[b'\n'; 65536]);
        out.append(b"c\n");
        let (kept, dropped) = out.take();
        assert_eq!(kept, b"a\nb\n\n");
        assert_eq!(dropped, 65536 - 2 + 2);
        // An unterminated last line counts as kept text, not a line.
        let out = CapturedOutput::new(1 << 20, 1);
        out.append(b"no newline");
        assert_eq!(out.take(), (b"no newline".to_vec(), 0));
    }

    #[test]
    fn keeps_up_to_capacity_and_counts_the_rest() {
        let out = CapturedOutput::new(8, 100);
        out.append(b"hello ");
        out.append(b"world");
        let (kept, dropped) = out.take();
        assert_eq!(kept, b"hello wo");
        assert_eq!(dropped, 3);
        assert_eq!(out.take(), (Vec::new(), 0));
    }
}
