//! A pipeline encoded for the wire as its commands are made: a stage makes a dozen
//! commands, each of which, as a `redis::Cmd`, would be two allocations and a copy
//! before the pipeline is encoded. Arguments are written as `redis::Cmd` writes them
//! (through [`ToRedisArgs`]), each straight to the wire as it comes; the command's
//! header (its count of arguments) is put before them when the command ends.

use std::io;

use redis::{Cmd, RedisWrite, ToRedisArgs};

/// Commands in RESP, ready to send, and how many.
#[derive(Debug)]
pub(super) struct Packed {
    bytes: Vec<u8>,
    count: usize,
    /// Where the arguments of the command being made start in `bytes`, and how many
    /// there are so far.
    start: usize,
    args: usize,
    /// An argument written in pieces, until it ends.
    piece: Vec<u8>,
}

impl Default for Packed {
    /// Room for a stage's pipeline (a few hundred bytes to a few KiB), so that it is
    /// not grown command by command.
    fn default() -> Self {
        Self::with_capacity(4096)
    }
}

impl Packed {
    /// Room for `bytes` of commands.
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(bytes),
            count: 0,
            start: 0,
            args: 0,
            piece: Vec::new(),
        }
    }

    /// The commands, encoded.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// How many commands there are.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Adds the commands of `other`.
    pub fn append(&mut self, other: &Self) {
        self.bytes.extend_from_slice(&other.bytes);
        self.count += other.count;
    }

    /// Adds a command made by the `redis` crate.
    pub fn cmd(&mut self, cmd: &Cmd) {
        cmd.write_packed_command(&mut self.bytes);
        self.count += 1;
    }

    /// Starts the command `name`; its arguments follow, and it is added when dropped.
    pub fn command(&mut self, name: &str) -> Command<'_> {
        self.start = self.bytes.len();
        self.args = 0;
        self.write_arg(name.as_bytes());
        Command(self)
    }
}

impl RedisWrite for Packed {
    fn write_arg(&mut self, arg: &[u8]) {
        // `$<length>\r\n`, made on the stack, then the argument and its `\r\n`, into
        // room made once.
        let mut n = Digits([0; 20]);
        let digits = n.format(arg.len());
        let mut head = [0; 23];
        head[0] = b'$';
        head[1..=digits.len()].copy_from_slice(digits);
        head[digits.len() + 1..digits.len() + 3].copy_from_slice(b"\r\n");
        self.bytes.reserve(digits.len() + arg.len() + 5);
        self.bytes.extend_from_slice(&head[..digits.len() + 3]);
        self.bytes.extend_from_slice(arg);
        self.bytes.extend_from_slice(b"\r\n");
        self.args += 1;
    }

    fn writer_for_next_arg(&mut self) -> impl io::Write + '_ {
        self.piece.clear();
        Arg(self)
    }
}

/// An argument written in pieces: it ends when dropped.
struct Arg<'a>(&'a mut Packed);

impl io::Write for Arg<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.piece.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Arg<'_> {
    fn drop(&mut self) {
        let piece = std::mem::take(&mut self.0.piece);
        self.0.write_arg(&piece);
        self.0.piece = piece;
    }
}

/// A command being made.
pub(super) struct Command<'a>(&'a mut Packed);

impl Command<'_> {
    /// Adds `arg`, as `redis::Cmd::arg` does.
    pub fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        arg.write_redis_args(self.0);
        self
    }
}

/// What a command's arguments are added to: a command being packed, or a `redis::Cmd`
/// (for a write held back), so that one function makes a command for both.
pub(super) trait Args {
    fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Self;
}

impl Args for Command<'_> {
    fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        Command::arg(self, arg)
    }
}

impl Args for Cmd {
    fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        Cmd::arg(self, arg)
    }
}

impl Drop for Command<'_> {
    fn drop(&mut self) {
        let p = &mut *self.0;
        let mut n = Digits([0; 20]);
        let digits = n.format(p.args);
        // The header, `*<count>\r\n`, goes before the arguments written.
        let header = digits.len() + 3;
        let end = p.bytes.len();
        p.bytes.resize(end + header, 0);
        p.bytes.copy_within(p.start..end, p.start + header);
        let head = &mut p.bytes[p.start..p.start + header];
        head[0] = b'*';
        head[1..=digits.len()].copy_from_slice(digits);
        head[digits.len() + 1..].copy_from_slice(b"\r\n");
        p.count += 1;
    }
}

/// Decimal digits of a count, without the formatting machinery.
struct Digits([u8; 20]);

impl Digits {
    fn format(&mut self, mut n: usize) -> &[u8] {
        let mut i = self.0.len();
        loop {
            i -= 1;
            // A digit: below 10.
            self.0[i] = b'0' + u8::try_from(n % 10).unwrap_or(0);
            n /= 10;
            if n == 0 {
                return &self.0[i..];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_encoded_as_the_crate_encodes_them() {
        let mut packed = Packed::default();
        packed
            .command("HMGET")
            .arg("{p}:q:sender:a@b.c")
            .arg(&["bu", "im", "cm"])
            .arg(12_345_u64)
            .arg(-1_i64)
            .arg(0.25_f64);
        packed.command("EXISTS").arg("");
        let mut theirs = redis::cmd("EVALSHA");
        theirs.arg("abc").arg(2).arg(&["k1", "k2"]).arg(0);
        packed.cmd(&theirs);

        let mut expected = Vec::new();
        redis::cmd("HMGET")
            .arg("{p}:q:sender:a@b.c")
            .arg(&["bu", "im", "cm"])
            .arg(12_345_u64)
            .arg(-1_i64)
            .arg(0.25_f64)
            .write_packed_command(&mut expected);
        redis::cmd("EXISTS")
            .arg("")
            .write_packed_command(&mut expected);
        theirs.write_packed_command(&mut expected);
        assert_eq!(
            String::from_utf8_lossy(packed.bytes()),
            String::from_utf8_lossy(&expected)
        );
        assert_eq!(packed.count(), 3);
    }
}
