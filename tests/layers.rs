//! The module graph of `src/`: no import circle among the top-level modules, none among
//! the files of one module, no import from a lower layer to a higher one, no file over
//! [`MAX_LINES`] lines.
//!
//! Every file under `src/` is read as text (standard library only). A file belongs to
//! the top-level module of the first segment of its path (`src/policy/quota.rs` to
//! `policy`); `src/bin/` is the module `bin`, and `src/lib.rs`, the crate root that only
//! declares the modules and re-exports their API, is no module. References are the paths
//! `crate::x::...` (`qqmx::x::...` in a binary), in `use` lines or written in place, with
//! `use crate::{a, b::c}` groups; a name re-exported at the root (`crate::Config`) counts
//! as its own module (`config`). Comments, strings and `#[cfg(test)]` items are left out:
//! a test may build its fixtures from any layer.
//!
//! [`LAYERS`] is the intended picture, bottom to top. A module may import any module of
//! a lower layer, and a module of its own layer as long as no circle forms; never one
//! above it. A module that is in no layer is a finding too, so a new module has to be
//! placed on purpose.
//!
//! Inside a top-level module, the files form a graph of their own ([`FileGraph`]): a file
//! imports another when one of its `crate::`, `super::` or `self::` paths leads there
//! (through the parent's `pub use child::Name` re-exports too). A parent's imports of its
//! own children are left out: declaring and re-exporting a child is what a parent is for,
//! and a child may use its parent's items. Any other circle between files is a finding.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The layers, bottom to top.
///
/// 1. The vocabulary everything shares: time, the shared units (stages, networks,
///    windows, quota names, duration text), the reply catalogue and its provenance, and
///    the transport helpers that need no settings (PROXY protocol, accept back-off).
/// 2. `config`: the serde model of a config file.
/// 3. What the config turns into: `policy` (pure rules), `auth` (SPF, DKIM, DMARC),
///    `chaos` (faults), `tls` (a rustls config from `config::TlsConfig`).
/// 4. `event`: what happened, typed.
/// 5. `store`: messages and events kept in memory.
/// 6. `expect`: expectations evaluated over the events and messages of a run.
/// 7. `session`: the SMTP state machine.
/// 8. `scenario`: the scenario model (its phases and `[[expect]]`).
/// 9. `server`: listeners, accept loops, shutdown.
/// 10. `inspect`: the inspection and control operations over a server, written once.
/// 11. What drives or shows a server: `timeline`, the embedded handle, the control API.
/// 12. Whole programs' parts: the sidecar assembly, the runner, the remote client.
/// 13. The fuzzing entry points and the binary.
#[rustfmt::skip]
const LAYERS: &[&[&str]] = &[
    &["clock", "units", "reply", "provenance", "proxy", "accept"],
    &["config"],
    &["policy", "auth", "chaos", "tls"],
    &["event"],
    &["store"],
    &["expect"],
    &["session"],
    &["scenario"],
    &["server", "dns"],
    &["inspect"],
    &["timeline", "embedded", "control"],
    &["sidecar", "runner", "remote"],
    &["fuzzing", "bin"],
];

/// No file in `src/` may be longer.
const MAX_LINES: usize = 800;

#[test]
fn the_module_graph_has_no_circle_and_no_import_upwards() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = rust_files(&src);
    let mut findings = Vec::new();
    for (path, text) in &files {
        let lines = text.lines().count();
        if lines > MAX_LINES {
            findings.push(format!(
                "{}: {lines} lines, over {MAX_LINES}",
                shown(&src, path)
            ));
        }
    }
    let graph = Graph::of(&src, &files);
    findings.extend(graph.unplaced());
    findings.extend(graph.circles());
    findings.extend(graph.upwards());
    findings.extend(FileGraph::of(&src, &files).circles());

    assert!(
        findings.is_empty(),
        "{} findings in the module graph of src/:\n{}",
        findings.len(),
        findings
            .iter()
            .map(|f| format!("  - {f}\n"))
            .collect::<String>()
    );
}

/// Every `.rs` file under `dir`, with its text, by path.
fn rust_files(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut files = BTreeMap::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/ is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("a source file is UTF-8");
                files.insert(path, text);
            }
        }
    }
    files
}

fn shown(src: &Path, path: &Path) -> String {
    Path::new("src")
        .join(path.strip_prefix(src).unwrap_or(path))
        .display()
        .to_string()
}

