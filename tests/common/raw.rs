//! A WebSocket client that writes frames byte by byte: for malformed
//! input, fragments, oversized headers, and clients that stop reading.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::DEADLINE;

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A frame as a client sends it (masked unless `masked` is false).
pub fn frame(fin: bool, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        len @ 0..=125 => out.push(mask_bit | len as u8),
        len @ 126..=0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    if masked {
        out.extend_from_slice(&MASK);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// A frame the server sent.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == 8 && self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.payload).expect("UTF-8")
    }
}

pub struct RawConn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

/// The status and headers of a refused handshake.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub head: String,
}

impl RawConn {
    pub async fn upgrade(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<RawConn, Refused> {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Self::handshake(stream, addr, path, headers).await
    }

    /// Like `upgrade`, from the source address `source` (any 127.x.y.z
    /// reaches a server on 127.0.0.1).
    pub async fn upgrade_from(source: std::net::IpAddr, addr: SocketAddr, path: &str) -> Result<RawConn, Refused> {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.bind(SocketAddr::new(source, 0)).expect("bind the source address");
        let stream = socket.connect(addr).await.expect("connect");
        Self::handshake(stream, addr, path, &[]).await
    }

    /// Sends `request` as the whole handshake and returns the status line
    /// and headers of the answer.
    pub async fn handshake_text(addr: SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut head = Vec::new();
        let mut chunk = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tokio::time::timeout(DEADLINE, stream.read(&mut chunk)).await.expect("an answer").unwrap_or(0);
            if n == 0 {
                break;
            }
            head.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8_lossy(&head).to_string()
    }

    /// Closes the TCP connection with a reset (SO_LINGER 0), as a client
    /// that crashed or a middlebox would.
    pub fn reset(self) {
        let _ = socket2::SockRef::from(&self.stream).set_linger(Some(Duration::ZERO));
    }

    /// Like `upgrade`, with a small receive buffer, for clients that stop
    /// reading: the server's writes back up sooner.
    pub async fn upgrade_small_buffer(addr: SocketAddr, path: &str) -> RawConn {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let stream = socket.connect(addr).await.expect("connect");
        Self::handshake(stream, addr, path, &[]).await.expect("upgrade")
    }

    async fn handshake(
        mut stream: TcpStream,
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<RawConn, Refused> {
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.expect("write handshake");
        let mut conn = RawConn { stream, buf: Vec::new() };
        let head_end = loop {
            if let Some(end) = conn.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            assert!(conn.fill().await, "connection closed during the handshake");
        };
        let head = String::from_utf8_lossy(&conn.buf[..head_end]).to_string();
        conn.buf.drain(..head_end);
        let status: u16 = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status");
        if status == 101 { Ok(conn) } else { Err(Refused { status, head }) }
    }

    /// Reads more bytes; false at EOF.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout(DEADLINE, self.stream.read(&mut chunk))
            .await
            .expect("nothing arrived within the deadline")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    pub async fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        self.send_raw(&frame(fin, opcode, payload, true)).await;
    }

    /// The next frame, or `None` at EOF.
    pub async fn read_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// Reads up to the close frame (skipping pings and data); its code.
    pub async fn read_close(&mut self) -> Option<u16> {
        loop {
            let frame = self.read_frame().await?;
            if frame.opcode == 8 {
                return frame.close_code().or(Some(1005));
            }
        }
    }

    /// Reads until the server ends the TCP connection (EOF or reset), and
    /// returns the close code seen on the way, if any.
    pub async fn read_to_end(&mut self, within: Duration) -> Option<u16> {
        let mut code = None;
        let deadline = tokio::time::Instant::now() + within;
        let mut chunk = vec![0u8; 65536];
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                if frame.opcode == 8 {
                    code = frame.close_code().or(Some(1005));
                }
                continue;
            }
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => panic!("the server did not end the connection within {within:?}"),
                Ok(Ok(0)) | Ok(Err(_)) => return code,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// Reads frames from `reader` up to the close frame; its code, or `None` if
/// the connection ended (or was reset) first.
pub async fn read_close_from(reader: &mut (impl tokio::io::AsyncRead + Unpin)) -> Option<u16> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 65536];
    loop {
        while let Some((frame, used)) = parse_server_frame(&buf) {
            buf.drain(..used);
            if frame.opcode == 8 {
                return frame.close_code().or(Some(1005));
            }
        }
        match tokio::time::timeout(DEADLINE, reader.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            Ok(_) => return None,
            Err(_) => panic!("no close frame within {DEADLINE:?}"),
        }
    }
}

fn parse_server_frame(buf: &[u8]) -> Option<(Frame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let (len, header) = match buf[1] & 0x7F {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => (u64::from_be_bytes(buf[2..10].try_into().ok()?) as usize, 10),
        126 | 127 => return None,
        len => (len as usize, 2),
    };
    assert_eq!(buf[1] & 0x80, 0, "server frames are not masked");
    if buf.len() < header + len {
        return None;
    }
    let frame = Frame { fin: buf[0] & 0x80 != 0, opcode: buf[0] & 0x0F, payload: buf[header..header + len].to_vec() };
    Some((frame, header + len))
}
