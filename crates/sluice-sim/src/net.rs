//! The listener every HTTP server in Sluice serves on (the API and the simulator): one place
//! for the socket options a streaming server needs.

use axum::serve::{ListenerExt, TapIo};
use tokio::net::{TcpListener, TcpStream};

/// `listener` with `TCP_NODELAY` on every connection it accepts. A stream's events are small
/// writes in quick succession; with Nagle's algorithm on, each waits for the client's
/// delayed ACK of the one before (up to 40 ms on Linux), which is most of a stream's latency.
///
/// The type is named, not `impl Listener`, so axum's connect info (the client's address,
/// which the API reads) is available on it.
pub fn no_delay(listener: TcpListener) -> TapIo<TcpListener, fn(&mut TcpStream)> {
    listener.tap_io(set_no_delay)
}

fn set_no_delay(stream: &mut TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY on a connection");
    }
}