/// The top-level module a file belongs to; `None` for the crate root.
fn module_of(src: &Path, path: &Path) -> Option<String> {
    let relative = path.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    match first {
        "lib.rs" => None,
        _ => Some(first.trim_end_matches(".rs").to_owned()),
    }
}

/// One import of a module by another: where it is written.
struct Import {
    file: String,
    line: usize,
    path: String,
}

/// The imports between top-level modules.
struct Graph {
    /// `from` -> `to` -> where (the first place seen).
    edges: BTreeMap<String, BTreeMap<String, Import>>,
    modules: BTreeSet<String>,
}

impl Graph {
    fn of(src: &Path, files: &BTreeMap<PathBuf, String>) -> Self {
        let root = files.get(&src.join("lib.rs")).expect("src/lib.rs exists");
        let modules = declared_modules(root);
        let reexports = reexports(root, &modules);
        let test_only = test_only_files(src, files);
        let mut edges: BTreeMap<String, BTreeMap<String, Import>> = BTreeMap::new();
        for (path, text) in files {
            let Some(from) = module_of(src, path) else {
                continue;
            };
            if test_only.contains(path) {
                continue;
            }
            let prefix = if from == "bin" { "qqmx" } else { "crate" };
            for (line, reference) in references(&code_of(text), prefix) {
                let to = match reexports.get(&reference) {
                    Some(module) => module.clone(),
                    None if modules.contains(&reference) => reference.clone(),
                    None => continue,
                };
                if to != from {
                    edges
                        .entry(from.clone())
                        .or_default()
                        .entry(to.clone())
                        .or_insert(Import {
                            file: shown(src, path),
                            line,
                            path: format!("{prefix}::{reference}"),
                        });
                }
            }
        }
        let mut modules = modules;
        if files
            .keys()
            .any(|p| module_of(src, p).as_deref() == Some("bin"))
        {
            modules.insert("bin".to_owned());
        }
        Self { edges, modules }
    }

    fn layer(module: &str) -> Option<usize> {
        LAYERS.iter().position(|layer| layer.contains(&module))
    }

    fn import(&self, from: &str, to: &str) -> String {
        let i = &self.edges[from][to];
        format!("{from} -> {to} ({}:{}: {})", i.file, i.line, i.path)
    }

    /// Modules that are in no layer.
    fn unplaced(&self) -> Vec<String> {
        self.modules
            .iter()
            .filter(|m| Self::layer(m).is_none())
            .map(|m| format!("module `{m}` is in no layer of LAYERS"))
            .collect()
    }

    /// Imports from a lower layer to a higher one.
    fn upwards(&self) -> Vec<String> {
        let mut found = Vec::new();
        for (from, tos) in &self.edges {
            for to in tos.keys() {
                if let (Some(low), Some(high)) = (Self::layer(from), Self::layer(to))
                    && low < high
                {
                    found.push(format!(
                        "upwards: {} (layer {} imports layer {})",
                        self.import(from, to),
                        low + 1,
                        high + 1
                    ));
                }
            }
        }
        found
    }

    /// Every circle: each group of modules that import each other, directly or not,
    /// with the imports that close it.
    fn circles(&self) -> Vec<String> {
        let mut found = Vec::new();
        let mut seen = BTreeSet::new();
        for module in &self.modules {
            if seen.contains(module) {
                continue;
            }
            let group: BTreeSet<String> = self
                .reachable(module)
                .into_iter()
                .filter(|other| self.reachable(other).contains(module))
                .collect();
            seen.extend(group.iter().cloned());
            if group.len() > 1 {
                let mut text = format!(
                    "circle among {}:",
                    group.iter().cloned().collect::<Vec<_>>().join(", ")
                );
                for from in &group {
                    for to in self.edges.get(from).into_iter().flat_map(|t| t.keys()) {
                        if group.contains(to) {
                            let _ = write!(text, "\n      {}", self.import(from, to));
                        }
                    }
                }
                found.push(text);
            }
        }
        found
    }

    /// The modules `from` imports, directly or not, and itself.
    fn reachable(&self, from: &str) -> BTreeSet<String> {
        let mut reached = BTreeSet::from([from.to_owned()]);
        let mut todo = vec![from.to_owned()];
        while let Some(module) = todo.pop() {
            for to in self.edges.get(&module).into_iter().flat_map(|t| t.keys()) {
                if reached.insert(to.clone()) {
                    todo.push(to.clone());
                }
            }
        }
        reached
    }
}

