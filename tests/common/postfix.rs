//! A private Postfix instance for tests that use Debian's Postfix as the sender, and
//! readers for what it writes: its queue (`postqueue -j`) and its bounces (DSNs).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long one Postfix command may take.
pub const COMMAND: Duration = Duration::from_secs(60);

// ---- Postfix's output ----------------------------------------------------------------

/// One recipient's part of a DSN's `message/delivery-status`.
#[derive(Debug)]
pub struct Report {
    pub recipient: String,
    pub action: String,
    pub status: String,
    /// `Diagnostic-Code`, unfolded.
    pub diagnostic: String,
}

/// A bounce as Postfix wrote it.
#[derive(Debug)]
pub struct Dsn {
    /// The human-readable part, with Postfix's wrapped lines joined again.
    pub notification: String,
    pub reports: Vec<Report>,
}

/// The DSN that reports on `rcpt`.
pub fn dsn_for<'a>(dsns: &'a [Dsn], rcpt: &str) -> Option<&'a Dsn> {
    dsns.iter()
        .find(|d| d.reports.iter().any(|r| r.recipient == rcpt))
}

/// Joins folded lines: a line that starts with white space continues the one before,
/// and Postfix broke the line at a single space, which it replaced.
pub fn unfold(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start_matches([' ', '\t']);
        match lines.last_mut() {
            Some(last) if trimmed.len() < line.len() && !trimmed.is_empty() && !last.is_empty() => {
                last.push(' ');
                last.push_str(trimmed);
            }
            _ => lines.push(line.to_owned()),
        }
    }
    lines
}

pub fn parse_dsn(raw: &str) -> Dsn {
    let lines = unfold(raw);
    let mut notification = String::new();
    let mut reports = Vec::new();
    let mut part = "";
    let mut report: Option<Report> = None;
    for line in &lines {
        if let Some(description) = line.strip_prefix("Content-Description: ") {
            part = if description == "Notification" {
                "notification"
            } else if description == "Delivery report" {
                "report"
            } else {
                ""
            };
            continue;
        }
        match part {
            "notification" => {
                notification.push_str(line);
                notification.push('\n');
            }
            "report" => {
                let field = |name: &str| {
                    line.strip_prefix(name)
                        .and_then(|rest| rest.strip_prefix(": "))
                        .map(str::to_owned)
                };
                if let Some(value) = field("Final-Recipient") {
                    reports.extend(report.take());
                    report = Some(Report {
                        recipient: value.trim_start_matches("rfc822;").trim().to_owned(),
                        action: String::new(),
                        status: String::new(),
                        diagnostic: String::new(),
                    });
                } else if let Some(r) = report.as_mut() {
                    if let Some(v) = field("Action") {
                        r.action = v;
                    } else if let Some(v) = field("Status") {
                        r.status = v;
                    } else if let Some(v) = field("Diagnostic-Code") {
                        r.diagnostic = v;
                    }
                }
            }
            _ => {}
        }
    }
    reports.extend(report);
    Dsn {
        notification,
        reports,
    }
}

/// A queued message as `postqueue -j` lists it.
#[derive(Debug)]
pub struct Queued {
    pub id: String,
    pub queue: String,
    /// (recipient, delay reason).
    pub rcpts: Vec<(String, String)>,
}

/// The queue id and delay reason of `rcpt`, when it waits in the deferred queue.
pub fn deferred(queue: &[Queued], rcpt: &str) -> Option<(String, String)> {
    queue
        .iter()
        .filter(|q| q.queue == "deferred")
        .find_map(|q| {
            q.rcpts
                .iter()
                .find(|(r, reason)| r == rcpt && !reason.is_empty())
                .map(|(_, reason)| (q.id.clone(), reason.clone()))
        })
}

// ---- a private Postfix ---------------------------------------------------------------

/// A Postfix instance of its own under a temporary directory: stopped and removed on drop.
pub struct Postfix {
    pub dir: PathBuf,
    pub conf: PathBuf,
    pub running: bool,
}

/// The services the instance needs: no listener, no chroot (`tlsmgr` for an SMTP client
/// that uses TLS, started only then).
pub const MASTER_CF: &str = "\
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n -  0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n -  - trivial-rewrite
bounce    unix  - - n -  0 bounce
defer     unix  - - n -  0 bounce
trace     unix  - - n -  0 bounce
verify    unix  - - n -  1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -  - proxymap
showq     unix  n - n -  - showq
error     unix  - - n -  - error
retry     unix  - - n -  - error
discard   unix  - - n -  - discard
virtual   unix  - n n -  - virtual
anvil     unix  - - n -  1 anvil
scache    unix  - - n -  1 scache
postlog   unix-dgram n - n - 1 postlogd
tlsmgr    unix  - - n 1000? 1 tlsmgr
smtp      unix  - - n -  - smtp
strict    unix  - - n -  - smtp -o smtp_skip_5xx_greeting=no
nosize    unix  - - n -  - smtp -o smtp_discard_ehlo_keywords=size
slowdot   unix  - - n -  - smtp -o smtp_pix_workaround_maps=inline:{127.0.0.1=delay_dotcrlf}
  -o smtp_pix_workaround_threshold_time=0s -o smtp_pix_workaround_delay_time=10s
