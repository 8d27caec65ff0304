//! The WebSocket frame writer: a batch of [`Frame`]s encoded as unmasked, final WebSocket
//! frames (RFC 6455 §5.2) and written straight to the socket, several per syscall, without
//! tungstenite's per-frame machinery. Used by the WebSocket task (`ws.rs`), which owns the
//! stream and the batch; this file owns only the encoding and the writes.

use std::io::IoSlice;
use std::pin::Pin;
use std::task::Poll;

use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::eio::Frame;

/// How far [`write_frames`] got: the first frame not completely written, and how many bytes
/// of its encoding are.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Progress {
    pub(super) next: usize,
    pub(super) offset: usize,
}

/// Frames per `writev` call (Linux allows 1024 slices; each frame takes two or three).
const FRAMES_PER_WRITE: usize = 32;
/// Small frames are copied into one buffer of up to [`COALESCE_UP_TO`] bytes and written with
/// one `write`: many small slices cost the kernel more than one copy here. Larger frames go
/// out with `writev`, their payloads never copied.
const COALESCE_FRAMES_UP_TO: usize = 16 * 1024;
const COALESCE_UP_TO: usize = 64 * 1024;

thread_local! {
    /// The coalescing buffer of this worker thread: filled and written within one poll, so
    /// no connection holds it across a wait.
    static COALESCED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Engine.IO v3 prefixes binary WebSocket messages with the packet type (4: message).
const V3_BINARY_PREFIX: &[u8] = &[4];

/// The header of an unmasked, final WebSocket frame (RFC 6455 §5.2).
#[derive(Clone, Copy)]
struct FrameHead {
    bytes: [u8; 10],
    len: usize,
}

impl FrameHead {
    const TEXT: u8 = 0x1;
    const BINARY: u8 = 0x2;

    fn new(opcode: u8, payload_len: usize) -> Self {
        let mut bytes = [0u8; 10];
        bytes[0] = 0x80 | opcode;
        let len = if payload_len < 126 {
            bytes[1] = payload_len as u8;
            2
        } else if let Ok(short) = u16::try_from(payload_len) {
            bytes[1] = 126;
            bytes[2..4].copy_from_slice(&short.to_be_bytes());
            4
        } else {
            bytes[1] = 127;
            bytes[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
            10
        };
        Self { bytes, len }
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl FrameHead {
    const EMPTY: Self = Self {
        bytes: [0; 10],
        len: 0,
    };

    /// The header of `frame` and the length of its payload on the wire.
    fn of(frame: &Frame, eio: u8) -> (Self, usize) {
        let (opcode, payload_len) = match frame {
            Frame::Text(text) => (Self::TEXT, text.len()),
            Frame::Binary(data) if eio >= 4 => (Self::BINARY, data.len()),
            Frame::Binary(data) => (Self::BINARY, data.len() + V3_BINARY_PREFIX.len()),
        };
        (Self::new(opcode, payload_len), payload_len)
    }
}

/// The WebSocket encoding of `frames`: runs of small frames copied into one buffer and
/// written with one `write`; a large frame's payload written uncopied with `writev`.
///
/// Buffers, headers and slices live only inside a poll (a per-thread buffer, stack arrays),
/// so the connection task's future (alive as long as the connection) stays small; only the
/// position in the batch survives a pending write.
pub(super) async fn write_frames<W: AsyncWrite + Unpin>(
    out: &mut W,
    eio: u8,
    frames: &[Frame],
    progress: &mut Progress,
) -> std::io::Result<()> {
    let Progress { next, offset } = progress;
    std::future::poll_fn(|cx| {
        while *next < frames.len() {
            // Arrays sized for the window: a lone frame (the common case at moderate load)
            // does not pay for initialising room for a large batch.
            let (head, payload_len) = FrameHead::of(&frames[*next], eio);
            let written = if head.len + payload_len <= COALESCE_FRAMES_UP_TO {
                poll_write_coalesced(out, cx, eio, frames, next, offset)
            } else if frames.len() - *next <= 2 {
                poll_write_window::<2, 6, _>(out, cx, eio, frames, next, offset)
            } else {
                poll_write_window::<FRAMES_PER_WRITE, { 3 * FRAMES_PER_WRITE }, _>(
                    out, cx, eio, frames, next, offset,
                )
            };
            match written {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
        }
        Poll::Ready(Ok(()))
    })
    .await?;
    out.flush().await
}

/// One `write` of as many small frames from `frames[*next..]` as fit in [`COALESCE_UP_TO`]
/// bytes, copied into this thread's buffer, resuming `*offset` bytes into the first; advances
/// `next` and `offset` by what was written.
fn poll_write_coalesced<W: AsyncWrite + Unpin>(
    out: &mut W,
    cx: &mut std::task::Context<'_>,
    eio: u8,
    frames: &[Frame],
    next: &mut usize,
    offset: &mut usize,
) -> Poll<std::io::Result<()>> {
    COALESCED.with_borrow_mut(|buffer| {
        buffer.clear();
        let mut taken = 0;
        for frame in &frames[*next..] {
            let (head, payload_len) = FrameHead::of(frame, eio);
            let size = head.len + payload_len;
            if size > COALESCE_FRAMES_UP_TO
                || (!buffer.is_empty() && buffer.len() + size > COALESCE_UP_TO)
            {
                break;
            }
            buffer.extend_from_slice(head.as_slice());
            match frame {
                Frame::Text(text) => buffer.extend_from_slice(text.as_bytes()),
                Frame::Binary(data) => {
                    if eio < 4 {
                        buffer.extend_from_slice(V3_BINARY_PREFIX);
                    }
                    buffer.extend_from_slice(data);
                }
            }
            taken += 1;
        }
        let written = match Pin::new(&mut *out).poll_write(cx, &buffer[*offset..]) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(written)) => written,
        };
        let mut done = *offset + written;
        *offset = 0;
        let sizes = frames[*next..*next + taken].iter().map(|frame| {
            let (head, payload_len) = FrameHead::of(frame, eio);
            head.len + payload_len
        });
        for size in sizes {
            if done < size {
                *offset = done;
                break;
            }
            done -= size;
            *next += 1;
        }
        Poll::Ready(Ok(()))
    })
}

/// One `writev` of up to `N` frames from `frames[*next..]` (`S` = 3 × `N` slices), resuming
/// `*offset` bytes into the first; advances `next` and `offset` by what was written.
fn poll_write_window<const N: usize, const S: usize, W: AsyncWrite + Unpin>(
    out: &mut W,
    cx: &mut std::task::Context<'_>,
    eio: u8,
    frames: &[Frame],
    next: &mut usize,
    offset: &mut usize,
) -> Poll<std::io::Result<()>> {
    let window = &frames[*next..frames.len().min(*next + N)];
    let mut heads = [FrameHead::EMPTY; N];
    let mut sizes = [0usize; N];
    for (i, frame) in window.iter().enumerate() {
        let (head, payload_len) = FrameHead::of(frame, eio);
        heads[i] = head;
        sizes[i] = head.len + payload_len;
    }
    let mut slices = [IoSlice::new(&[]); S];
    let mut count = 0;
    for (head, frame) in heads.iter().zip(window) {
        slices[count] = IoSlice::new(head.as_slice());
        count += 1;
        let payload: &[u8] = match frame {
            Frame::Text(text) => text.as_bytes(),
            Frame::Binary(data) => {
                if eio < 4 {
                    slices[count] = IoSlice::new(V3_BINARY_PREFIX);
                    count += 1;
                }
                data
            }
        };
        slices[count] = IoSlice::new(payload);
        count += 1;
    }
    let mut pending = &mut slices[..count];
    IoSlice::advance_slices(&mut pending, *offset);
    let result = Pin::new(&mut *out).poll_write_vectored(cx, pending);
    let written = match result {
        Poll::Pending => return Poll::Pending,
        Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
        Poll::Ready(Ok(0)) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
        Poll::Ready(Ok(written)) => written,
    };
    let mut done = *offset + written;
    *offset = 0;
    for size in &sizes[..window.len()] {
        if done < *size {
            *offset = done;
            break;
        }
        done -= size;
        *next += 1;
    }
    Poll::Ready(Ok(()))
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::Role;

    use super::*;

    #[test]
    fn frame_heads_use_the_shortest_length_encoding() {
        let head = |opcode, len| FrameHead::new(opcode, len).as_slice().to_vec();
        assert_eq!(head(FrameHead::TEXT, 0), [0x81, 0]);
        assert_eq!(head(FrameHead::TEXT, 125), [0x81, 125]);
        assert_eq!(head(FrameHead::BINARY, 126), [0x82, 126, 0, 126]);
        assert_eq!(head(FrameHead::TEXT, 65_535), [0x81, 126, 0xff, 0xff]);
        assert_eq!(
            head(FrameHead::BINARY, 65_536),
            [0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]
        );
    }

    #[tokio::test]
    async fn a_batch_is_written_as_the_frames_tungstenite_reads_back() {
        // A 64-byte pipe: every frame is written in several partial writes.
        let (mut server, client) = tokio::io::duplex(64);
        let text = "x".repeat(70_000);
        let mut frames = vec![Frame::text("42[\"a\"]"), Frame::text(text.clone())];
        for i in 0..100u8 {
            frames.push(Frame::Binary(bytes::Bytes::from(vec![i; 3])));
        }
        let writing = async {
            write_frames(&mut server, 3, &frames, &mut Progress::default())
                .await
                .unwrap()
        };
        let reading = async {
            let mut reader = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
            let mut next = async || reader.next().await.unwrap().unwrap();
            assert_eq!(next().await, Message::text("42[\"a\"]"));
            assert_eq!(next().await, Message::text(text.clone()));
            for i in 0..100u8 {
                assert_eq!(next().await, Message::binary(vec![4, i, i, i]));
            }
        };
        tokio::join!(writing, reading);
    }
}
