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
//! second descriptor per connection). That is safe because of one ordering:
//! actix-http's `InnerDispatcher` declares the response body (`state`, which
//! holds our actor) before the socket (`io`), so the body is always dropped,
//! and the actor's `stopped` always runs, before the socket is closed;
//! whether the body ended or the dispatcher failed. The session hands the
//! number back in `stopped` (see `SessionHandle::set_ended`), under the same
//! lock its users take, so nobody uses it once it could name another socket.

use std::any::Any;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use actix_tls::accept::rustls_0_23::TlsStream;
use actix_web::dev::Extensions;
use socket2::SockRef;

#[derive(Clone, Copy, Debug)]
pub struct ConnSocket(RawFd);

impl ConnSocket {
    /// The `HttpServer::on_connect` callback: remembers the connection's
    /// socket in its connection data.
    pub fn capture(connection: &dyn Any, data: &mut Extensions) {
        let fd = if let Some(stream) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
            stream.as_raw_fd()
        } else if let Some(stream) = connection.downcast_ref::<TlsStream<actix_web::rt::net::TcpStream>>() {
            // Cutting the TCP socket under TLS ends the connection the same way.
            stream.get_ref().0.as_raw_fd()
        } else {
            return;
        };
        data.insert(ConnSocket(fd));
    }

    fn with<R>(self, f: impl FnOnce(SockRef<'_>) -> R) -> R {
        // SAFETY: a `ConnSocket` is used only while its session is alive
        // (see the module comment), and the connection's socket stays open
        // at least that long.
        let fd = unsafe { BorrowedFd::borrow_raw(self.0) };
        f(SockRef::from(&fd))
    }

    /// Aborts the TCP connection: what is still buffered is dropped and the
    /// client gets a reset once the socket closes. A graceful FIN would wait
    /// behind data the client is not reading, leaving an orphan socket that
    /// holds its send buffer for minutes.
    pub fn abort(self) {
        self.with(|socket| {
            let _ = socket.set_linger(Some(Duration::ZERO));
            // ENOTCONN when the peer already went away: nothing left to do.
            let _ = socket.shutdown(std::net::Shutdown::Both);
        });
    }

    /// Called as the session ends. Reading stops, so the connection closes
    /// as soon as what is buffered is sent: actix would otherwise wait up to
    /// `client_disconnect_timeout` for the client to close first (its linger
    /// for unread request bodies), and after a close handshake the server
    /// should close the TCP connection itself (RFC 6455 §7.1.1). And if the
    /// client does not take the last bytes within `deadline`, the kernel
    /// aborts the connection (TCP_USER_TIMEOUT also bounds zero-window
    /// probing), so an ended session never leaves a connection behind.
    pub fn finish(self, deadline: Duration) {
        self.with(|socket| {
            let _ = socket.set_tcp_user_timeout(Some(deadline));
            let _ = socket.shutdown(std::net::Shutdown::Read);
        });
    }
}
