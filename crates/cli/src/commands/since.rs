//! `--since` spans back from now (`10m`, `30d`), shared by `report` and `logs`; each
//! command adds the absolute times it takes.

use chrono::{DateTime, Utc};

/// `text` as `<count><unit>` back from `now`, with `units` as `(unit, seconds)`; `None`
/// when `text` is not of that form (the caller tries an absolute time). `bad` words an
/// error for the flag.
pub fn span_back(
    text: &str,
    now: DateTime<Utc>,
    units: &[(char, i64)],
    bad: &dyn Fn(&str) -> String,
) -> Option<Result<DateTime<Utc>, String>> {
    let unit = text.chars().last().filter(char::is_ascii_alphabetic)?;
    let count = text[..text.len() - unit.len_utf8()].parse::<u32>().ok()?;
    let Some((_, seconds)) = units.iter().find(|(u, _)| *u == unit) else {
        return Some(Err(bad(&format!("the unit is {}", unit_list(units)))));
    };
    if count == 0 {
        return Some(Err(bad("the span must be longer than nothing")));
    }
    Some(
        now.checked_sub_signed(chrono::Duration::seconds(i64::from(count) * seconds))
            .ok_or_else(|| bad("that reaches before any time tugboat can count")),
    )
}

/// `s, m, h or d`.
fn unit_list(units: &[(char, i64)]) -> String {
    let names: Vec<String> = units.iter().map(|(u, _)| u.to_string()).collect();
    match names.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_listed_as_a_person_would() {
        assert_eq!(unit_list(&[('s', 1), ('m', 60), ('h', 3600)]), "s, m or h");
        assert_eq!(unit_list(&[('d', 86_400)]), "d");
    }
}
