//! A pipeline encoded for the wire as its commands are made: a stage makes a dozen
//! commands, each of which, as a `redis::Cmd`, would be two allocations and a copy
//! before the pipeline is encoded. Arguments are written as `redis::Cmd` writes them
//! (through [`ToRedisArgs`]), into buffers kept from one command to the next.

use std::io;

use redis::{Cmd, RedisWrite, ToRedisArgs};

/// Commands in RESP, ready to send, and how many.
#[derive(Debug, Default)]
pub(super) struct Packed {
    bytes: Vec<u8>,
    count: usize,
    /// The arguments of the command being made, end to end, and where each ends.
    data: Vec<u8>,
    ends: Vec<usize>,
}

impl Packed {
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
        self.data.clear();
        self.ends.clear();
        self.write_arg(name.as_bytes());
        Command(self)
    }
}

impl RedisWrite for Packed {
    fn write_arg(&mut self, arg: &[u8]) {
        self.data.extend_from_slice(arg);
        self.ends.push(self.data.len());
    }

    fn writer_for_next_arg(&mut self) -> impl io::Write + '_ {
        Arg(self)
    }
}

/// An argument written in pieces: it ends when dropped.
struct Arg<'a>(&'a mut Packed);

impl io::Write for Arg<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.data.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Arg<'_> {
    fn drop(&mut self) {
        self.0.ends.push(self.0.data.len());
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

impl Drop for Command<'_> {
    fn drop(&mut self) {
        let p = &mut *self.0;
        let mut n = Digits([0; 20]);
        p.bytes.push(b'*');
        p.bytes.extend_from_slice(n.format(p.ends.len()));
        p.bytes.extend_from_slice(b"\r\n");
        let mut start = 0;
        for &end in &p.ends {
            p.bytes.push(b'$');
            p.bytes.extend_from_slice(n.format(end - start));
            p.bytes.extend_from_slice(b"\r\n");
            p.bytes.extend_from_slice(&p.data[start..end]);
            p.bytes.extend_from_slice(b"\r\n");
            start = end;
        }
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
            .arg(-1_i64);
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
