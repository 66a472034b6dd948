//! `Scenario::from_toml`, and the config a scenario carries.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Ok(text) = std::str::from_utf8(data) {
            qqmx::fuzzing::scenario(text);
        }
    });
}
