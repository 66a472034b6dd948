//! `Config::from_toml`, and what a server builds from a config that parses.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Ok(text) = std::str::from_utf8(data) {
            qqmx::fuzzing::config(text);
        }
    });
}
