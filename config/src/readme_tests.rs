//! The README's configuration table is checked against the keys declared in `keys.rs`:
//! each scalar key has exactly one row, naming its environment variable and its flag;
//! each table key has a row marked TOML only; no row names a key that does not exist.

use crate::keys::{env_name, SCALAR_KEYS, TABLE_KEYS};

/// The rows of the table under `## Configuration`: their cells (`\|` inside a cell is
/// a literal bar).
fn rows() -> Vec<Vec<String>> {
    let readme = include_str!("../../README.md");
    let section = readme
        .split("\n## Configuration\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README has a Configuration section");
    section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            l.replace("\\|", "\u{1}")
                .split('|')
                .map(|c| c.trim().replace('\u{1}', "|"))
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect()
}

/// The backticked words of a cell.
fn quoted(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The keys a row is about: its first cell's quoted words, or for a TOML table
/// (`[name]`, `[[name]]`) the table's name alone.
fn row_keys(row: &[String]) -> Vec<String> {
    let words = quoted(&row[0]);
    match words.first() {
        Some(w) if w.starts_with('[') => vec![w.trim_matches(['[', ']']).to_string()],
        _ => words,
    }
}

#[test]
fn every_key_has_one_row_with_its_environment_variable_and_flag() {
    let rows = rows();
    assert!(
        rows.len() > 40,
        "the table was not found: {} rows",
        rows.len()
    );
    for key in SCALAR_KEYS {
        let found: Vec<&Vec<String>> = rows
            .iter()
            .filter(|r| row_keys(r).iter().any(|k| k == key))
            .collect();
        assert_eq!(found.len(), 1, "README rows for `{key}`: {found:?}");
        let row = found[0];
        assert!(row.len() >= 5, "`{key}`: a row of five cells: {row:?}");
        let env = env_name(key);
        assert!(
            quoted(&row[1]).contains(&env),
            "`{key}`: the row's environment column lacks `{env}`: {row:?}"
        );
        let flag = format!("--{}", key.replace('_', "-"));
        assert!(
            quoted(&row[2]).iter().any(|f| f == &flag),
            "`{key}`: the row's flag column lacks `{flag}`: {row:?}"
        );
    }
    for table in TABLE_KEYS {
        let found: Vec<&Vec<String>> = rows
            .iter()
            .filter(|r| row_keys(r).first() == Some(&table.to_string()))
            .collect();
        assert_eq!(found.len(), 1, "README rows for `[{table}]`: {found:?}");
    }
}

#[test]
fn no_row_names_a_key_that_does_not_exist() {
    for row in rows() {
        for key in row_keys(&row) {
            assert!(
                SCALAR_KEYS.contains(&key.as_str()) || TABLE_KEYS.contains(&key.as_str()),
                "README names `{key}`, which is no configuration key: {row:?}"
            );
        }
    }
}
