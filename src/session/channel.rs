//! What a session runs over: plain text, which STARTTLS upgrades, or TLS, inside which
//! STARTTLS is refused (`454 TLS currently active`, as QQ answers). The channel is a
//! type parameter of the drive, not a flag: only a plain-text channel with a TLS
//! acceptor yields a [`StartTls`], and only a [`StartTls`] opens the handshake, so an
//! upgrade can be asked for neither inside TLS nor where TLS is off.

use std::convert::Infallible;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::{Conn, Session};
use crate::event::{CloseReason, EventKind};
use crate::reply::ReplyKind;

/// A channel a session can be driven over.
pub(super) trait Channel {
    /// What STARTTLS yields on this channel.
    type Upgrade;

    /// The upgrade STARTTLS asks for with the server's `acceptor`, or the refusal.
    fn starttls(acceptor: Option<&TlsAcceptor>) -> Result<Self::Upgrade, ReplyKind>;
}

/// Plain text, before STARTTLS.
pub(super) enum Plain {}

/// Inside TLS.
pub(super) enum Tls {}

/// The right to start TLS, with the acceptor to start it with: only a plain-text
/// channel gives one.
pub(super) struct StartTls(TlsAcceptor);

impl Channel for Plain {
    type Upgrade = StartTls;

    fn starttls(acceptor: Option<&TlsAcceptor>) -> Result<StartTls, ReplyKind> {
        acceptor
            .cloned()
            .map(StartTls)
            .ok_or(ReplyKind::TlsUnavailable)
    }
}

impl Channel for Tls {
    type Upgrade = Infallible;

    fn starttls(_: Option<&TlsAcceptor>) -> Result<Infallible, ReplyKind> {
        Err(ReplyKind::TlsActive)
    }
}

impl Session {
    /// Runs the TLS handshake STARTTLS announced, then drives the session inside TLS.
    pub(super) async fn upgrade<S>(
        &mut self,
        mut stream: S,
        StartTls(acceptor): StartTls,
        shutdown: &mut watch::Receiver<bool>,
    ) where
        S: Conn,
    {
        if self.tls_fault(&mut stream).await {
            return;
        }
        let idle = self.engine.config.limits.idle_timeout;
        let handshake = tokio::time::timeout(idle, acceptor.accept(stream)).await;
        match handshake {
            Ok(Ok(mut tls)) => {
                self.awaiting_since = Instant::now();
                self.tls = true;
                self.helo = None;
                self.tx = None;
                self.record(EventKind::TlsStarted);
                // Inside TLS, STARTTLS yields no upgrade: the drive can only end.
                let None = self.drive::<_, Tls>(&mut tls, shutdown).await;
            }
            Ok(Err(e)) => {
                self.record(EventKind::TlsFailed {
                    error: e.to_string(),
                });
                self.closed(CloseReason::TlsFailed);
            }
            Err(_) => {
                self.record(EventKind::TlsFailed {
                    error: "handshake timed out".into(),
                });
                self.closed(CloseReason::TlsTimeout);
            }
        }
    }
}
