//! An SMTP session over an in-memory stream: two settings bytes, then the client's
//! script (see `fuzz/README.md`).

fn main() {
    afl::fuzz!(|data: &[u8]| qqmx::fuzzing::smtp_session(data));
}
