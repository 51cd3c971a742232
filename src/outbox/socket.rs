//! The socket of each accepted TCP connection, so a session can end its
//! connection from outside its actor.
//!
//! actix-http stops polling a response body (our session actor) while its
//! write buffer is full, so a client that stops reading freezes its actor:
//! no timer fires and no message is handled. `shutdown(2)` on the socket
//! wakes the connection's dispatcher with an error, and the dispatcher then
//! drops the actor.
//!
//! Only the descriptor's number is kept, not a duplicate (which would cost a
//! second descriptor per connection), together with the socket's kernel
//! cookie (`SO_COOKIE`, unique for the machine's uptime). Two things keep
//! the number pointing at the connection's own socket:
//! - actix-http 3.20.0's `InnerDispatcher` declares the response body
//!   (`state`, which holds our actor) before the socket (`io`), so the body
//!   is always dropped, and the actor's `stopped` always runs, before the
//!   socket is closed; whether the body ended or the dispatcher failed. The
//!   session hands the number back in `stopped` (`SessionHandle::set_ended`)
//!   under the same lock its users take, so nobody uses it after that.
//!   Cargo.toml pins that version, and `tests/socket_identity.rs` fails if
//!   the order ever changes.
//! - Before every use the cookie is checked: a descriptor that was closed,
//!   or reused for another socket, is left alone and counted in
//!   `roomcast_socket_mismatches_total` (which must stay 0).

use std::any::Any;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use actix_tls::accept::rustls_0_23::TlsStream;
use actix_web::dev::Extensions;
use socket2::SockRef;

/// A connection's socket as captured when it was accepted. Kept in the
/// connection's data; a session takes a [`ConnSocket`] from it.
#[derive(Clone, Copy, Debug)]
pub struct SocketId {
    fd: RawFd,
    cookie: u64,
}

/// The `HttpServer::on_connect` callback: remembers the connection's socket
/// in its connection data.
pub fn capture(connection: &dyn Any, data: &mut Extensions) {
    let fd = if let Some(stream) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
        stream.as_raw_fd()
    } else if let Some(stream) = connection.downcast_ref::<TlsStream<actix_web::rt::net::TcpStream>>() {
        // Cutting the TCP socket under TLS ends the connection the same way.
        stream.get_ref().0.as_raw_fd()
    } else {
        return;
    };
    if let Some(cookie) = cookie(fd) {
        data.insert(SocketId { fd, cookie });
    }
}

/// The kernel's cookie for the socket behind `fd`, if it is one.
fn cookie(fd: RawFd) -> Option<u64> {
    let mut value: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `value`, which is
    // that large; an fd that is not an open socket only makes it fail.
    let status =
        unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_COOKIE, (&raw mut value).cast(), &raw mut len) };
    (status == 0 && len as usize == std::mem::size_of::<u64>()).then_some(value)
}

/// The socket of one session's connection, owned by its `SessionHandle`.
/// Neither `Clone` nor `Copy`: whoever takes it out of the handle's lock
/// uses it once.
#[derive(Debug)]
pub struct ConnSocket(SocketId);

impl ConnSocket {
    pub fn new(id: SocketId) -> ConnSocket {
        ConnSocket(id)
    }

    /// Runs `f` on the socket if the descriptor still names it; returns
    /// whether it did.
    fn with(&self, what: &str, f: impl FnOnce(SockRef<'_>)) -> bool {
        let SocketId { fd, cookie: expected } = self.0;
        if cookie(fd) != Some(expected) {
            crate::metrics::count_socket_mismatch();
            log::error!("descriptor {fd} no longer names its connection's socket; not used to {what}");
            return false;
        }
        // SAFETY: the descriptor is open (the cookie was just read from it)
        // and stays open while this runs: the session's `stopped`, which
        // must come before actix closes it, waits for the lock our caller
        // holds (see the module comment).
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        f(SockRef::from(&fd));
        true
    }

    /// Aborts the TCP connection: what is still buffered is dropped and the
    /// client gets a reset once the socket closes. A graceful FIN would wait
    /// behind data the client is not reading, leaving an orphan socket that
    /// holds its send buffer for minutes.
    pub fn abort(self) -> bool {
        self.with("cut the connection", |socket| {
            let _ = socket.set_linger(Some(Duration::ZERO));
            // ENOTCONN when the peer already went away: nothing left to do.
            let _ = socket.shutdown(std::net::Shutdown::Both);
        })
    }

    /// Called as the session ends, once the close handshake is over (or
    /// its deadline passed). Reading stops, so the connection closes as soon
    /// as what is buffered is sent: actix would otherwise wait up to
    /// `client_disconnect_timeout` for the client to close first (its linger
    /// for unread request bodies), and after a close handshake the server
    /// should close the TCP connection itself (RFC 6455 §7.1.1). And if the
    /// client does not take the last bytes within `deadline`, the kernel
    /// aborts the connection (TCP_USER_TIMEOUT also bounds zero-window
    /// probing), so an ended session never leaves a connection behind.
    pub fn finish(self, deadline: Duration) -> bool {
        self.with("finish the connection", |socket| {
            let _ = socket.set_tcp_user_timeout(Some(deadline));
            let _ = socket.shutdown(std::net::Shutdown::Read);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        (client, listener.accept().unwrap().0)
    }

    #[test]
    fn a_closed_or_reused_descriptor_is_left_alone() {
        let (_client, server) = pair();
        let fd = server.as_raw_fd();
        let id = SocketId { fd, cookie: cookie(fd).expect("a socket has a cookie") };
        drop(server);
        assert!(!ConnSocket::new(id).abort(), "closed");
        // The next socket usually takes the lowest free number: the same
        // one (unless a test running alongside took it first).
        let (_client2, mut server2) = pair();
        let before = crate::metrics::socket_mismatches();
        assert!(!ConnSocket::new(id).abort(), "reused");
        assert!(crate::metrics::socket_mismatches() > before);
        // The new connection was not touched.
        std::io::Write::write_all(&mut server2, b"still open").unwrap();
    }

    #[test]
    fn its_own_socket_is_used() {
        let (_client, server) = pair();
        let fd = server.as_raw_fd();
        assert!(ConnSocket::new(SocketId { fd, cookie: cookie(fd).unwrap() }).finish(Duration::from_secs(1)));
        // The server's read side is shut: it reads end-of-stream at once.
        let mut buf = [0u8; 1];
        assert_eq!(std::io::Read::read(&mut &server, &mut buf).unwrap(), 0);
    }
}
