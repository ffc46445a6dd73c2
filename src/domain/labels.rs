//! Worker labels and job selectors (README "Worker labels").
//!
//! Owns: the label map type, its comma form (`zone=a, gpu=true`), the name/value rules, and
//! whether a worker's labels satisfy a job's selector. Pure, no I/O.
//!
//! Leaves to others: where labels come from (config, [`crate::config`]), how they are published
//! (membership, [`super::WorkerInfo::labels`]), and ranking within the eligible set
//! (`actors::rank`).

use std::collections::BTreeMap;

/// A worker's labels, or a job's selector: label name -> value. Sorted, so every worker and
/// every serialization agrees on the order.
pub type Labels = BTreeMap<String, String>;

/// Most labels on one worker (and most entries in one selector).
pub const MAX_LABELS: usize = 32;
/// Longest label name, in bytes.
pub const MAX_LABEL_NAME_BYTES: usize = 63;
/// Longest label value, in bytes.
pub const MAX_LABEL_VALUE_BYTES: usize = 63;

/// A label (or selector entry) that breaks the rules, with what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct LabelError {
    /// What is wrong, naming the offending label.
    pub message: String,
}

impl LabelError {
    fn new(message: String) -> Self {
        Self { message }
    }
}

/// Whether `c` may appear in a label name (`[A-Za-z0-9._/-]`).
fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-')
}

/// Whether `c` may appear in a label value (`[A-Za-z0-9._-]`).
fn value_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Checks one label: name `[A-Za-z0-9._/-]{1,63}`, value `[A-Za-z0-9._-]{0,63}`.
///
/// # Errors
/// What is wrong, naming the label.
pub fn validate_label(name: &str, value: &str) -> Result<(), LabelError> {
    if name.is_empty() {
        return Err(LabelError::new(format!("label {name:?}={value:?} has an empty name")));
    }
    if name.len() > MAX_LABEL_NAME_BYTES {
        return Err(LabelError::new(format!(
            "label name {name:?} is {} bytes; the limit is {MAX_LABEL_NAME_BYTES}",
            name.len()
        )));
    }
    if !name.chars().all(name_char) {
        return Err(LabelError::new(format!(
            "label name {name:?} may hold only letters, digits, '.', '_', '/' and '-'"
        )));
    }
    if value.len() > MAX_LABEL_VALUE_BYTES {
        return Err(LabelError::new(format!(
            "value of label {name:?} is {} bytes; the limit is {MAX_LABEL_VALUE_BYTES}",
            value.len()
        )));
    }
    if !value.chars().all(value_char) {
        return Err(LabelError::new(format!(
            "value {value:?} of label {name:?} may hold only letters, digits, '.', '_' and '-'"
        )));
    }
    Ok(())
}

/// Checks a whole label map (or selector): every entry, and at most [`MAX_LABELS`] of them.
///
/// # Errors
/// The first offending label.
pub fn validate_labels(labels: &Labels) -> Result<(), LabelError> {
    if labels.len() > MAX_LABELS {
        return Err(LabelError::new(format!("{} labels; at most {MAX_LABELS}", labels.len())));
    }
    labels.iter().try_for_each(|(k, v)| validate_label(k, v))
}

/// Parses the comma form `zone=a, gpu=true` (spaces around entries ignored; empty = none) and
/// validates it. A name given twice is an error.
///
/// # Errors
/// The first entry that is not `name=value` or breaks the rules.
pub fn parse_labels(raw: &str) -> Result<Labels, LabelError> {
    let mut out = Labels::new();
    for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((name, value)) = entry.split_once('=') else {
            return Err(LabelError::new(format!("{entry:?} is not name=value")));
        };
        let (name, value) = (name.trim(), value.trim());
        validate_label(name, value)?;
        if out.insert(name.to_owned(), value.to_owned()).is_some() {
            return Err(LabelError::new(format!("label {name:?} is given twice")));
        }
    }
    validate_labels(&out)?;
    Ok(out)
}

/// The comma form of `labels` (`gpu=true,zone=a`), as [`parse_labels`] reads it.
pub fn format_labels(labels: &Labels) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// Whether a worker with `labels` may run a job with `selector`: every selector entry names a
/// label the worker has, with exactly that value. An empty selector matches every worker.
pub fn matches(selector: &Labels, labels: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn the_comma_form_parses_with_spaces_and_round_trips() {
        let l = parse_labels(" zone=a , gpu=true,rack/row=r-1.2 ").expect("valid");
        assert_eq!(l, labels(&[("zone", "a"), ("gpu", "true"), ("rack/row", "r-1.2")]));
        assert_eq!(parse_labels(&format_labels(&l)).expect("round trip"), l);
        assert_eq!(parse_labels("").expect("empty"), Labels::new());
        assert_eq!(parse_labels(" , ").expect("only commas"), Labels::new());
        assert_eq!(parse_labels("empty=").expect("empty value"), labels(&[("empty", "")]));
    }

    #[test]
    fn bad_labels_are_rejected_naming_them() {
        for (raw, names) in [
            ("zone", "\"zone\" is not name=value"),
            ("=a", "empty name"),
            ("zo ne=a", "\"zo ne\""),
            ("zone=a b", "\"a b\""),
            ("zone=a/b", "\"a/b\""),
            ("zone=a,zone=b", "given twice"),
            ("z\u{e9}=a", "\"z\u{e9}\""),
        ] {
            let e = parse_labels(raw).expect_err(raw);
            assert!(e.message.contains(names), "{raw}: {}", e.message);
        }
        let long = "n".repeat(64);
        assert!(parse_labels(&format!("{long}=a")).expect_err("long name").message.contains("63"));
        assert!(parse_labels(&format!("a={long}")).expect_err("long value").message.contains("63"));
        assert!(parse_labels(&format!("{}=a", "n".repeat(63))).is_ok());
        let many: Vec<String> = (0..33).map(|i| format!("l{i}=v")).collect();
        assert!(parse_labels(&many.join(",")).expect_err("33").message.contains("at most 32"));
        assert!(parse_labels(&many[..32].join(",")).is_ok());
    }

    #[test]
    fn a_selector_matches_when_every_entry_matches() {
        let worker = labels(&[("zone", "b"), ("gpu", "true")]);
        assert!(matches(&Labels::new(), &worker));
        assert!(matches(&Labels::new(), &Labels::new()));
        assert!(matches(&labels(&[("zone", "b")]), &worker));
        assert!(matches(&labels(&[("zone", "b"), ("gpu", "true")]), &worker));
        assert!(!matches(&labels(&[("zone", "a")]), &worker));
        assert!(!matches(&labels(&[("zone", "b"), ("ssd", "true")]), &worker));
        assert!(!matches(&labels(&[("zone", "b")]), &Labels::new()));
        // An empty required value matches only a label present with an empty value.
        assert!(!matches(&labels(&[("gpu", "")]), &worker));
        assert!(matches(&labels(&[("gpu", "")]), &labels(&[("gpu", "")])));
    }
}