/// The imports between the files of each top-level module.
struct FileGraph {
    /// File -> file -> the line of the first import seen.
    edges: BTreeMap<String, BTreeMap<String, usize>>,
}

impl FileGraph {
    fn of(src: &Path, files: &BTreeMap<PathBuf, String>) -> Self {
        let test_only = test_only_files(src, files);
        let modules: BTreeMap<Vec<String>, &PathBuf> = files
            .keys()
            .filter(|p| !test_only.contains(*p))
            .filter_map(|p| Some((module_path(src, p)?, p)))
            .collect();
        let reexports: BTreeMap<Vec<String>, BTreeMap<String, String>> = modules
            .iter()
            .map(|(path, file)| (path.clone(), child_reexports(&files[*file])))
            .collect();
        let mut edges: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
        for (from_path, file) in &modules {
            let is_parent = file.file_name().is_some_and(|n| n == "mod.rs");
            let from = shown(src, file);
            for (line, target) in paths(&code_of(&files[*file]), from_path) {
                let Some(mut to_path) = (1..=target.len())
                    .rev()
                    .map(|n| target[..n].to_vec())
                    .find(|p| modules.contains_key(p))
                else {
                    continue;
                };
                if let Some(child) = target
                    .get(to_path.len())
                    .and_then(|name| reexports.get(&to_path)?.get(name))
                {
                    let mut child_path = to_path.clone();
                    child_path.push(child.clone());
                    if modules.contains_key(&child_path) {
                        to_path = child_path;
                    }
                }
                let same_module = to_path.first() == from_path.first();
                let own_child = is_parent && to_path.starts_with(from_path);
                if to_path == *from_path || !same_module || own_child {
                    continue;
                }
                edges
                    .entry(from.clone())
                    .or_default()
                    .entry(shown(src, modules[&to_path]))
                    .or_insert(line);
            }
        }
        Self { edges }
    }

    /// Every group of files that import each other, directly or not.
    fn circles(&self) -> Vec<String> {
        let reachable = |from: &str| {
            let mut reached = BTreeSet::from([from.to_owned()]);
            let mut todo = vec![from.to_owned()];
            while let Some(file) = todo.pop() {
                for to in self.edges.get(&file).into_iter().flat_map(|t| t.keys()) {
                    if reached.insert(to.clone()) {
                        todo.push(to.clone());
                    }
                }
            }
            reached
        };
        let mut found = Vec::new();
        let mut seen = BTreeSet::new();
        for file in self.edges.keys() {
            if seen.contains(file) {
                continue;
            }
            let group: BTreeSet<String> = reachable(file)
                .into_iter()
                .filter(|other| reachable(other).contains(file))
                .collect();
            seen.extend(group.iter().cloned());
            if group.len() > 1 {
                let mut text = format!(
                    "circle among files {}:",
                    group.iter().cloned().collect::<Vec<_>>().join(", ")
                );
                for from in &group {
                    for (to, line) in self.edges.get(from).into_iter().flatten() {
                        if group.contains(to) {
                            let _ = write!(text, "\n      {from}:{line} -> {to}");
                        }
                    }
                }
                found.push(text);
            }
        }
        found
    }
}

/// A file's module path (`src/policy/state/mod.rs` is `policy::state`); `None` for the
/// crate root and the binaries.
fn module_path(src: &Path, path: &Path) -> Option<Vec<String>> {
    let relative = path.strip_prefix(src).ok()?;
    let mut parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_str().map(str::to_owned))
        .collect::<Option<_>>()?;
    let last = parts.pop()?;
    if parts.first().is_some_and(|first| first == "bin") {
        return None;
    }
    match last.as_str() {
        "mod.rs" => {}
        "lib.rs" if parts.is_empty() => return None,
        _ => parts.push(last.strip_suffix(".rs")?.to_owned()),
    }
    Some(parts)
}

/// The names a parent re-exports from its children (`pub use child::{A, B};`,
/// `pub(crate) use child::C;`), each with its child.
fn child_reexports(text: &str) -> BTreeMap<String, String> {
    used_names(text, |child| {
        child.chars().all(|c| c.is_alphanumeric() || c == '_')
    })
}

