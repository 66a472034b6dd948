//! Where the state's keys are: the Redis `state.url` names, or the node of a Redis
//! Cluster that answered a call with a redirection. Every key of a prefix is in one
//! slot (the prefix is a hash tag), so one node holds them all: qqmx may be pointed at
//! any node of a Cluster, and follows the Cluster when the slot moves (a failover, a
//! resharding). A call answered `MOVED` fails (its stage is answered `451`, its writes
//! stay held) and the next one goes to the node named, with the same database and
//! credentials. `ASK` (a slot in the middle of a migration) is not
//! followed: the calls fail until the migration ends and the node answers `MOVED`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use redis::{Client, ConnectionAddr, ConnectionInfo, RedisError, ServerErrorKind};

/// The node the state's calls go to.
#[derive(Debug)]
pub(super) struct Endpoint {
    info: Mutex<ConnectionInfo>,
    /// How many redirections were followed: a connection made before the last is to
    /// the wrong node.
    moves: AtomicU64,
}

impl Endpoint {
    pub fn new(client: &Client) -> Self {
        Self {
            info: Mutex::new(client.get_connection_info().clone()),
            moves: AtomicU64::new(0),
        }
    }

    /// Where to connect now.
    pub fn info(&self) -> ConnectionInfo {
        self.info
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A client for where to connect now.
    pub fn client(&self) -> redis::RedisResult<Client> {
        Client::open(self.info())
    }

    /// How many redirections were followed so far.
    pub fn moves(&self) -> u64 {
        self.moves.load(Ordering::Acquire)
    }

    /// Follows the `MOVED` redirection `e` is, if it is one and the state is reached
    /// over TCP: the node it names is where the next calls go. The node, when
    /// followed.
    pub fn follow(&self, e: &RedisError) -> Option<String> {
        if !matches!(e.kind(), redis::ErrorKind::Server(ServerErrorKind::Moved)) {
            return None;
        }
        // The node as `host:port` (an IPv6 host in brackets), and the slot.
        let (node, _slot) = e.redirect_node()?;
        let (host, port) = node.rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port: u16 = port.parse().ok()?;
        let mut info = self.info.lock().unwrap_or_else(PoisonError::into_inner);
        let addr = match info.addr() {
            ConnectionAddr::Tcp(..) => ConnectionAddr::Tcp(host.to_owned(), port),
            _ => return None,
        };
        if *info.addr() == addr {
            return None;
        }
        *info = info.clone().set_addr(addr);
        self.moves.fetch_add(1, Ordering::AcqRel);
        Some(node.to_owned())
    }
}

/// Whether `e` is a redirection to another node (its writes are not refused: they go
/// to that node).
pub(super) fn redirected(e: &RedisError) -> bool {
    matches!(
        e.kind(),
        redis::ErrorKind::Server(ServerErrorKind::Moved | ServerErrorKind::Ask)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error a node's reply `line` is.
    fn error(line: &str) -> RedisError {
        match redis::parse_redis_value(format!("{line}\r\n").as_bytes()) {
            Ok(redis::Value::ServerError(e)) => e.into(),
            other => panic!("not an error reply: {other:?}"),
        }
    }

    fn addr(endpoint: &Endpoint) -> ConnectionAddr {
        endpoint.info().addr().clone()
    }

    #[test]
    fn a_moved_reply_is_followed_once_and_nothing_else_is() {
        let client = Client::open("redis://:secret@127.0.0.1:7001/0").expect("a URL");
        let endpoint = Endpoint::new(&client);
        for line in [
            "-ASK 6416 127.0.0.1:7002",
            "-ERR unknown command",
            "-LOADING",
        ] {
            assert_eq!(endpoint.follow(&error(line)), None, "{line}");
        }
        assert_eq!(endpoint.moves(), 0);

        let moved = error("-MOVED 6416 127.0.0.1:7002");
        assert!(redirected(&moved));
        assert_eq!(endpoint.follow(&moved).as_deref(), Some("127.0.0.1:7002"));
        assert_eq!(
            addr(&endpoint),
            ConnectionAddr::Tcp("127.0.0.1".into(), 7002)
        );
        assert_eq!(endpoint.moves(), 1);
        // The credentials go with it.
        assert_eq!(endpoint.info().redis_settings().password(), Some("secret"));
        // Told again where it already is: nothing moves.
        assert_eq!(endpoint.follow(&moved), None);
        assert_eq!(endpoint.moves(), 1);

        assert!(endpoint.follow(&error("-MOVED 6416 [::1]:7003")).is_some());
        assert_eq!(addr(&endpoint), ConnectionAddr::Tcp("::1".into(), 7003));
        assert!(!redirected(&error("-ERR wrong")));
    }
}
