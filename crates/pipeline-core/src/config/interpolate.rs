//! `${VAR}` and `${VAR:-default}` in the config's strings, filled from the process
//! environment (or any lookup); `$${` writes a literal `${`.

use super::errors::ConfigError;
use std::collections::BTreeMap;
use std::path::Path;

/// The keys whose value in the file holds a `${…}`, with that text.
pub(super) fn variable_keys(value: &toml::Value, key: &str, found: &mut BTreeMap<String, String>) {
    let child_key = |child: &str| {
        if key.is_empty() {
            child.to_string()
        } else {
            format!("{key}.{child}")
        }
    };
    match value {
        toml::Value::String(text) if text.contains("${") => {
            found.insert(key.to_string(), text.clone());
        }
        toml::Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                variable_keys(item, &format!("{key}[{index}]"), found);
            }
        }
        toml::Value::Table(table) => {
            for (name, child) in table {
                variable_keys(child, &child_key(name), found);
            }
        }
        _ => {}
    }
}

pub(super) fn interpolate(
    file: &Path,
    value: &mut toml::Value,
    key: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    let child_key = |child: &str| {
        if key.is_empty() {
            child.to_string()
        } else {
            format!("{key}.{child}")
        }
    };
    match value {
        toml::Value::String(text) => {
            let whole_variable =
                text.starts_with("${") && text.ends_with('}') && text.matches("${").count() == 1;
            let expanded = expand(file, text, key, lookup)?;
            // `"${BAKE_SECONDS:-300}"` may fill a number or a boolean field.
            *value = match (whole_variable, expanded.as_str()) {
                (true, "true") => toml::Value::Boolean(true),
                (true, "false") => toml::Value::Boolean(false),
                (true, number) if number.parse::<i64>().is_ok() => {
                    toml::Value::Integer(number.parse().unwrap_or_default())
                }
                (true, number)
                    if number.parse::<f64>().is_ok_and(f64::is_finite) && !number.is_empty() =>
                {
                    toml::Value::Float(number.parse().unwrap_or_default())
                }
                _ => toml::Value::String(expanded),
            };
        }
        toml::Value::Array(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                interpolate(file, item, &format!("{key}[{index}]"), lookup)?;
            }
        }
        toml::Value::Table(table) => {
            for (name, child) in table.iter_mut() {
                interpolate(file, child, &child_key(name), lookup)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Expands `${VAR}` and `${VAR:-default}` in one string.
pub fn expand(
    file: &Path,
    text: &str,
    key: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        if let Some(escaped) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = escaped;
            continue;
        }
        let Some(body_and_rest) = after.strip_prefix("${") else {
            out.push('$');
            rest = &after[1..];
            continue;
        };
        let Some(end) = body_and_rest.find('}') else {
            return Err(ConfigError::invalid(file, key, "has an unclosed `${`")
                .with_value(format!("{text:?}"))
                .with_help("write ${NAME} or ${NAME:-default}, or $${ for a literal ${"));
        };
        let body = &body_and_rest[..end];
        let (name, default) = match body.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (body, None),
        };
        let name_ok = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !name_ok {
            return Err(ConfigError::invalid(file, key, "has a bad variable name")
                .with_value(format!("${{{body}}}"))
                .with_help("variable names are letters, digits and underscores"));
        }
        match (lookup(name), default) {
            (Some(found), _) => out.push_str(&found),
            (None, Some(default)) => out.push_str(default),
            (None, None) => {
                return Err(ConfigError::invalid(
                    file,
                    key,
                    format!("uses the environment variable {name}, which is not set"),
                )
                .with_value(format!("${{{name}}}"))
                .with_help(format!(
                    "export {name}=..., or write ${{{name}:-default}} to give a default"
                )))
            }
        }
        rest = &body_and_rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}