";

/// What a Postfix instance is started with besides its transport routes.
#[derive(Debug, Default)]
pub struct Options {
    /// Lines added at the end of main.cf.
    pub main_cf: String,
    /// The text of the `/etc/resolv.conf` Postfix reads: when set, Postfix runs in a mount
    /// namespace of its own (`unshare --mount`, from util-linux) where this file is bound
    /// over /etc/resolv.conf, so that its resolver asks another name server while the
    /// host's file stays untouched.
    pub resolv_conf: Option<String>,
}

impl Postfix {
    pub fn start(routes: &[(String, String)]) -> Result<Self, String> {
        Self::start_with(routes, &Options::default())
    }

    /// A Postfix whose resolver asks only the name server on port 53 of `dns`, looking up
    /// MX records for its SMTP client, with `main_cf` added; panics saying what it needs
    /// when it cannot start, as a test must not skip silently.
    pub fn resolving_through(
        dns: std::net::IpAddr,
        routes: &[(String, String)],
        main_cf: &str,
    ) -> Self {
        let options = Options {
            main_cf: format!("smtp_host_lookup = dns\nsmtp_connect_timeout = 30s\n{main_cf}"),
            resolv_conf: Some(format!("nameserver {dns}\noptions timeout:5 attempts:3\n")),
        };
        Self::start_with(routes, &options).unwrap_or_else(|e| {
            panic!(
                "Postfix does not start in a mount namespace of its own (it needs Postfix, \
                 util-linux's unshare and root; QQMX_SKIP_POSTFIX_TEST=1 skips this test): {e}"
            )
        })
    }

