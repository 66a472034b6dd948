//! Reading a command line: the verb, address and parameters recorded in its event, and
//! the request the handlers answer. Each line is read once.

use std::borrow::Cow;

use smtp_proto::{Error as ParseError, Request};

use crate::event::Verb;
use crate::policy::mailbox::{POSTMASTER_DOMAIN, quote_local_part};
use crate::store::{CommandRef, ParamsRef};

/// Command lines are kept in the event log up to this many bytes.
const LOGGED_LINE: usize = 512;

/// A command line for the event log: without CRLF, cut at [`LOGGED_LINE`] bytes, invalid
/// UTF-8 replaced (borrowed from the line unless it has any).
pub(super) fn loggable(line: &[u8]) -> Cow<'_, str> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let cut = &line[..line.len().min(LOGGED_LINE)];
    String::from_utf8_lossy(cut)
}

/// Why a command line gave no request.
#[derive(Debug)]
pub(super) enum Unparsed {
    /// A MAIL or RCPT line names one of its parameters twice.
    RepeatedParameter,
    /// The parser refused it.
    Error(ParseError),
}

/// What reading a complete command line gives: the request to answer, with the exact
/// SIZE of a MAIL command.
pub(super) type Parsed = Result<(Request<String>, u64), Unparsed>;

/// Reads a complete command line once: its verb and the request to answer.
pub(super) fn read(line: &[u8]) -> (Verb, Parsed) {
    (Verb::of_line(line), parse(line))
}

/// The event of a command line read as `verb` and `parsed`, borrowed from both.
pub(super) fn command<'a>(line: &'a [u8], verb: Verb, parsed: &'a Parsed) -> CommandRef<'a> {
    let mut command = CommandRef {
        verb,
        line: loggable(line),
        address: None,
        host: None,
        params: ParamsRef::Parsed(&[]),
    };
    if let Ok((request, _)) = parsed {
        match request {
            Request::Mail { from } => {
                command.address = Some(quote_local_part(&from.address));
                command.params = ParamsRef::Words(params(line));
            }
            Request::Rcpt { to } => {
                command.address = Some(recipient(&to.address, line));
                command.params = ParamsRef::Words(params(line));
            }
            Request::Helo { host } | Request::Ehlo { host } => {
                command.host = Some(host);
            }
            _ => {}
        }
    }
    command
}

/// Parses a command line.
fn parse(line: &[u8]) -> Result<(Request<String>, u64), Unparsed> {
    // Each framed line is parsed on its own: a parser that kept state between lines
    // would glue a line it found unfinished to the next one.
    if repeats_a_parameter(line) {
        return Err(Unparsed::RepeatedParameter);
    }
    let size = mail_size(line);
    let literal = address_literal(line);
    let mut edited = Cow::Borrowed(line);
    // smtp-proto wraps a SIZE with too many digits round to a small number, or
    // refuses one of exactly usize::MAX: it reads SIZE=0 and the value is ours. It
    // refuses address literals (`a@[127.0.0.1]`) too: it reads a plain domain in
    // their place, and the literal is put back in the address it returns. The SIZE
    // comes after the path, so it is replaced first.
    if let Some(size) = &size {
        edited.to_mut().splice(size.digits.clone(), *b"0");
    }
    if let Some(literal) = &literal {
        edited
            .to_mut()
            .splice(literal.clone(), LITERAL_STAND_IN.bytes());
    }
    let mut request = Request::parse(&mut edited.iter())
        .map(Request::into_owned)
        .map_err(Unparsed::Error)?;
    if let Some(literal) = literal {
        put_back_literal(&mut request, &String::from_utf8_lossy(&line[literal]));
    }
    Ok((request, size.map_or(0, |s| s.value)))
}

/// The ESMTP parameters of a MAIL or RCPT line: the words after the path's `>`.
fn params(line: &[u8]) -> &[u8] {
    let line = line.trim_ascii_end();
    line.iter()
        .rposition(|&b| b == b'>')
        .map_or(&[], |end| &line[end + 1..])
}