/// The names `pub use first::...;` and `pub(crate) use first::...;` statements bring in,
/// each with the path's first segment, where `first` passes `keep`.
fn used_names(text: &str, keep: impl Fn(&str) -> bool) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    for statement in code_of(text).split(';') {
        let statement = statement.trim();
        let Some(rest) = statement
            .strip_prefix("pub use ")
            .or_else(|| statement.strip_prefix("pub(crate) use "))
        else {
            continue;
        };
        let Some((first, items)) = rest.split_once("::") else {
            continue;
        };
        if !keep(first) {
            continue;
        }
        let items = items.trim().trim_start_matches('{').trim_end_matches('}');
        for item in items.split(',') {
            let name = item.rsplit(" as ").next().unwrap_or(item);
            let name = name.rsplit("::").next().unwrap_or(name).trim();
            if !name.is_empty() {
                names.insert(name.to_owned(), first.to_owned());
            }
        }
    }
    names
}

/// Every path in `code` that starts with `crate::`, `super::` or `self::`, made
/// absolute from the module `here`, with its line number; a group `{a, b::c}` gives one
/// path per item.
fn paths(code: &str, here: &[String]) -> Vec<(usize, Vec<String>)> {
    let mut found = Vec::new();
    for (number, line) in code.lines().enumerate() {
        let mut i = 0;
        while i < line.len() {
            let rest = &line[i..];
            let before = line[..i].chars().next_back();
            let boundary = !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
            let start = ["crate::", "super::", "self::"]
                .into_iter()
                .find(|p| boundary && rest.starts_with(p));
            let Some(start) = start else {
                i += rest.chars().next().map_or(1, char::len_utf8);
                continue;
            };
            let mut base: Vec<String> = match start {
                "crate::" => Vec::new(),
                "super::" => here[..here.len().saturating_sub(1)].to_vec(),
                _ => here.to_vec(),
            };
            let mut tail = &rest[start.len()..];
            while let Some(more) = tail.strip_prefix("super::") {
                base.pop();
                tail = more;
            }
            let (trees, used) = use_trees(tail);
            for tree in trees {
                let mut path = base.clone();
                path.extend(tree);
                found.push((number + 1, path));
            }
            i += start.len() + (rest.len() - start.len() - tail.len()) + used.max(1);
        }
    }
    found
}

/// The paths a use tree at the start of `text` names (`a::b`, `a::{b, c::d}`), and how
/// many bytes it took.
fn use_trees(text: &str) -> (Vec<Vec<String>>, usize) {
    let name = identifier(text);
    if name.is_empty() {
        if let Some(group) = text.strip_prefix('{') {
            let mut trees = Vec::new();
            let mut at = 0;
            loop {
                let rest = &group[at..];
                let trimmed = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ',');
                at += rest.len() - trimmed.len();
                if trimmed.is_empty() || trimmed.starts_with('}') {
                    return (trees, 1 + at + usize::from(trimmed.starts_with('}')));
                }
                let (inner, used) = use_trees(trimmed);
                trees.extend(inner);
                at += used.max(1);
            }
        }
        return (vec![Vec::new()], 0);
    }
    let after = &text[name.len()..];
    match after.strip_prefix("::") {
        Some(next) => {
            let (inner, used) = use_trees(next);
            let trees = inner
                .into_iter()
                .map(|mut t| {
                    t.insert(0, name.clone());
                    t
                })
                .collect();
            (trees, name.len() + 2 + used)
        }
        None => (vec![vec![name.clone()]], name.len()),
    }
}

/// The modules `lib.rs` declares (`mod x;`, `pub mod x;`), whatever their `#[cfg]`.
fn declared_modules(root: &str) -> BTreeSet<String> {
    code_of(root)
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let rest = line
                .strip_prefix("pub mod ")
                .or_else(|| line.strip_prefix("pub(crate) mod "))
                .or_else(|| line.strip_prefix("mod "))?;
            Some(rest.strip_suffix(';')?.trim().to_owned())
        })
        .collect()
}

/// The names the root re-exports (`pub use x::{A, B};`), each with its module.
fn reexports(root: &str, modules: &BTreeSet<String>) -> BTreeMap<String, String> {
    used_names(root, |module| modules.contains(module))
}

