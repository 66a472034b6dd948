//! The README's "In your tests" example, built as a new user builds it: in a crate of its
//! own whose `[dev-dependencies]` are exactly the README's lines (qqmx by path), then run.
//! A README example that only compiles with qqmx's own dev-dependencies fails here.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The body of the first fenced block after `marker` whose fence line starts with `fence`.
fn block(readme: &str, marker: &str, fence: &str) -> String {
    let from = readme.find(marker).expect("the README has the section");
    let rest = &readme[from..];
    let start = rest.find(fence).expect("the README has the block");
    let body = &rest[start..];
    let body = &body[body.find('\n').expect("a fence line") + 1..];
    body[..body.find("\n```").expect("the block ends")].to_owned() + "\n"
}

#[test]
fn the_readme_example_builds_and_passes_with_the_readme_dependencies() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let dependencies = block(&readme, "## In your tests", "```toml");
    let example = block(&readme, "## In your tests", "```rust");
    assert!(
        dependencies.starts_with("[dev-dependencies]\nqqmx = \"0.1\"\n"),
        "{dependencies}"
    );
    assert!(example.starts_with("// tests/qq.rs"), "{example}");

    let qqmx = format!("qqmx = {{ path = {:?} }}\n", root.display().to_string());
    let manifest = format!(
        "[package]\nname = \"readme-user\"\nversion = \"0.0.0\"\nedition = \"2024\"\npublish = false\n\n[workspace]\n\n{}",
        dependencies.replacen("qqmx = \"0.1\"\n", &qqmx, 1)
    );
    let dir: PathBuf = root.join("target").join("readme-user");
    std::fs::create_dir_all(dir.join("tests")).expect("crate folder");
    std::fs::create_dir_all(dir.join("src")).expect("crate folder");
    std::fs::write(dir.join("Cargo.toml"), manifest).expect("Cargo.toml");
    std::fs::write(dir.join("src").join("lib.rs"), "").expect("lib.rs");
    std::fs::write(dir.join("tests").join("qq.rs"), example).expect("tests/qq.rs");
    // qqmx's own lock file pins the versions qqmx is tested with; cargo drops what the
    // README's lines do not need.
    std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock")).expect("Cargo.lock");

    let output = Command::new(env!("CARGO"))
        .args(["test", "--quiet", "--test", "qq"])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .env_remove("RUSTFLAGS")
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "the README's example fails in a crate of its own ({}):\n{}{}",
        dir.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