/// The recipient of a RCPT line, as the policy should judge it.
///
/// smtp-proto gives a bare `<Postmaster>` as an empty address, like `<>`: it becomes the
/// postmaster of the first domain QQ serves (RFC 5321 requires accepting it). A quoted
/// local part gets back the quotes smtp-proto took off.
pub(super) fn recipient<'a>(address: &'a str, line: &[u8]) -> Cow<'a, str> {
    if address.is_empty() {
        let path = path(line);
        if path.trim_ascii().eq_ignore_ascii_case(b"postmaster") {
            let local = String::from_utf8_lossy(path.trim_ascii());
            return Cow::Owned(format!("{local}@{POSTMASTER_DOMAIN}"));
        }
    }
    quote_local_part(address)
}

/// What is between the first `<` of a MAIL or RCPT line and the `>` after it.
pub(super) fn path(line: &[u8]) -> &[u8] {
    line.iter()
        .position(|&b| b == b'<')
        .and_then(|open| {
            let rest = &line[open + 1..];
            rest.iter()
                .position(|&b| b == b'>')
                .map(|close| &rest[..close])
        })
        .unwrap_or_default()
}

/// The domain smtp-proto is shown in place of an address literal.
const LITERAL_STAND_IN: &str = "address-literal.invalid";

/// Where the address literal of a MAIL or RCPT path is (`[127.0.0.1]`,
/// `[IPv6:::1]`, brackets included), if it has one. Whether it is a valid literal is
/// for the address syntax check to say.
fn address_literal(line: &[u8]) -> Option<std::ops::Range<usize>> {
    let verb = line.get(..4)?;
    if !verb.eq_ignore_ascii_case(b"MAIL") && !verb.eq_ignore_ascii_case(b"RCPT") {
        return None;
    }
    let open = line.iter().position(|&b| b == b'<')? + 1;
    let close = open + line[open..].iter().position(|&b| b == b'>')?;
    let path = &line[open..close];
    let at = path.windows(2).rposition(|w| w == b"@[")? + 1;
    (path.last() == Some(&b']')).then_some(open + at..close)
}

/// Puts `literal` back in the address smtp-proto read with the stand-in domain.
fn put_back_literal(request: &mut Request<String>, literal: &str) {
    let address = match request {
        Request::Mail { from } => &mut from.address,
        Request::Rcpt { to } => &mut to.address,
        _ => return,
    };
    if let Some(local) = address.strip_suffix(LITERAL_STAND_IN) {
        *address = format!("{local}{literal}");
    }
}

/// Whether a MAIL or RCPT line names one of its parameters (`SIZE=`, `BODY=`, ...)
/// twice.
fn repeats_a_parameter(line: &[u8]) -> bool {
    let Some(verb) = line.get(..4) else {
        return false;
    };
    if !verb.eq_ignore_ascii_case(b"MAIL") && !verb.eq_ignore_ascii_case(b"RCPT") {
        return false;
    }
    let Some(params) = line.iter().rposition(|&b| b == b'>') else {
        return false;
    };
    let mut seen: Vec<Vec<u8>> = Vec::new();
    for word in line[params + 1..].split(u8::is_ascii_whitespace) {
        let name = word.split(|&b| b == b'=').next().unwrap_or_default();
        if name.is_empty() {
            continue;
        }
        let name = name.to_ascii_uppercase();
        if seen.contains(&name) {
            return true;
        }
        seen.push(name);
    }
    false
}

/// The `SIZE=` parameter of a MAIL command line.
#[derive(Debug, PartialEq, Eq)]
struct MailSize {
    /// Where its digits are in the line.
    digits: std::ops::Range<usize>,
    /// Its value; `u64::MAX` when the digits do not fit, which is over any limit.
    value: u64,
}

