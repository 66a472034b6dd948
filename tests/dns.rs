//! qqmx's DNS server asked by real resolvers, record by record: hickory's resolver (what
//! mail-auth and many Rust senders use), a query made with hickory's message types for
//! what a resolver hides (the truncation bit, the authoritative flag), `dig` from Debian
//! and dnspython. `dig` and dnspython are installed by scripts/test.sh and `.ci/run`; set
//! QQMX_SKIP_DIG_TEST=1 or QQMX_SKIP_DNSPYTHON_TEST=1 to skip them on a machine without.
#![cfg(all(feature = "dns", feature = "control"))]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use qqmx::sidecar::{Sidecar, SidecarOptions};
use qqmx::{Clock, Config, QqMx};

#[cfg(feature = "cli")]
mod common;

/// The DKIM key of the sender's domain: longer than one DNS character-string (255 bytes),
/// as a 2048-bit RSA key is.
fn dkim_key() -> String {
    format!(
        "v=DKIM1; k=rsa; p={}",
        "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA".repeat(9)
    )
}

/// A TXT record too big for a UDP answer of 1232 bytes (what resolvers advertise), so
/// resolvers must ask again over TCP.
fn big_txt() -> String {
    "v=spf1 ".to_owned() + &"ip4:198.51.100.1 ".repeat(200) + "-all"
}

/// The sender's domain and its records, a hosted domain, and mx1 to mx3 on addresses of
/// their own, mxbiz1 on IPv6.
fn config(dns: SocketAddr) -> Config {
    let mut config = Config::from_toml(
        r#"
        [listeners.mx1]
        addr = "127.0.0.11:0"
        [listeners.mx2]
        addr = "127.0.0.12:0"
        [listeners.mx3]
        addr = "127.0.0.13:0"
        [listeners.mxbiz1]
        addr = "[::1]:0"
        [mailboxes]
        hosted_domains = ["corp.example"]
        "#,
    )
    .expect("a valid config");
    config.dns.listen = Some(dns);
    config
        .dns
        .txt("example.com", "v=spf1 ip4:127.0.0.2 -all")
        .txt("_dmarc.example.com", "v=DMARC1; p=reject")
        .txt("s1._domainkey.example.com", &dkim_key())
        .txt("big.example.com", &big_txt())
        .ptr(IpAddr::from([127, 0, 0, 2]), "mail.example.com");
    config
}

async fn sidecar() -> Sidecar {
    let options = SidecarOptions::default()
        .api(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .clock(Clock::manual(
            UNIX_EPOCH + Duration::from_secs(1_750_000_000),
        ));
    Sidecar::start(config(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))), options)
        .await
        .expect("starts")
}

/// A resolver that asks only `dns`, over UDP and then TCP, caches nothing and does not
/// read /etc/hosts.
fn resolver(dns: SocketAddr) -> TokioResolver {
    let mut udp = ConnectionConfig::udp();
    udp.port = dns.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = dns.port();
    let server = NameServerConfig::new(dns.ip(), true, vec![udp, tcp]);
    let mut options = ResolverOpts::default();
    options.cache_size = 0;
    options.edns0 = true;
    options.use_hosts_file = ResolveHosts::Never;
    TokioResolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![server]),
        TokioRuntimeProvider::default(),
    )
    .with_options(options)
    .build()
    .expect("a resolver")
}

fn name(text: &str) -> Name {
    Name::from_ascii(text).expect("a name")
}

fn addr_of(sidecar: &Sidecar, mx: &str) -> SocketAddr {
    sidecar
        .listeners()
        .iter()
        .find(|(name, _)| name == mx)
        .map(|(_, addr)| *addr)
        .expect("the listener runs")
}

async fn mx(resolver: &TokioResolver, domain: &str) -> Vec<(u16, String)> {
    let lookup = resolver.mx_lookup(name(domain)).await.expect("MX records");
    let mut records: Vec<(u16, String)> = lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
            _ => None,
        })
        .collect();
    records.sort();
    records
}

