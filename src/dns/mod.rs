//! An authoritative DNS server for the simulated fleet (feature `dns`), over UDP and TCP
//! on one address, so that a sender that looks up MX records itself (an MTA, a library
//! with a resolver) can be pointed at qqmx as it is pointed at QQ.
//!
//! It answers from the zone the authentication layer reads (`[dns]` in the config): MX
//! records of qq.com, foxmail.com, vip.qq.com and the hosted domains, the A or
//! AAAA record of each MX host (`mx1.qq.com.` ... one per listener, with the address the
//! listener is bound to), SPF, DKIM and DMARC TXT records, PTR records, and SOA and NS
//! records naming `ns1.qq.com.`, this server. A name that is not in the zone does not
//! exist. An answer too big for a UDP datagram is truncated (TC) and the resolver asks
//! again over TCP. Taking an MX host down leaves its records in place: its port refuses
//! connections, and a sender moves to the next MX as it would on the real fleet.
//!
//! The records follow the config in force: a config loaded through the control API
//! changes the answers from the next query on. The wire format is hickory's.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::Catalog;
use tracing::{info, warn};

use crate::config::Config;
use crate::server::Server;

mod zone;

/// How long a TCP connection may stay silent before it is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// Answers a TCP connection may have queued for sending.
const TCP_QUEUE: usize = 32;

/// How many times a free port is sought for UDP and TCP together when the port asked for
/// is 0 (any), in case the TCP port of the UDP port found is taken.
const PORT_ATTEMPTS: usize = 16;

/// The DNS server's sockets, bound and not yet serving.
#[derive(Debug)]
pub struct DnsSockets {
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
    addr: SocketAddr,
}

impl DnsSockets {
    /// Binds UDP and TCP on `addr`, the same port for both; port 0 takes a port free for
    /// both.
    ///
    /// # Errors
    ///
    /// When either socket cannot be bound.
    pub fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let udp = std::net::UdpSocket::bind(addr)?;
            let bound = udp.local_addr()?;
            match std::net::TcpListener::bind(bound) {
                Ok(tcp) => {
                    udp.set_nonblocking(true)?;
                    tcp.set_nonblocking(true)?;
                    return Ok(Self {
                        udp,
                        tcp,
                        addr: bound,
                    });
                }
                Err(e)
                    if addr.port() == 0
                        && attempt < PORT_ATTEMPTS
                        && e.kind() == std::io::ErrorKind::AddrInUse => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The address both sockets are bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves DNS for `server`, whose listeners (MX host name, bound address) are
    /// `listeners`, until `shutdown` completes.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub async fn serve(
        self,
        server: Server,
        listeners: Vec<(String, SocketAddr)>,
        shutdown: impl Future<Output = ()>,
    ) {
        let addr = self.addr;
        let handler = Fleet {
            server,
            listeners,
            dns: addr.ip(),
            catalog: Mutex::new(None),
        };
        let mut dns = hickory_server::Server::new(handler);
        match (
            tokio::net::UdpSocket::from_std(self.udp),
            tokio::net::TcpListener::from_std(self.tcp),
        ) {
            (Ok(udp), Ok(tcp)) => {
                dns.register_socket(udp);
                dns.register_listener(tcp, TCP_IDLE, TCP_QUEUE);
            }
            (Err(e), _) | (_, Err(e)) => {
                warn!(%addr, error = %e, "DNS cannot serve");
                return;
            }
        }
        info!(%addr, "DNS answering");
        shutdown.await;
        if let Err(e) = dns.shutdown_gracefully().await {
            warn!(%addr, error = %e, "DNS stopped with an error");
        }
    }
}

/// The request handler: the catalog of the config in force, made again when the config
/// changes.
struct Fleet {
    server: Server,
    listeners: Vec<(String, SocketAddr)>,
    dns: IpAddr,
    catalog: Mutex<Option<(Arc<Config>, Arc<Catalog>)>>,
}

impl Fleet {
    fn catalog(&self) -> Arc<Catalog> {
        let config = self.server.config();
        let mut cached = self.catalog.lock().unwrap_or_else(PoisonError::into_inner);
        match cached.as_ref() {
            Some((made_for, catalog)) if Arc::ptr_eq(made_for, &config) => catalog.clone(),
            _ => {
                let catalog = Arc::new(zone::catalog(&config, &self.listeners, self.dns));
                *cached = Some((config, catalog.clone()));
                catalog
            }
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Fleet {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        let catalog = self.catalog();
        catalog
            .handle_request::<R, T>(request, response_handle)
            .await
    }
}

/// The MX host name the listener called `mx` answers DNS as: `mx1` is `mx1.qq.com.`.
pub fn mx_host(mx: &str) -> String {
    zone::mx_host(mx)
}