    /// Starts an instance as [`Postfix::start`] does, with `options`.
    pub fn start_with(routes: &[(String, String)], options: &Options) -> Result<Self, String> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!("qqmx-postfix-{}-{nanos}", std::process::id()));
        let mut postfix = Self {
            conf: dir.join("conf"),
            dir,
            running: false,
        };
        postfix.prepare(routes)?;
        if !options.main_cf.is_empty() {
            let main = postfix.conf.join("main.cf");
            let mut text = std::fs::read_to_string(&main).map_err(|e| format!("main.cf: {e}"))?;
            text.push_str(&options.main_cf);
            text.push('\n');
            std::fs::write(&main, text).map_err(|e| format!("main.cf: {e}"))?;
        }
        let mut start = postfix_command("postfix");
        start.arg("-c").arg(&postfix.conf).arg("start");
        if let Some(resolv_conf) = &options.resolv_conf {
            let file = postfix.dir.join("resolv.conf");
            std::fs::write(&file, resolv_conf).map_err(|e| format!("resolv.conf: {e}"))?;
            // The master and every daemon it starts stay in the namespace; the bind mount
            // is private to it and goes away with its last process.
            let mut namespaced = Command::new("unshare");
            namespaced
                .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
                .arg(r#"mount --bind "$1" /etc/resolv.conf && exec "$2" -c "$3" start"#)
                .arg("sh")
                .arg(&file)
                .arg(start.get_program())
                .arg(&postfix.conf);
            start = namespaced;
        }
        run(&mut start, None).map_err(|e| format!("{e}\n{}", postfix.log()))?;
        postfix.running = true;
        Ok(postfix)
    }

    pub fn prepare(&self, routes: &[(String, String)]) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
        for sub in ["conf", "queue", "data", "mail"] {
            std::fs::create_dir_all(self.dir.join(sub)).map_err(|e| io(sub, e))?;
        }
        // Postfix's daemons run as the `postfix` user and the maildir is written as
        // `nobody`: they must reach their directories.
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| io("chmod", e))?;
        let nobody = id("nobody")?;
        run(
            Command::new("chown")
                .arg("postfix")
                .arg(self.dir.join("data")),
            None,
        )?;
        run(
            Command::new("chown")
                .arg(format!("{}:{}", nobody.0, nobody.1))
                .arg(self.dir.join("mail")),
            None,
        )?;
        let transport: Vec<String> = routes
            .iter()
            .map(|(rcpt, next)| format!("{{{rcpt} = {next}}}"))
            .collect();
        let d = self.dir.display();
        let main = format!(
            "compatibility_level = 3.6
queue_directory = {d}/queue
data_directory = {d}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = pfx.test
mydomain = pfx.test
myorigin = pfx.test
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
alias_maps =
alias_database =
maillog_file = {d}/maillog
maillog_file_prefixes = {d}
transport_maps = inline:{{ {} }}
virtual_mailbox_domains = pfx.test
virtual_mailbox_base = {d}/mail
virtual_mailbox_maps = inline:{{ {{@pfx.test = dsn/}} }}
virtual_uid_maps = static:{}
virtual_gid_maps = static:{}
smtp_tls_security_level = none
delay_warning_time = 0
notify_classes = 2bounce, resource, software
2bounce_notice_recipient = postmaster@pfx.test
",
            transport.join(", "),
            nobody.0,
            nobody.1,
        );
        std::fs::write(self.conf.join("main.cf"), main).map_err(|e| io("main.cf", e))?;
        std::fs::write(self.conf.join("master.cf"), MASTER_CF).map_err(|e| io("master.cf", e))?;
        Ok(())
    }

    /// Injects a message with `sendmail`; an empty `from` is the null sender.
    pub fn send(&self, from: &str, rcpts: &[String], message: &str) -> Result<(), String> {
        let from = if from.is_empty() { "<>" } else { from };
        run(
            postfix_command("sendmail")
                .arg("-C")
                .arg(&self.conf)
                .args(["-i", "-f", from, "--"])
                .args(rcpts),
            Some(message.as_bytes()),
        )
        .map(drop)
    }

    pub fn postqueue(&self, args: &[&str]) -> Result<String, String> {
        run(
            postfix_command("postqueue")
                .arg("-c")
                .arg(&self.conf)
                .args(args),
            None,
        )
    }

    /// The queue, as `postqueue -j` shows it.
    pub fn queue(&self) -> Result<Vec<Queued>, String> {
        let json = self.postqueue(&["-j"])?;
        json.lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                let v: serde_json::Value =
                    serde_json::from_str(line).map_err(|e| format!("{e}: {line}"))?;
                let text = |v: &serde_json::Value, key: &str| {
                    v[key].as_str().unwrap_or_default().to_owned()
                };
                let rcpts = v["recipients"]
                    .as_array()
                    .map(|rs| {
                        rs.iter()
                            .map(|r| (text(r, "address"), text(r, "delay_reason")))
                            .collect()
                    })
                    .unwrap_or_default();
                Ok(Queued {
                    id: text(&v, "queue_id"),
                    queue: text(&v, "queue_name"),
                    rcpts,
                })
            })
            .collect()
    }

    /// Retries one deferred message now.
    pub fn retry(&self, id: &str) -> Result<(), String> {
        self.postqueue(&["-i", id]).map(drop)
    }

    /// Every bounce delivered so far.
    pub fn dsns(&self) -> Vec<Dsn> {
        let new = self.dir.join("mail/dsn/new");
        let Ok(entries) = std::fs::read_dir(new) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .map(|raw| parse_dsn(&raw))
            .collect()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("maillog")).unwrap_or_default()
    }

    pub fn master_alive(&self) -> bool {
        let pid = std::fs::read_to_string(self.dir.join("queue/pid/master.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok());
        pid.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        if self.running {
            let _ = run(
                postfix_command("postfix")
                    .arg("-c")
                    .arg(&self.conf)
                    .arg("stop"),
                None,
            );
            let deadline = Instant::now() + COMMAND;
            while self.master_alive() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(100));
            }
            if self.master_alive() {
                let _ = run(
                    postfix_command("postfix")
                        .arg("-c")
                        .arg(&self.conf)
                        .arg("abort"),
                    None,
                );
                eprintln!("Postfix did not stop within {COMMAND:?}; aborted it");
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One of Postfix's commands: from /usr/sbin, which is not on every `PATH`, or else from
/// the `PATH`.
pub fn postfix_command(name: &str) -> Command {
    let sbin = Path::new("/usr/sbin").join(name);
    if sbin.exists() {
        Command::new(sbin)
    } else {
        Command::new(name)
    }
}

/// The uid and gid of `user`.
pub fn id(user: &str) -> Result<(String, String), String> {
    let uid = run(Command::new("id").args(["-u", user]), None)?;
    let gid = run(Command::new("id").args(["-g", user]), None)?;
    Ok((uid, gid))
}

/// Runs `command` (feeding it `input`) for at most [`COMMAND`]: its trimmed stdout, or
/// what went wrong with its output.
pub fn run(command: &mut Command, input: Option<&[u8]>) -> Result<String, String> {
    let mut child = command
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{command:?} does not start: {e}"))?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(input)
            .map_err(|e| format!("{command:?}: writing its input: {e}"))?;
    }
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut text);
            }
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + COMMAND;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{command:?} did not finish within {COMMAND:?}"));
            }
            Err(e) => return Err(format!("{command:?}: {e}")),
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if status.success() {
        Ok(stdout.trim().to_owned())
    } else {
        Err(format!("{command:?} failed ({status}): {stdout}{stderr}"))
    }
}
