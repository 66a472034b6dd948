//! The environment overlay: config keys set by `QQMX__<TABLE>__<KEY>` variables.

use std::path::PathBuf;

use serde::Deserialize;

use super::{Config, ConfigError};

impl Config {
    /// Applies settings from environment variables named `QQMX__<TABLE>__<KEY>`: the path
    /// of a key in the TOML file, upper-cased, with `__` between its parts
    /// (`QQMX__LIMITS__MAX_RECIPIENTS=20`, `QQMX__CLOCK__MODE=manual`,
    /// `QQMX__LISTENERS__MX2__ADDR=0.0.0.0:25`). A value is read as TOML when it parses
    /// as one (`20`, `true`, `["a", "b"]`, `"text"`) and as a string otherwise. Other
    /// variables are ignored.
    ///
    /// ```
    /// let vars = [("QQMX__LIMITS__MAX_RECIPIENTS", "20"), ("QQMX__GENERATION", "2019")];
    /// let config = qqmx::Config::default().with_env(vars).unwrap();
    /// assert_eq!(config.limits.max_recipients, 20);
    ///
    /// let err = qqmx::Config::default()
    ///     .with_env([("QQMX__LIMITS__MAX_RECIPIENTS", "many")])
    ///     .unwrap_err();
    /// assert!(err.to_string().starts_with("$QQMX__LIMITS__MAX_RECIPIENTS: key `limits.max_recipients`"));
    /// ```
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] whose path is the variable (`$QQMX__...`) and whose key is
    /// the dotted key it sets.
    pub fn with_env<K, V>(self, vars: impl IntoIterator<Item = (K, V)>) -> Result<Self, ConfigError>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut config = self;
        for (name, value) in vars {
            let name = name.as_ref();
            let Some(path) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let keys: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
            let invalid = |message: String| ConfigError::Invalid {
                path: PathBuf::from(format!("${name}")),
                line: 0,
                column: 0,
                key: keys.join("."),
                message,
            };
            if keys.iter().any(String::is_empty) {
                return Err(invalid("empty key in the variable's name".into()));
            }
            let mut tree = toml::Table::try_from(&config)
                .map_err(|e| invalid(format!("cannot represent the config: {e}")))?;
            set_path(&mut tree, &keys, env_value(value.as_ref())).map_err(invalid)?;
            config =
                Config::deserialize(tree).map_err(|e| invalid(e.message().trim().to_owned()))?;
            config
                .validate()
                .map_err(|problem| invalid(problem.message))?;
        }
        Ok(config)
    }
}

/// Environment variables that set config keys start with this.
const ENV_PREFIX: &str = "QQMX__";

/// A value from the environment: TOML when it parses as a TOML value, else a string.
fn env_value(text: &str) -> toml::Value {
    format!("v = {text}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_owned()))
}

/// Sets `keys` (a path of tables) in `tree` to `value`, making tables on the way.
fn set_path(tree: &mut toml::Table, keys: &[String], value: toml::Value) -> Result<(), String> {
    let Some((last, tables)) = keys.split_last() else {
        return Err("no key".into());
    };
    let mut table = tree;
    for (i, key) in tables.iter().enumerate() {
        let entry = table
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{}` is a value, not a table", keys[..=i].join(".")))?;
    }
    table.insert(last.clone(), value);
    Ok(())
}
