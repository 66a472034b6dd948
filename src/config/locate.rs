//! The TOML position locator: which line and column hold a key, so that errors name them.

use std::path::Path;

use super::ConfigError;
use super::validate::Problem;

/// `:line:column`, or nothing when the line is unknown (0).
pub(super) fn location(line: usize, column: usize) -> String {
    if line == 0 {
        String::new()
    } else {
        format!(":{line}:{column}")
    }
}

/// Parses TOML `text` into a `T` and checks it with `validate`, which returns the first
/// [`Problem`]; errors name `path`, the line and the key.
pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    path: &Path,
    validate: impl FnOnce(&T) -> Result<(), Problem>,
) -> Result<T, ConfigError> {
    let value: T = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        let (line, column) = line_col(text, offset);
        ConfigError::Invalid {
            path: path.to_owned(),
            line,
            column,
            key: key_at(text, line).unwrap_or_else(|| "(document)".into()),
            message: e.message().trim().to_owned(),
        }
    })?;
    validate(&value).map_err(|problem| {
        let (line, column) =
            locate(text, &problem.table, problem.index, &problem.key).unwrap_or((0, 0));
        problem.at(path, line, column)
    })?;
    Ok(value)
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// The table header in force at `line` (1-based), without brackets.
fn table_at(text: &str, line: usize) -> String {
    text.lines()
        .take(line)
        .filter_map(|l| {
            let l = l.trim();
            let inner = l.strip_prefix('[')?.split(']').next()?;
            Some(inner.trim_matches('[').trim().to_owned())
        })
        .last()
        .unwrap_or_default()
}

/// The dotted key defined on `line` (1-based), if the line is `key = value`.
fn key_at(text: &str, line: usize) -> Option<String> {
    let source = text.lines().nth(line.checked_sub(1)?)?;
    let trimmed = source.trim();
    if trimmed.starts_with('[') {
        return Some(trimmed.trim_matches(|c| c == '[' || c == ']').to_owned());
    }
    let key = source.split('=').next()?.trim().trim_matches('"');
    if key.is_empty() || !source.contains('=') {
        return None;
    }
    let table = table_at(text, line);
    Some(if table.is_empty() {
        key.to_owned()
    } else {
        format!("{table}.{key}")
    })
}

/// Line and column of `key` inside `[table]` (top level when `table` is empty), or
/// inside the `index`th `[[table]]` (from 0), whose header it falls back to when the
/// key is not written in it.
fn locate(text: &str, table: &str, index: Option<usize>, key: &str) -> Option<(usize, usize)> {
    let mut current = String::new();
    // Headers of `[[table]]` seen so far, and the line and column of the wanted one.
    let mut seen = 0;
    let mut header = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            if header.is_some() {
                break;
            }
            current = table_at(line, 1);
            if let Some(index) = index
                && current == table
                && trimmed.starts_with("[[")
            {
                if seen == index {
                    header = Some((i + 1, line.len() - trimmed.len() + 1));
                }
                seen += 1;
            }
            continue;
        }
        if index.is_some() && header.is_none() {
            continue;
        }
        let candidate = trimmed
            .split('=')
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches('"');
        if current == table && candidate == key && trimmed.contains('=') {
            return Some((i + 1, line.len() - trimmed.len() + 1));
        }
    }
    header
}
