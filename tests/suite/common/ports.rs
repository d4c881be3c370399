//! Ports for cases about a provider that cannot be reached. A port found free and then
//! released can be taken by another test's server before the case connects (and answer it);
//! a socket bound and never listening holds the port and refuses every connection.
//!
//! Also free ports for servers of a test's own that are not ours to bind (a RabbitMQ or
//! PostgreSQL node, another process that must bind the port itself).

/// A port on 127.0.0.1 that refuses connections for as long as this is held.
pub struct RefusedPort {
    /// Bound, never listening: it holds the port.
    socket: tokio::net::TcpSocket,
    pub port: u16,
}

impl RefusedPort {
    pub fn new() -> RefusedPort {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = socket.local_addr().unwrap().port();
        RefusedPort { socket, port }
    }

    /// Starts listening on the port, which then accepts connections: a provider coming back
    /// where it was, without the port ever being free for another test to take.
    pub fn listen(self) -> tokio::net::TcpListener {
        self.socket.listen(1024).unwrap()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// A free TCP port on 127.0.0.1 within `range`, for a server another process binds (a
/// RabbitMQ distribution port must leave room for the CLI's ports, 10000 above it).
pub fn free_port(range: std::ops::Range<u16>) -> u16 {
    for _ in 0..200 {
        let port = range.start + rand::random::<u16>() % (range.end - range.start);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::TcpListener::bind(("0.0.0.0", port)).is_ok()
        {
            return port;
        }
    }
    panic!("no free port in {range:?}");
}
