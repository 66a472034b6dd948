//! The catalogue of one generation: templates with the config's overrides, rendered.

use std::collections::HashMap;

use base64::Engine as _;
use rand::RngCore;

use super::{Context, Generation, Profile, Reply, ReplyKind, exmail_template, template};

/// Why an override cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("reply `{kind}`: {problem}")]
pub struct TemplateError {
    /// The kind whose template is wrong.
    pub kind: ReplyKind,
    /// What is wrong with it.
    pub problem: String,
}

/// The templates of one generation with the config's overrides applied.
#[derive(Debug, Clone)]
pub struct Catalogue {
    generation: Generation,
    host: String,
    size: u64,
    profile: Profile,
    overrides: HashMap<ReplyKind, String>,
}

impl Catalogue {
    /// A catalogue for `generation`, announcing `host` and SIZE `size`.
    pub fn new(generation: Generation, host: impl Into<String>, size: u64) -> Self {
        Self {
            generation,
            host: host.into(),
            size,
            profile: Profile::Qq,
            overrides: HashMap::new(),
        }
    }

    /// The same catalogue answering as `profile`.
    #[must_use]
    pub fn with_profile(mut self, profile: Profile) -> Self {
        self.profile = profile;
        self
    }

    /// The profile in use.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// The kind actually sent when `kind` is asked for: its exmail variant under the
    /// exmail profile.
    pub fn effective(&self, kind: ReplyKind) -> ReplyKind {
        match self.profile {
            Profile::Qq => kind,
            Profile::Exmail => kind.exmail(),
        }
    }

    /// Replaces the template of `kind`.
    ///
    /// # Errors
    ///
    /// When the template does not start with a three-digit code from 200 to 599 followed
    /// by a space or (on all but the last line) a dash, or names an unknown placeholder,
    /// or opens a placeholder with `{` and never closes it.
    pub fn set_override(&mut self, kind: ReplyKind, template: &str) -> Result<(), TemplateError> {
        validate(kind, template)?;
        self.overrides.insert(kind, template.to_owned());
        Ok(())
    }

    /// The generation in use.
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// The banner host name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The template in force for `kind` (for its [`effective`](Self::effective) kind).
    pub fn template(&self, kind: ReplyKind) -> &str {
        let kind = self.effective(kind);
        if let Some(text) = self.overrides.get(&kind) {
            return text;
        }
        match self.profile {
            Profile::Exmail => {
                exmail_template(kind).unwrap_or_else(|| template(kind, self.generation))
            }
            Profile::Qq => template(kind, self.generation),
        }
    }

    /// Renders `kind` (as its [`effective`](Self::effective) kind), drawing tracking
    /// tokens from `rng`.
    pub fn render(&self, kind: ReplyKind, ctx: &Context, rng: &mut impl RngCore) -> Reply {
        let mut text = String::new();
        let (kind, code) = self.render_into(kind, ctx, rng, &mut text);
        Reply { kind, code, text }
    }

    /// [`render`](Self::render), appending the text to `text`: the kind and code of the
    /// reply. A caller that renders many replies reuses one buffer and copies each text
    /// at its exact size.
    pub fn render_into(
        &self,
        kind: ReplyKind,
        ctx: &Context,
        rng: &mut impl RngCore,
        text: &mut String,
    ) -> (ReplyKind, u16) {
        let template = self.template(kind);
        let kind = self.effective(kind);
        let start = text.len();
        text.reserve(template.len() + 64);
        for line in template.split('\n') {
            if !ctx.starttls && line == "250-STARTTLS" {
                continue;
            }
            if text.len() > start {
                text.push_str("\r\n");
            }
            if !ctx.starttls && (line.starts_with("214 ") || line.starts_with("214-")) {
                let help: Vec<&str> = line.split(' ').filter(|w| *w != "STARTTLS").collect();
                self.fill(&help.join(" "), ctx, rng, text);
            } else {
                self.fill(line, ctx, rng, text);
            }
        }
        let code = text
            .get(start..start + 3)
            .and_then(|c| c.parse().ok())
            .expect("templates are validated to start with a code");
        (kind, code)
    }

    fn fill(&self, line: &str, ctx: &Context, rng: &mut impl RngCore, out: &mut String) {
        use std::fmt::Write as _;
        let mut rest = line;
        while let Some(start) = rest.find('{') {
            out.push_str(&rest[..start]);
            let after = &rest[start..];
            let Some(end) = after.find('}') else {
                out.push_str(after);
                return;
            };
            match &after[1..end] {
                "host" => out.push_str(&self.host),
                "ip" => {
                    let _ = write!(out, "{}", ctx.ip);
                }
                "b64" => out.push_str(&token(rng, 49)),
                "b64short" => out.push_str(&token(rng, 40)),
                "size" => {
                    let _ = write!(out, "{}", self.size);
                }
                "n" => {
                    let _ = write!(out, "{}", ctx.n);
                }
                _ => out.push_str(&after[..=end]),
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
    }
}

const PLACEHOLDERS: [&str; 6] = ["host", "ip", "b64", "b64short", "size", "n"];

pub(super) fn validate(kind: ReplyKind, template: &str) -> Result<(), TemplateError> {
    let problem = |p: String| TemplateError { kind, problem: p };
    let lines: Vec<&str> = template.split('\n').collect();
    for (i, line) in lines.iter().enumerate() {
        let last = i + 1 == lines.len();
        let code_ok = line
            .get(..3)
            .and_then(|c| c.parse::<u16>().ok())
            .is_some_and(|c| (200..600).contains(&c));
        let sep = line.as_bytes().get(3).copied();
        let sep_ok = match sep {
            Some(b' ') => last,
            Some(b'-') => !last,
            None => last && line.len() == 3,
            _ => false,
        };
        if !code_ok || !sep_ok {
            return Err(problem(format!(
                "line {} must start with a code from 200 to 599 and then a space \
                 (or a dash on all but the last line): {line:?}",
                i + 1
            )));
        }
        if line.contains('\r') {
            return Err(problem("lines are separated by \\n only".into()));
        }
        // RFC 5321 reply text is printable characters and tabs: anything else (NUL, ESC,
        // DEL, C1 controls) would reach the client's terminal or log as it is.
        if let Some(c) = line.chars().find(|c| c.is_control() && *c != '\t') {
            return Err(problem(format!(
                "line {} holds the control character {:?}; reply text is printable \
                 characters and tabs",
                i + 1,
                c
            )));
        }
        let mut rest = *line;
        while let Some(start) = rest.find('{') {
            let after = &rest[start + 1..];
            let Some(end) = after.find('}') else {
                return Err(problem(format!(
                    "unterminated placeholder `{{{after}`, expected one of {}",
                    PLACEHOLDERS.join(", ")
                )));
            };
            let name = &after[..end];
            if !PLACEHOLDERS.contains(&name) {
                return Err(problem(format!(
                    "unknown placeholder `{{{name}}}`, expected one of {}",
                    PLACEHOLDERS.join(", ")
                )));
            }
            rest = &after[end + 1..];
        }
    }
    Ok(())
}

/// A base64 tracking token of `bytes` random bytes whose first character is `M`.
///
/// 49 bytes give QQ's 68-character `IP:` style token (ending in `==`); 40 bytes give the
/// 56-character `Blocked IP` style.
pub fn token(rng: &mut impl RngCore, bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    rng.fill_bytes(&mut raw);
    if let Some(first) = raw.first_mut() {
        // The first base64 character is the top six bits: 12 is `M`.
        *first = (12 << 2) | (*first & 0b11);
    }
    base64::engine::general_purpose::STANDARD.encode(raw)
}
