//! The routes of the control API that steer the server: policy commands, resets, faults
//! and MX hosts up or down. Each reads its JSON body into a policy [`Command`] of the
//! seam the embedded handle uses too, or a server call; `routes` has the router, the
//! routes that read, and those that load a config or a scenario.

use std::net::IpAddr;
use std::time::SystemTime;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};

use super::wire::{Answer, ApiState, Reputation, body, duration, time};
use super::{Api, ApiError};
use crate::chaos::Fault;
use crate::config::Config;
use crate::inspect::{self, Command};
use crate::units::{IpNet, QuotaName, Window};

/// What a blacklist request names: exactly one of an IP (or range) and a sender.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListRequest {
    ip: Option<String>,
    /// A sender address (`a@example.org`) or domain (`example.org`).
    sender: Option<String>,
    /// When the listing ends (RFC 3339).
    until: Option<String>,
    /// How long the listing lasts (`"2h"`); the alternative to `until`.
    #[serde(rename = "for")]
    lasting: Option<String>,
}

enum Target {
    Ip(IpNet),
    Sender(String),
}

impl ListRequest {
    fn target(&self) -> Answer<Target> {
        match (&self.ip, &self.sender) {
            (Some(ip), None) => ip
                .parse::<IpNet>()
                .map(Target::Ip)
                .map_err(|e| ApiError::bad_request(format!("`ip`: {e}"))),
            (None, Some(sender)) if !sender.trim().is_empty() => {
                Ok(Target::Sender(sender.trim().to_owned()))
            }
            _ => Err(ApiError::bad_request(
                "give exactly one of `ip` (an address or CIDR range) and `sender` (an address or domain)",
            )),
        }
    }

    fn until(&self, now: SystemTime) -> Answer<Option<SystemTime>> {
        match (&self.until, &self.lasting) {
            (Some(t), None) => time(t, "until").map(Some),
            (None, Some(d)) => Ok(Some(now + duration(d, "for")?)),
            (None, None) => Ok(None),
            (Some(_), Some(_)) => Err(ApiError::bad_request(
                "give at most one of `until` and `for`",
            )),
        }
    }
}

#[derive(Serialize)]
pub(super) struct Done {
    ok: bool,
}

const DONE: Json<Done> = Json(Done { ok: true });

pub(super) async fn blacklist(State(api): ApiState, bytes: Bytes) -> Answer<Json<Done>> {
    let listing: ListRequest = body(&bytes)?;
    let target = listing.target()?;
    let until = listing.until(api.server.clock().now())?;
    match target {
        Target::Ip(net) => Command::BlacklistIp { net, until },
        Target::Sender(sender) => Command::BlacklistSender { sender, until },
    }
    .apply(&api.server)
    .then_some(())
    .ok_or_else(ApiError::state_unreachable)?;
    Ok(DONE)
}