/// Files declared only under `#[cfg(test)]` (`#[cfg(test)] mod tests;`).
fn test_only_files(src: &Path, files: &BTreeMap<PathBuf, String>) -> BTreeSet<PathBuf> {
    let mut test_only = BTreeSet::new();
    for (path, text) in files {
        let dir = match path.file_name().and_then(|n| n.to_str()) {
            Some("mod.rs" | "lib.rs") => path.parent().unwrap_or(src).to_owned(),
            _ => path.with_extension(""),
        };
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for pair in lines.windows(2) {
            if pair[0] == "#[cfg(test)]"
                && let Some(name) = pair[1]
                    .strip_prefix("mod ")
                    .and_then(|rest| rest.strip_suffix(';'))
            {
                test_only.insert(dir.join(format!("{name}.rs")));
                test_only.insert(dir.join(name).join("mod.rs"));
            }
        }
    }
    test_only
}

/// Every `PREFIX::name` in `code`, with its line number: the first segment after the
/// prefix, or each first segment of a `PREFIX::{a, b::c}` group.
fn references(code: &str, prefix: &str) -> Vec<(usize, String)> {
    let needle = format!("{prefix}::");
    let mut found = Vec::new();
    for (number, line) in code.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find(&needle) {
            let before = rest[..at].chars().next_back();
            rest = &rest[at + needle.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            if let Some(group) = rest.strip_prefix('{') {
                let mut depth = 0usize;
                let mut start = true;
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => start = true,
                        c if start && (c.is_alphanumeric() || c == '_') => {
                            found.push((number + 1, identifier(&group[i..])));
                            start = false;
                        }
                        c if c.is_whitespace() => {}
                        _ => start = false,
                    }
                }
            } else {
                let name = identifier(rest);
                if !name.is_empty() {
                    found.push((number + 1, name));
                }
            }
        }
    }
    found
}

