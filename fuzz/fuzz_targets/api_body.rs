//! One request to the control API: the first byte picks the route, the rest is the body.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Some((&route, body)) = data.split_first() {
            qqmx::fuzzing::api_body(route, body);
        }
    });
}
