//! What is known about one client IP, read in one round trip and kept for the rest of
//! the stage: its API listings, the config listings lifted, its record (first sight,
//! random listing), its complaints and the blocks of its two quotas. A stage reads these
//! in several places (blacklists, reputation, warm-up, `Connection denied`); one
//! pipeline answers them all. Any write forgets the view.

use std::net::IpAddr;

use super::Redis;
use crate::policy::state::{BlockOf, QuotaKey};
use crate::units::QuotaName;

/// One IP's state, as read at one moment of a stage.
#[derive(Debug, Clone, Default)]
pub(super) struct IpView {
    /// The API's listings of IPs and ranges: (net, end; 0 for good).
    pub api_nets: Vec<(String, u64)>,
    /// The config's listings lifted through the API.
    pub lifted: Vec<String>,
    pub first: Option<u64>,
    /// When its random listing ends (0: none).
    pub drawn: Option<u64>,
    pub complaints: Vec<u64>,
    /// (end, refusals) of the blocks of `ip_messages` and `ip_connections`.
    blocks: [(Option<u64>, Option<u64>); 2],
}

impl IpView {
    /// The block of `key` at `now`, when the view holds that key.
    pub fn block_of(&self, key: QuotaKey<'_>, now: u64) -> Option<Option<BlockOf>> {
        let slot = match key.name {
            QuotaName::IpMessages => 0,
            QuotaName::IpConnections => 1,
            _ => return None,
        };
        let (until, refused) = self.blocks[slot];
        Some(until.filter(|u| *u > now).map(|until| BlockOf {
            until,
            refused: refused.unwrap_or(0),
        }))
    }
}

type Fetched = (
    Vec<(String, u64)>,
    Vec<String>,
    (Option<u64>, Option<u64>),
    Vec<u64>,
    (Option<u64>, Option<u64>),
    (Option<u64>, Option<u64>),
);

impl Redis {
    /// The view of `ip` in this stage: kept, or read now.
    pub(super) fn ip_view(&self, ip: IpAddr) -> IpView {
        let stage = self.health.stage();
        if let Some((s, i, view)) = self.view.borrow().as_ref()
            && *s == stage
            && *i == ip
        {
            return view.clone();
        }
        let counter = |name: QuotaName| self.key(format_args!("q:{}:{ip}", name.name()));
        let fetched: Option<Fetched> = self.call("ip_view", |conn| {
            redis::pipe()
                .cmd("HGETALL")
                .arg(self.key(format_args!("bl:ip")))
                .cmd("SMEMBERS")
                .arg(self.key(format_args!("lifted:ip")))
                .cmd("HMGET")
                .arg(self.ip_key(ip))
                .arg("first")
                .arg("ru")
                .cmd("LRANGE")
                .arg(self.key(format_args!("ipc:{ip}")))
                .arg(0)
                .arg(-1)
                .cmd("HMGET")
                .arg(counter(QuotaName::IpMessages))
                .arg("bu")
                .arg("br")
                .cmd("HMGET")
                .arg(counter(QuotaName::IpConnections))
                .arg("bu")
                .arg("br")
                .query(conn)
                .map(Some)
        });
        let Some((api_nets, lifted, (first, drawn), complaints, messages, connections)) = fetched
        else {
            return IpView::default();
        };
        let view = IpView {
            api_nets,
            lifted,
            first,
            drawn,
            complaints,
            blocks: [messages, connections],
        };
        *self.view.borrow_mut() = Some((stage, ip, view.clone()));
        view
    }

    /// Something was written: the view may be out of date.
    pub(super) fn forget_view(&self) {
        self.view.borrow_mut().take();
    }
}