async fn txt(resolver: &TokioResolver, owner: &str) -> Vec<String> {
    let lookup = resolver.txt_lookup(name(owner)).await.expect("TXT records");
    lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(txt) => Some(
                txt.txt_data
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

async fn addresses(resolver: &TokioResolver, host: &str, kind: RecordType) -> Vec<IpAddr> {
    match resolver.lookup(name(host), kind).await {
        Ok(lookup) => lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
                _ => None,
            })
            .collect(),
        Err(e) if e.is_no_records_found() && !e.is_nx_domain() => Vec::new(),
        Err(e) => panic!("{host} {kind}: {e}"),
    }
}

/// One query over UDP without EDNS (so the answer may hold 512 bytes), as hickory's
/// message types write and read it: the whole answer, flags included.
async fn raw_udp(dns: SocketAddr, owner: &str, kind: RecordType) -> Message {
    let mut query = Message::new(4242, MessageType::Query, OpCode::Query);
    query.add_query(Query::query(name(owner), kind));
    query.metadata.recursion_desired = true;
    let socket = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("a UDP socket");
    socket
        .send_to(&query.to_vec().expect("encodes"), dns)
        .await
        .expect("sent");
    let mut buffer = vec![0; 65_535];
    let (len, _) = tokio::time::timeout(Duration::from_secs(30), socket.recv_from(&mut buffer))
        .await
        .expect("an answer within the hang limit")
        .expect("received");
    Message::from_vec(&buffer[..len]).expect("decodes")
}