fn identifier(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// `text` with comments, string and character literals blanked (newlines kept, so line
/// numbers hold) and `#[cfg(test)]` items removed.
fn code_of(text: &str) -> String {
    without_tests(&blank_literals(text))
}

fn blank_literals(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
            }
        } else if c == 'r' && matches!(next, Some('"' | '#')) && starts_literal(&chars, i) {
            // A raw string: r"..." or r#"..."#, as many hashes closing as opening.
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            out.push_str("\"\"");
            j += 1;
            while j < chars.len() {
                if chars[j] == '"' && (1..=hashes).all(|h| chars.get(j + h) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                blank(&mut out, chars[j]);
                j += 1;
            }
            i = j;
        } else if c == '"' {
            out.push_str("\"\"");
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
                if let Some(&c) = chars.get(i) {
                    blank(&mut out, c);
                }
                i += 1;
            }
            i += 1;
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{1b}'), not a lifetime ('a).
            let end = match (next, chars.get(i + 2)) {
                (Some('\\'), _) => chars
                    .get(i + 3..)
                    .and_then(|tail| tail.iter().position(|&c| c == '\''))
                    .map(|p| i + 3 + p),
                (Some(_), Some('\'')) => Some(i + 2),
                _ => None,
            };
            match end {
                Some(end) => {
                    out.push_str("' '");
                    i = end + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Whether the `r` at `i` opens a raw string (`r"`, `br"`), rather than ending a name.
fn starts_literal(chars: &[char], i: usize) -> bool {
    let ident = |j: usize| chars[j].is_alphanumeric() || chars[j] == '_';
    match i {
        0 => true,
        1 => !ident(0) || chars[0] == 'b',
        _ => !ident(i - 1) || (chars[i - 1] == 'b' && !ident(i - 2)),
    }
}

/// `code` without the items under `#[cfg(test)]`: up to the `;` or the matching `}` of
/// the item that follows. Newlines are kept.
fn without_tests(code: &str) -> String {
    const MARK: &str = "#[cfg(test)]";
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find(MARK) {
        out.push_str(&rest[..at]);
        let item = &rest[at..];
        let mut depth = 0usize;
        let mut end = item.len();
        for (i, c) in item.char_indices().skip(MARK.len()) {
            match c {
                ';' if depth == 0 => {
                    end = i + 1;
                    break;
                }
                '{' => depth += 1,
                '}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        out.extend(item[..end].chars().filter(|&c| c == '\n'));
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

#[test]
fn references_are_read_from_paths_and_groups_not_from_comments_or_strings() {
    let code = code_of(
        "use crate::config::Config;\n\
         use crate::{policy::Policy, store};\n\
         // crate::runner in a comment\n\
         let s = \"crate::remote in a string\"; let c = '{'; let q = '\\''; let b = br\"crate::bin\";\n\
         let x = crate::clock::Clock::system(); let l: &'static str = r#\"crate::bin\"#;\n\
         #[cfg(test)]\nmod tests {\n    use crate::server::Server;\n}\n\
         use mycrate::other;\n",
    );

    let found = references(&code, "crate");

    let names: Vec<(usize, &str)> = found.iter().map(|(l, n)| (*l, n.as_str())).collect();
    assert_eq!(
        names,
        [(1, "config"), (2, "policy"), (2, "store"), (5, "clock")]
    );
    assert_eq!(code.lines().count(), 10, "line numbers hold");
}

#[test]
fn root_reexports_count_as_their_module() {
    let root = "mod clock;\npub mod config;\n#[cfg(feature = \"control\")]\npub mod runner;\n\
                pub use clock::Clock;\npub use config::{Config, ConfigError as Error};\n";

    let modules = declared_modules(root);
    let names = reexports(root, &modules);

    assert_eq!(
        modules.into_iter().collect::<Vec<_>>(),
        ["clock", "config", "runner"]
    );
    assert_eq!(names["Clock"], "clock");
    assert_eq!(names["Config"], "config");
    assert_eq!(names["Error"], "config");
}

#[test]
fn a_circle_and_an_import_upwards_are_found() {
    let import = |file: &str| Import {
        file: file.to_owned(),
        line: 1,
        path: String::new(),
    };
    let mut edges: BTreeMap<String, BTreeMap<String, Import>> = BTreeMap::new();
    edges
        .entry("config".into())
        .or_default()
        .insert("policy".into(), import("src/config/mod.rs"));
    edges
        .entry("policy".into())
        .or_default()
        .insert("config".into(), import("src/policy/mod.rs"));
    edges
        .entry("clock".into())
        .or_default()
        .insert("reply".into(), import("src/clock.rs"));
    let graph = Graph {
        edges,
        modules: ["clock", "config", "policy", "reply"]
            .map(String::from)
            .into(),
    };

    let circles = graph.circles();
    let upwards = graph.upwards();

    assert_eq!(circles.len(), 1, "{circles:?}");
    assert!(
        circles[0].starts_with("circle among config, policy:"),
        "{circles:?}"
    );
    assert_eq!(upwards.len(), 1, "{upwards:?}");
    assert!(
        upwards[0].starts_with("upwards: config -> policy"),
        "{upwards:?}"
    );
}

#[test]
fn a_circle_between_files_of_one_module_is_found() {
    let src = Path::new("/x/src");
    let files: BTreeMap<PathBuf, String> = [
        ("lib.rs", "mod scenario;\n"),
        (
            "scenario/mod.rs",
            "mod html;\nmod report;\npub use report::Report;\nuse crate::clock::Clock;\n",
        ),
        ("scenario/report.rs", "use super::html::{self, Chart};\n"),
        (
            "scenario/html.rs",
            "use crate::scenario::Report;\nuse super::Phase;\n",
        ),
        ("scenario/phase.rs", "use super::{report::Report, html};\n"),
    ]
    .into_iter()
    .map(|(p, t)| (src.join(p), t.to_owned()))
    .collect();

    let circles = FileGraph::of(src, &files).circles();

    assert_eq!(circles.len(), 1, "{circles:?}");
    assert!(
        circles[0].starts_with("circle among files src/scenario/html.rs, src/scenario/report.rs:"),
        "{circles:?}"
    );
}

#[test]
fn use_trees_expand_groups() {
    let here = ["policy".to_owned(), "state".to_owned(), "redis".to_owned()];
    let found = paths(
        "use super::{lists::{Lists, Recipients}, Health};\nlet x = crate::clock::now();\n\
         use super::super::quota::Breach;\n",
        &here,
    );

    let found: Vec<String> = found
        .into_iter()
        .map(|(line, path)| format!("{line}:{}", path.join("::")))
        .collect();
    assert_eq!(
        found,
        [
            "1:policy::state::lists::Lists",
            "1:policy::state::lists::Recipients",
            "1:policy::state::Health",
            "2:clock::now",
            "3:policy::quota::Breach",
        ]
    );
}
