//! A second descriptor for each accepted TCP connection, so a session can be
//! cut off from outside its actor.
//!
//! actix-http stops polling a response body (our session actor) while its
//! write buffer is full, so a client that stops reading freezes its actor:
//! no timer fires and no message is handled. `shutdown(2)` on the socket
//! wakes the connection's dispatcher with an error, and the dispatcher then
//! drops the actor. The duplicate is owned here, so the descriptor number
//! can never be reused by another connection while we hold it.

use std::any::Any;
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsFd;
use std::sync::Arc;

use actix_web::dev::Extensions;

#[derive(Clone, Debug)]
pub struct ConnSocket(Arc<TcpStream>);

impl ConnSocket {
    /// The `HttpServer::on_connect` callback: remembers the connection's
    /// socket in its connection data.
    pub fn capture(connection: &dyn Any, data: &mut Extensions) {
        let Some(stream) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() else {
            return;
        };
        match stream.as_fd().try_clone_to_owned() {
            Ok(fd) => {
                data.insert(ConnSocket(Arc::new(TcpStream::from(fd))));
            }
            Err(e) => log::warn!("cannot duplicate a connection's socket: {e}"),
        }
    }

    /// Makes the connection's next read return end-of-file. actix lingers
    /// after a response whose request body was not read to the end (every
    /// WebSocket), waiting up to `client_disconnect_timeout` for the client
    /// to close first; after a close handshake the server should close the
    /// TCP connection itself (RFC 6455 §7.1.1). End-of-file ends the linger:
    /// what is buffered (the close frame) is flushed, then FIN is sent.
    pub fn stop_reading(&self) {
        let _ = self.0.shutdown(Shutdown::Read);
    }

    /// Aborts the TCP connection: what is still buffered is dropped and the
    /// client gets a reset once the last descriptor closes. A graceful FIN
    /// would wait behind data the client is not reading, leaving an orphan
    /// socket that holds its send buffer for minutes.
    pub fn abort(&self) {
        let socket = socket2::SockRef::from(&*self.0);
        let _ = socket.set_linger(Some(std::time::Duration::ZERO));
        // ENOTCONN when the peer already went away: nothing left to do.
        let _ = self.0.shutdown(Shutdown::Both);
    }
}
