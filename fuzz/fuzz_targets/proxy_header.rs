//! The PROXY protocol header reader (versions 1 and 2).

fn main() {
    afl::fuzz!(|data: &[u8]| qqmx::fuzzing::proxy_header(data));
}