pub(super) async fn unblacklist(State(api): ApiState, bytes: Bytes) -> Answer<Json<Done>> {
    let listing: ListRequest = body(&bytes)?;
    if listing.until.is_some() || listing.lasting.is_some() {
        return Err(ApiError::bad_request(
            "`until` and `for` belong to /blacklist",
        ));
    }
    let target = listing.target()?;
    match target {
        Target::Ip(net) => Command::UnblacklistIp(net),
        Target::Sender(sender) => Command::UnblacklistSender(sender),
    }
    .apply(&api.server)
    .then_some(())
    .ok_or_else(ApiError::state_unreachable)?;
    Ok(DONE)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Whitelist {
    recipient: String,
    sender: String,
}

pub(super) async fn whitelist(State(api): ApiState, bytes: Bytes) -> Answer<Json<Done>> {
    let w: Whitelist = body(&bytes)?;
    Command::Whitelist {
        recipient: w.recipient,
        sender: w.sender,
    }
    .apply(&api.server)
    .then_some(())
    .ok_or_else(ApiError::state_unreachable)?;
    Ok(DONE)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Complaint {
    ip: IpAddr,
    sender: Option<String>,
}

pub(super) async fn complain(State(api): ApiState, bytes: Bytes) -> Answer<Json<Reputation>> {
    let c: Complaint = body(&bytes)?;
    Command::Complain {
        ip: c.ip,
        sender: c.sender,
    }
    .apply(&api.server)
    .then_some(())
    .ok_or_else(ApiError::state_unreachable)?;
    Ok(Json(Reputation {
        ip: c.ip,
        reputation: inspect::reputation(&api.server, c.ip),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Limit {
    quota: QuotaName,
    window: Window,
    /// The new limit; `null` removes the tier. Required: a body that leaves it out is
    /// refused, as it would otherwise remove the tier by accident.
    #[serde(default, deserialize_with = "given")]
    limit: Option<Option<u64>>,
}

/// A field that may be `null` but must be there: `Some(None)` for `null`, and `None`
/// (the default) only when it is missing.
fn given<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(d).map(Some)
}

pub(super) async fn set_limit(State(api): ApiState, bytes: Bytes) -> Answer<Json<Done>> {
    let l: Limit = body(&bytes)?;
    let Some(limit) = l.limit else {
        return Err(ApiError::bad_request(
            "`limit` is required: a number, or null to remove the tier",
        ));
    };
    Command::SetLimit {
        quota: l.quota,
        window: l.window,
        limit,
    }
    .apply(&api.server)
    .then_some(())
    .ok_or_else(ApiError::state_unreachable)?;
    Ok(DONE)
}

/// What to reset; an empty body resets the store and the policy.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Reset {
    /// Forget messages and events.
    store: Option<bool>,
    /// Start the policy afresh from the config: counters, blocks, runtime listings,
    /// whitelists, complaints and reputation.
    policy: Option<bool>,
    /// Forget quota counters and blocks only.
    counters: Option<bool>,
}

pub(super) async fn reset(State(api): ApiState, bytes: Bytes) -> Answer<Json<Done>> {
    let r: Reset = body(&bytes)?;
    let everything = r.store.is_none() && r.policy.is_none() && r.counters.is_none();
    if everything || r.policy == Some(true) {
        let config = Config::clone(&api.server.config());
        api.server
            .reload(config)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
    } else if r.counters == Some(true) {
        Command::ResetCounters
            .apply(&api.server)
            .then_some(())
            .ok_or_else(ApiError::state_unreachable)?;
    }
    if everything || r.store == Some(true) {
        api.server.store().clear();
    }
    Ok(DONE)
}

pub(super) async fn faults(State(api): ApiState) -> Json<Vec<Fault>> {
    Json(api.server.faults())
}

/// Replaces the faults in force with the list in the body (`[]` clears them).
pub(super) async fn set_faults(State(api): ApiState, bytes: Bytes) -> Answer<Json<Done>> {
    let faults: Vec<Fault> = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("bad JSON body: {e}")))?;
    let names: Vec<&str> = api
        .options
        .listeners
        .iter()
        .map(|(name, _)| name.as_str())
        .collect();
    for (i, fault) in faults.iter().enumerate() {
        fault
            .check()
            .map_err(|e| ApiError::bad_request(format!("fault {i}: {e}")))?;
        // A fault for an MX that does not exist would never fire; with no listeners
        // named (an embedding program's API), any name is taken.
        if let Some(mx) = fault
            .mx
            .iter()
            .find(|mx| !names.is_empty() && !names.contains(&mx.as_str()))
        {
            return Err(ApiError::bad_request(format!(
                "fault {i}: unknown MX `{mx}`; one of: {}",
                names.join(", ")
            )));
        }
    }
    api.server.set_faults(faults);
    Ok(DONE)
}

fn listener(api: &Api, mx: &str) -> Answer<()> {
    if api.options.listeners.iter().any(|(name, _)| name == mx) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("no listener called `{mx}`")))
    }
}

pub(super) async fn mx_down(State(api): ApiState, Path(mx): Path<String>) -> Answer<Json<Done>> {
    listener(&api, &mx)?;
    api.server.set_mx_up(&mx, false);
    Ok(DONE)
}

pub(super) async fn mx_up(State(api): ApiState, Path(mx): Path<String>) -> Answer<Json<Done>> {
    listener(&api, &mx)?;
    api.server.set_mx_up(&mx, true);
    Ok(DONE)
}