/// Reads the `SIZE=<digits>` parameter of a MAIL line exactly. Parameters follow the last
/// `>`; anything but plain digits is left to the parser to refuse.
fn mail_size(line: &[u8]) -> Option<MailSize> {
    if !line.get(..4)?.eq_ignore_ascii_case(b"MAIL") {
        return None;
    }
    let params = line.iter().rposition(|&b| b == b'>')? + 1;
    let mut start = params;
    for word in line[params..].split(|b| b.is_ascii_whitespace()) {
        let end = start + word.len();
        let name = word.get(..5).filter(|n| n.eq_ignore_ascii_case(b"SIZE="));
        let digits = word.get(5..).filter(|d| !d.is_empty());
        if let (Some(_), Some(digits)) = (name, digits)
            && digits.iter().all(u8::is_ascii_digit)
        {
            let value = digits.iter().try_fold(0u64, |value, &d| {
                value.checked_mul(10)?.checked_add(u64::from(d - b'0'))
            });
            return Some(MailSize {
                digits: start + 5..end,
                value: value.unwrap_or(u64::MAX),
            });
        }
        start = end + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_literals_are_found_in_the_path() {
        let literal = |line: &str| address_literal(line.as_bytes()).map(|r| line[r].to_owned());
        assert_eq!(
            literal("MAIL FROM:<a@[127.0.0.1]> SIZE=1\r\n").as_deref(),
            Some("[127.0.0.1]")
        );
        assert_eq!(
            literal("RCPT TO:<b@[IPv6:::1]>\r\n").as_deref(),
            Some("[IPv6:::1]")
        );
        assert_eq!(literal("MAIL FROM:<a@example.org>\r\n"), None);
        assert_eq!(literal("MAIL FROM:<a@[1.2.3.4>\r\n"), None);
        assert_eq!(literal("HELO [127.0.0.1]\r\n"), None);
    }

    #[test]
    fn repeated_parameters_are_found() {
        let repeats = |line: &str| repeats_a_parameter(line.as_bytes());
        assert!(repeats("MAIL FROM:<a@b> SIZE=1 size=2\r\n"));
        assert!(repeats(
            "MAIL FROM:<a@b> BODY=8BITMIME SMTPUTF8 BODY=7BIT\r\n"
        ));
        assert!(repeats("RCPT TO:<a@b> NOTIFY=NEVER NOTIFY=SUCCESS\r\n"));
        assert!(!repeats(
            "MAIL FROM:<a@b> SIZE=1 BODY=8BITMIME SMTPUTF8\r\n"
        ));
        assert!(!repeats("MAIL FROM:<a@b>  SIZE=1\r\n"));
        assert!(!repeats("EHLO SIZE=1 SIZE=1\r\n"));
    }

    #[test]
    fn mail_size_is_read_exactly() {
        let size = |line: &str| mail_size(line.as_bytes()).map(|s| s.value);
        assert_eq!(size("MAIL FROM:<a@b> SIZE=3147\r\n"), Some(3147));
        assert_eq!(size("mail from:<a@b> BODY=8BITMIME size=12\r\n"), Some(12));
        assert_eq!(
            size("MAIL FROM:<a@b> SIZE=99999999999999999999999999\r\n"),
            Some(u64::MAX)
        );
        assert_eq!(
            size("MAIL FROM:<a@b> SIZE=18446744073709551615\r\n"),
            Some(u64::MAX)
        );
        assert_eq!(size("MAIL FROM:<a@b> SIZE=12x\r\n"), None);
        assert_eq!(size("MAIL FROM:<a@b> SIZE=\r\n"), None);
        assert_eq!(size("MAIL FROM:<a@b>\r\n"), None);
        assert_eq!(size("RCPT TO:<a@b> SIZE=1\r\n"), None);
        let line = b"MAIL FROM:<a@b> SIZE=42 BODY=7BIT\r\n";
        let digits = mail_size(line).map(|s| s.digits).expect("a SIZE");
        assert_eq!(&line[digits], b"42");
    }
}
