//! Table-driven tests of the policy: one row per rule and edge.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use super::*;
use crate::clock::parse_rfc3339;
use crate::config::Config;
use crate::reply::ReplyKind::{self, *};

mod content;
mod lists;
mod memory;
mod properties;
mod protocol;
mod quotas;
mod reputation;

/// Monday 2 June 2025, 09:00 in China.
fn t0() -> SystemTime {
    parse_rfc3339("2025-06-02T01:00:00Z").expect("time")
}

fn at(secs: u64) -> SystemTime {
    t0() + Duration::from_secs(secs)
}

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// A policy with every limit off, then `toml` on top.
fn policy(toml: &str) -> Policy {
    let base = Config::default().no_limits();
    let extra = Config::from_toml(toml).expect("test config");
    let mut config = base;
    if toml.contains("[quotas") || toml.contains("deny_after") {
        config.quotas = extra.quotas;
    }
    if toml.contains("[reputation") {
        config.reputation = extra.reputation;
    }
    if toml.contains("[content") {
        config.content = extra.content;
    }
    if toml.contains("[memory") {
        config.memory = extra.memory;
    }
    if toml.contains("[stages") {
        config.stages = extra.stages;
    }
    config.blacklist = extra.blacklist;
    config.mailboxes = extra.mailboxes;
    config.limits = extra.limits;
    config.seed = extra.seed;
    Policy::new(&config).expect("valid config")
}

/// One whole message; the first refusal, or the final acceptance.
fn send(p: &mut Policy, from_ip: IpAddr, from: &str, rcpts: &[&str], now: SystemTime) -> Decision {
    send_to(p, from_ip, from, rcpts, now).0
}

/// One whole message; the outcome and the recipients accepted at RCPT.
fn send_to(
    p: &mut Policy,
    from_ip: IpAddr,
    from: &str,
    rcpts: &[&str],
    now: SystemTime,
) -> (Decision, Vec<String>) {
    let connect = p.connect(from_ip, now);
    let mut accepted = Vec::new();
    let outcome = transaction(p, from_ip, from, rcpts, now, &connect, &mut accepted);
    p.disconnect(from_ip);
    (outcome, accepted)
}

fn transaction(
    p: &mut Policy,
    from_ip: IpAddr,
    from: &str,
    rcpts: &[&str],
    now: SystemTime,
    connect: &Connect,
    accepted: &mut Vec<String>,
) -> Decision {
    if !connect.decision.is_accept() {
        return connect.decision.clone();
    }
    let deferred = |stage| connect.deferred.iter().find(|d| d.stage == stage).cloned();
    let base = Facts::new(from_ip);
    if let Some(d) = deferred(Stage::Helo) {
        return d;
    }
    let d = p.check(Stage::Helo, &base, now);
    if !d.is_accept() {
        return d;
    }
    if let Some(d) = deferred(Stage::Mail) {
        return d;
    }
    let d = p.check(Stage::Mail, &base.from(from), now);
    if !d.is_accept() {
        return d;
    }
    let mut last = d;
    for rcpt in rcpts {
        if let Some(d) = deferred(Stage::Rcpt) {
            return d;
        }
        let d = p.check(
            Stage::Rcpt,
            &base.from(from).rcpts(accepted).rcpt(rcpt),
            now,
        );
        if d.is_accept() {
            if !contains_address(accepted, rcpt) {
                accepted.push((*rcpt).to_owned());
            }
        } else {
            last = d;
        }
    }
    if accepted.is_empty() {
        return last;
    }
    if let Some(d) = deferred(Stage::EndOfData) {
        return d;
    }
    let body = format!("Subject: hi\r\n\r\nHello {from}");
    p.end_of_data(
        &base.from(from).rcpts(accepted).message(body.as_bytes()),
        now,
    )
}

fn reply(d: &Decision) -> Option<ReplyKind> {
    d.reply()
}

const MINUTE_3: &str = "[quotas.ip_messages]\nstage = \"end_of_data\"\nreply = \"ip_frequency\"\nminute = { limit = 3, block = \"10m\" }\n";