/// The PTR records of `ip`, asked directly: hickory's resolver answers `localhost.` for
/// every loopback address itself (RFC 6761) without asking.
async fn ptr(dns: SocketAddr, ip: IpAddr) -> Vec<String> {
    let owner = Name::from(ip).to_ascii();
    raw_udp(dns, &owner, RecordType::PTR)
        .await
        .answers
        .iter()
        .map(|r| r.data.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mx_records_list_the_fleet_in_qqs_preference_order() {
    let sidecar = sidecar().await;
    let dns = sidecar.dns_addr().expect("DNS runs");
    let resolver = resolver(dns);

    let qq = mx(&resolver, "qq.com.").await;
    let foxmail = mx(&resolver, "foxmail.com.").await;
    let vip = mx(&resolver, "vip.qq.com.").await;
    let hosted = mx(&resolver, "corp.example.").await;
    sidecar.shutdown().await;

    let fleet = [
        (10, "mx3.qq.com.".to_owned()),
        (20, "mx2.qq.com.".to_owned()),
        (30, "mx1.qq.com.".to_owned()),
    ];
    assert_eq!(qq, fleet);
    assert_eq!(foxmail, fleet);
    assert_eq!(vip, fleet);
    assert_eq!(
        hosted,
        [
            (5, "mxbiz1.qq.com.".to_owned()),
            (10, "mxbiz2.qq.com.".to_owned())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_mx_host_resolves_to_its_listeners_address_and_back() {
    let sidecar = sidecar().await;
    let dns = sidecar.dns_addr().expect("DNS runs");
    let resolver = resolver(dns);

    let mut found = Vec::new();
    for mx in ["mx1", "mx2", "mx3"] {
        let host = format!("{mx}.qq.com.");
        let a = addresses(&resolver, &host, RecordType::A).await;
        let ptr = ptr(dns, addr_of(&sidecar, mx).ip()).await;
        found.push((mx, a, addr_of(&sidecar, mx).ip(), ptr));
    }
    let biz_aaaa = addresses(&resolver, "mxbiz1.qq.com.", RecordType::AAAA).await;
    let biz_a = addresses(&resolver, "mxbiz1.qq.com.", RecordType::A).await;
    let ns = addresses(&resolver, "ns1.qq.com.", RecordType::A).await;
    let sender_ptr = ptr(dns, IpAddr::from([127, 0, 0, 2])).await;
    sidecar.shutdown().await;

    for (mx, a, listener, ptr) in found {
        assert_eq!(a, [listener], "{mx}");
        assert_eq!(ptr, [format!("{mx}.qq.com.")], "{mx}");
    }
    assert_eq!(biz_aaaa, [IpAddr::V6(Ipv6Addr::LOCALHOST)]);
    assert!(
        biz_a.is_empty(),
        "an IPv6 listener has no A record: {biz_a:?}"
    );
    assert_eq!(ns, [dns.ip()], "ns1.qq.com is the DNS server itself");
    assert_eq!(sender_ptr, ["mail.example.com."]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spf_dkim_and_dmarc_records_are_published() {
    let sidecar = sidecar().await;
    let resolver = resolver(sidecar.dns_addr().expect("DNS runs"));

    let qq_spf = txt(&resolver, "qq.com.").await;
    let qq_dmarc = txt(&resolver, "_dmarc.qq.com.").await;
    let sender_spf = txt(&resolver, "example.com.").await;
    let sender_dmarc = txt(&resolver, "_dmarc.example.com.").await;
    let dkim = resolver
        .txt_lookup(name("s1._domainkey.example.com."))
        .await
        .expect("the DKIM key");
    sidecar.shutdown().await;

    assert_eq!(qq_spf, ["v=spf1 include:spf.mail.qq.com -all"]);
    assert_eq!(
        qq_dmarc,
        ["v=DMARC1; p=none; rua=mailto:mailauth-reports@qq.com"]
    );
    assert_eq!(sender_spf, ["v=spf1 ip4:127.0.0.2 -all"]);
    assert_eq!(sender_dmarc, ["v=DMARC1; p=reject"]);
    let RData::TXT(key) = &dkim.answers()[0].data else {
        panic!("not a TXT record: {dkim:?}");
    };
    assert!(
        key.txt_data.len() > 1 && key.txt_data.iter().all(|s| s.len() <= 255),
        "a long key comes as several character-strings"
    );
    assert_eq!(key.txt_data.concat(), dkim_key().into_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_outside_the_zone_do_not_exist_and_zones_have_soa_and_ns() {
    let sidecar = sidecar().await;
    let dns = sidecar.dns_addr().expect("DNS runs");
    let resolver = resolver(dns);

    let outside = resolver
        .lookup(name("nowhere.example."), RecordType::A)
        .await;
    let under_qq = resolver
        .lookup(name("nobody.qq.com."), RecordType::MX)
        .await;
    let soa = resolver
        .soa_lookup(name("qq.com."))
        .await
        .expect("qq.com SOA");
    let ns = resolver
        .ns_lookup(name("example.com."))
        .await
        .expect("example.com NS");
    let raw = raw_udp(dns, "nobody.qq.com.", RecordType::A).await;
    let ancestor = raw_udp(dns, "com.", RecordType::A).await;
    sidecar.shutdown().await;

    let outside = outside.expect_err("no such name");
    assert!(outside.is_nx_domain(), "{outside}");
    let under_qq = under_qq.expect_err("no such name");
    assert!(under_qq.is_nx_domain(), "{under_qq}");
    let RData::SOA(soa) = &soa.answers()[0].data else {
        panic!("not an SOA record: {soa:?}");
    };
    assert_eq!(soa.mname.to_ascii(), "ns1.qq.com.");
    let ns: Vec<String> = ns.answers().iter().map(|r| r.data.to_string()).collect();
    assert_eq!(ns, ["ns1.qq.com."]);
    assert_eq!(raw.metadata.response_code, ResponseCode::NXDomain);
    assert!(raw.metadata.authoritative, "{raw:?}");
    assert!(
        raw.authorities
            .iter()
            .any(|r| r.record_type() == RecordType::SOA && r.name.to_ascii() == "qq.com."),
        "a negative answer carries the zone's SOA: {raw:?}"
    );
    assert_eq!(
        ancestor.metadata.response_code,
        ResponseCode::NoError,
        "com. exists (qq.com is under it) without records: {ancestor:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_txt_answer_too_big_for_udp_is_truncated_and_comes_whole_over_tcp() {
    let sidecar = sidecar().await;
    let dns = sidecar.dns_addr().expect("DNS runs");
    let resolver = resolver(dns);

    let udp = raw_udp(dns, "big.example.com.", RecordType::TXT).await;
    let whole = txt(&resolver, "big.example.com.").await;
    sidecar.shutdown().await;

    assert!(udp.metadata.truncation, "TC is set: {:?}", udp.metadata);
    assert_eq!(whole, [big_txt()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mx_host_taken_down_keeps_its_records() {
    let sidecar = sidecar().await;
    let resolver = resolver(sidecar.dns_addr().expect("DNS runs"));

    sidecar.server().set_mx_up("mx3", false);
    let qq = mx(&resolver, "qq.com.").await;
    let a = addresses(&resolver, "mx3.qq.com.", RecordType::A).await;
    let refused = std::net::TcpStream::connect(addr_of(&sidecar, "mx3"));
    let listener = addr_of(&sidecar, "mx3").ip();
    sidecar.shutdown().await;

    assert_eq!(qq.first(), Some(&(10, "mx3.qq.com.".to_owned())));
    assert_eq!(a, [listener]);
    assert!(refused.is_err(), "its port refuses connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_config_changes_the_answers() {
    let sidecar = sidecar().await;
    let resolver = resolver(sidecar.dns_addr().expect("DNS runs"));

    let before = txt(&resolver, "example.com.").await;
    let mut changed = (*sidecar.server().config()).clone();
    changed.dns.records.clear();
    changed.dns.txt("example.com", "v=spf1 -all");
    sidecar.server().reload(changed).expect("reloads");
    let after = txt(&resolver, "example.com.").await;
    sidecar.shutdown().await;

    assert_eq!(before, ["v=spf1 ip4:127.0.0.2 -all"]);
    assert_eq!(after, ["v=spf1 -all"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_info_route_shows_the_dns_address() {
    let sidecar = sidecar().await;
    let dns = sidecar.dns_addr().expect("DNS runs");
    let api = sidecar.api_addr().expect("an API");

    let info = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(api).expect("API connects");
        write!(
            stream,
            "GET /api/v1/info HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\r\n"
        )
        .expect("request sent");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("answer read");
        answer
    })
    .await
    .expect("the request ran");
    sidecar.shutdown().await;

    assert!(info.contains(&format!(r#""dns":"{dns}""#)), "{info}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_packets_and_unknown_types_get_an_answer_or_nothing_and_no_harm() {
    use tokio::io::AsyncWriteExt;

    let sidecar = sidecar().await;
    let dns = sidecar.dns_addr().expect("DNS runs");
    let socket = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("a UDP socket");
    // Too short for a header; a header announcing five questions and carrying none; a
    // datagram of garbage as big as UDP allows on loopback.
    let header_only = [0x12, 0x34, 0x01, 0x00, 0x00, 0x05, 0, 0, 0, 0, 0, 0];
    for packet in [&[0u8, 1, 2][..], &header_only[..], &[0xff; 60_000][..]] {
        socket.send_to(packet, dns).await.expect("sent");
    }
    // Over TCP: a length prefix promising more than ever comes, then the connection ends.
    let mut tcp = tokio::net::TcpStream::connect(dns)
        .await
        .expect("TCP connects");
    tcp.write_all(&[0xff, 0xff, 1, 2, 3])
        .await
        .expect("written");
    drop(tcp);
    let unknown = raw_udp(dns, "qq.com.", RecordType::Unknown(65_280)).await;
    let after = raw_udp(dns, "mx1.qq.com.", RecordType::A).await;
    sidecar.shutdown().await;

    assert_eq!(unknown.metadata.response_code, ResponseCode::NoError);
    assert!(unknown.answers.is_empty(), "{unknown:?}");
    assert_eq!(after.metadata.response_code, ResponseCode::NoError);
    assert_eq!(after.answers.len(), 1, "still answering: {after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_client_leaves_the_server_answering_and_holding_nothing() {
    use tokio::io::AsyncReadExt;

    let sidecar = sidecar().await;
    let dns = sidecar.dns_addr().expect("DNS runs");
    // 20,000 queries as fast as one socket sends them, never reading an answer: what the
    // server cannot keep up with, the kernel drops; nothing queues inside qqmx.
    let flood = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("a UDP socket");
    let mut query = Message::new(7, MessageType::Query, OpCode::Query);
    query.add_query(Query::query(name("qq.com."), RecordType::MX));
    let packet = query.to_vec().expect("encodes");
    for _ in 0..20_000 {
        flood.send_to(&packet, dns).await.expect("sent");
    }
    // 200 TCP connections that say nothing.
    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(
            tokio::net::TcpStream::connect(dns)
                .await
                .expect("TCP connects"),
        );
    }
    let answered = raw_udp(dns, "mx1.qq.com.", RecordType::A).await;
    assert_eq!(answered.answers.len(), 1, "still answering: {answered:?}");
    // Each silent connection is closed by the server once idle (10 s), so a flood of
    // them holds nothing for long. The wait is bounded only against a hang.
    for mut connection in silent {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(120), connection.read(&mut byte))
            .await
            .expect("the server closes a silent connection");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    let after = raw_udp(dns, "qq.com.", RecordType::MX).await;
    sidecar.shutdown().await;
    assert_eq!(after.answers.len(), 3, "{after:?}");
}

#[test]
fn the_embedded_server_answers_for_mx1() {
    let server = QqMx::builder()
        .dns(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .start();
    let dns = server.dns_addr().expect("DNS runs");
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");

    let (a, qq, down) = runtime.block_on(async {
        let resolver = resolver(dns);
        let a = addresses(&resolver, "mx1.qq.com.", RecordType::A).await;
        let qq = mx(&resolver, "qq.com.").await;
        server.set_up(false);
        let down = addresses(&resolver, "mx1.qq.com.", RecordType::A).await;
        (a, qq, down)
    });

    assert_eq!(a, [server.addr().ip()]);
    assert_eq!(down, a, "taken down, mx1 keeps its record");
    assert_eq!(qq.last(), Some(&(30, "mx1.qq.com.".to_owned())));
    assert_eq!(QqMx::start().dns_addr(), None, "off by default");
}

/// Whether a test that needs an outside program is switched off by `variable`.
fn skipped(variable: &str) -> bool {
    let skip = std::env::var_os(variable).is_some_and(|v| !v.is_empty());
    if skip {
        eprintln!("{variable} is set: skipped");
    }
    skip
}

/// Runs `program` with `args`; its standard output, or why it failed.
fn output(program: &str, args: &[String]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} does not run ({e}); scripts/test.sh installs it"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_sees_the_same_records() {
    if skipped("QQMX_SKIP_DIG_TEST") {
        return;
    }
    let sidecar = sidecar().await;
    let dns = sidecar.dns_addr().expect("DNS runs");
    let mx1 = addr_of(&sidecar, "mx1").ip();
    let dig = move |args: &[&str]| {
        let mut all = vec![
            format!("@{}", dns.ip()),
            "-p".to_owned(),
            dns.port().to_string(),
            "+time=10".to_owned(),
            "+tries=2".to_owned(),
        ];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        output("dig", &all)
    };
    let answers = tokio::task::spawn_blocking(move || {
        (
            dig(&["+short", "qq.com", "MX"]),
            dig(&["+short", "mx1.qq.com", "A"]),
            dig(&["+short", "_dmarc.qq.com", "TXT"]),
            dig(&["+short", "-x", &mx1.to_string()]),
            dig(&["nowhere.example", "A"]),
            dig(&["+short", "qq.com", "SOA"]),
            dig(&["+ignore", "+noedns", "big.example.com", "TXT"]),
            dig(&["+short", "+noedns", "big.example.com", "TXT"]),
        )
    })
    .await
    .expect("dig ran");
    sidecar.shutdown().await;

    let (mx, a, dmarc, ptr, nx, soa, truncated, retried) = answers;
    assert_eq!(mx, "10 mx3.qq.com.\n20 mx2.qq.com.\n30 mx1.qq.com.\n");
    assert_eq!(a.trim(), mx1.to_string());
    assert_eq!(
        dmarc.trim(),
        r#""v=DMARC1; p=none; rua=mailto:mailauth-reports@qq.com""#
    );
    assert_eq!(ptr.trim(), "mx1.qq.com.");
    assert!(nx.contains("status: NXDOMAIN"), "{nx}");
    assert!(nx.contains("flags: qr aa rd;"), "authoritative: {nx}");
    assert!(soa.starts_with("ns1.qq.com. webmaster.qq.com. 1 "), "{soa}");
    assert!(
        truncated.contains(" tc"),
        "UDP answer truncated: {truncated}"
    );
    assert_eq!(
        retried.trim().replace("\" \"", "").trim_matches('"'),
        big_txt(),
        "dig retried over TCP and got it whole"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dnspython_sees_the_same_records() {
    if skipped("QQMX_SKIP_DNSPYTHON_TEST") {
        return;
    }
    let sidecar = sidecar().await;
    let dns = sidecar.dns_addr().expect("DNS runs");
    let mx1 = addr_of(&sidecar, "mx1").ip();
    let script = format!(
        r#"
import dns.resolver, dns.reversename
r = dns.resolver.Resolver(configure=False)
r.nameservers = ["{ip}"]
r.port = {port}
r.lifetime = 30
for rr in sorted(r.resolve("qq.com", "MX"), key=lambda m: m.preference):
    print("MX", rr.preference, rr.exchange)
print("A", r.resolve("mx1.qq.com", "A")[0].address)
print("DMARC", b"".join(r.resolve("_dmarc.qq.com", "TXT")[0].strings).decode())
print("PTR", r.resolve(dns.reversename.from_address("{mx1}"), "PTR")[0].target)
try:
    r.resolve("nowhere.example", "A")
except dns.resolver.NXDOMAIN:
    print("NXDOMAIN")
print("BIG", len(b"".join(r.resolve("big.example.com", "TXT", tcp=False)[0].strings)))
"#,
        ip = dns.ip(),
        port = dns.port(),
    );
    let out = tokio::task::spawn_blocking(move || output("python3", &["-c".to_owned(), script]))
        .await
        .expect("python ran");
    sidecar.shutdown().await;

    let expected = format!(
        "MX 10 mx3.qq.com.\nMX 20 mx2.qq.com.\nMX 30 mx1.qq.com.\nA {mx1}\n\
         DMARC v=DMARC1; p=none; rua=mailto:mailauth-reports@qq.com\nPTR mx1.qq.com.\n\
         NXDOMAIN\nBIG {}\n",
        big_txt().len()
    );
    assert_eq!(out, expected);
}

#[cfg(feature = "cli")]
mod cli {
    use super::*;

    use crate::common::sidecar::{QQMX, Sidecar};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn qqmx_serve_dns_answers_for_its_listeners() {
        let sidecar =
            tokio::task::spawn_blocking(|| Sidecar::manual(&["--dns", "127.0.0.1:0"], &[]))
                .await
                .expect("qqmx serve starts");
        let mx1 = sidecar.mx("mx1");
        let info = sidecar.json("/api/v1/info");
        let dns: SocketAddr = info["dns"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("the info route names the DNS address: {info}"));
        let a = addresses(&resolver(dns), "mx1.qq.com.", RecordType::A).await;
        sidecar.terminate();

        assert_eq!(a, [mx1.ip()]);
    }

    #[test]
    fn qqmx_run_gives_the_sender_the_dns_address() {
        let dir = std::env::temp_dir().join(format!("qqmx-dns-run-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let scenario = dir.join("scenario.toml");
        std::fs::write(
            &scenario,
            "name = \"dns\"\nduration = \"1h\"\n[clock]\nspeed = 60.0\n\
             [config.dns]\nlisten = \"127.0.0.1:0\"\n",
        )
        .expect("scenario written");
        let seen = dir.join("seen");

        let output = Command::new(QQMX)
            .arg("run")
            .arg(&scenario)
            .arg("--report-dir")
            .arg(dir.join("reports"))
            .args([
                "--",
                "sh",
                "-c",
                "printf %s \"$QQMX_DNS_ADDR\" > \"$1\"",
                "sh",
            ])
            .arg(&seen)
            .output()
            .expect("qqmx run starts");
        let seen = std::fs::read_to_string(&seen);
        let _ = std::fs::remove_dir_all(&dir);

        assert!(output.status.success(), "{output:?}");
        let addr: SocketAddr = seen
            .expect("the sender ran")
            .parse()
            .expect("QQMX_DNS_ADDR is an address");
        assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    }
}
