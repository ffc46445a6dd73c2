//! Readings of a parsed schedule for people and for the UI: a plain-language sentence
//! (`describe_*`) and the per-field JSON of `Schedule::fields` (`cron_fields`).

use serde_json::{json, Value};

use super::calendar::{CronSpec, DayBase, DomRule, DowRule, YearSet};
use super::parse::{join, month_name, set_bits};

const DAY_NAMES: [&str; 7] = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
/// Year lists longer than this are cut in the JSON (`year_count` says how many there are).
const MAX_LISTED_YEARS: usize = 64;

/// The shape of one field's set of values within `lo..=hi`.
enum Shape {
    Full,
    /// `lo`, `lo + k`, ... evenly dividing the range (`*/15` minutes).
    Every(u32),
    One(u32),
    Range(u32, u32),
    List(Vec<u32>),
}

fn values(bits: u64, lo: u32, hi: u32) -> Vec<u32> {
    set_bits(bits).filter(|v| (lo..=hi).contains(v)).collect()
}

fn shape(bits: u64, lo: u32, hi: u32) -> Shape {
    let vals = values(bits, lo, hi);
    let span = hi - lo + 1;
    match vals.as_slice() {
        [] => Shape::List(vals),
        _ if vals.len() as u32 == span => Shape::Full,
        [one] => Shape::One(*one),
        [first, second, ..] => {
            let step = second - first;
            let even = vals.windows(2).all(|w| w[1] - w[0] == step);
            if even && *first == lo && span.is_multiple_of(step) && vals.len() as u32 == span / step {
                Shape::Every(step)
            } else if even && step == 1 {
                Shape::Range(*first, vals[vals.len() - 1])
            } else {
                Shape::List(vals)
            }
        }
    }
}

fn plural(n: u64, unit: &str) -> String {
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

fn numbers(vals: &[u32]) -> String {
    join(&vals.iter().map(u32::to_string).collect::<Vec<_>>(), "and")
}

/// "every 30 seconds", "every hour", "every 1 hour 30 minutes".
pub(super) fn describe_every(secs: u64) -> String {
    let parts =
        [(secs / 86_400, "day"), (secs % 86_400 / 3600, "hour"), (secs % 3600 / 60, "minute"), (secs % 60, "second")];
    let nonzero: Vec<(u64, &str)> = parts.into_iter().filter(|(n, _)| *n != 0).collect();
    match nonzero.as_slice() {
        [(1, unit)] => format!("every {unit}"),
        _ => format!("every {}", nonzero.iter().map(|(n, unit)| plural(*n, unit)).collect::<Vec<_>>().join(" ")),
    }
}

/// The plain-language reading of a cron expression.
pub(super) fn describe_cron(spec: &CronSpec) -> String {
    let (time, clock) = time_phrase(spec);
    let mut out = time;
    let mut day = day_phrase(spec);
    let mut month = month_phrase(spec.months);
    if let Some(date) = single_date(spec) {
        (day, month) = (date, String::new());
    }
    if day.is_empty() && clock {
        day = "every day".to_owned();
    }
    if !day.is_empty() {
        let sep = if clock && (day.starts_with("on ") || day.starts_with("every")) { " " } else { ", " };
        out = format!("{out}{sep}{day}");
    }
    for extra in [month, year_phrase(spec.years.as_ref())] {
        if !extra.is_empty() {
            out = format!("{out} {extra}");
        }
    }
    out
}

/// The time-of-day part, and whether it is a list of clock times ("at 02:30").
fn time_phrase(spec: &CronSpec) -> (String, bool) {
    let (secs, mins, hours) = (values(spec.seconds, 0, 59), values(spec.minutes, 0, 59), values(spec.hours, 0, 23));
    if let [s] = secs.as_slice() {
        if mins.len() * hours.len() <= 4 {
            let times: Vec<String> = hours
                .iter()
                .flat_map(|h| mins.iter().map(move |m| (*h, *m)))
                .map(|(h, m)| if *s == 0 { format!("{h:02}:{m:02}") } else { format!("{h:02}:{m:02}:{s:02}") })
                .collect();
            return (format!("at {}", join(&times, "and")), true);
        }
    }
    let (m_shape, h_shape) = (shape(spec.minutes, 0, 59), shape(spec.hours, 0, 23));
    let sec_part = match shape(spec.seconds, 0, 59) {
        Shape::Full => Some("every second".to_owned()),
        Shape::Every(k) => Some(format!("every {k} seconds")),
        Shape::One(0) => None,
        Shape::One(s) => Some(format!("at second {s}")),
        Shape::Range(a, b) => Some(format!("at seconds {a} to {b}")),
        Shape::List(v) => Some(format!("at seconds {}", numbers(&v))),
    };
    let Some(sec_part) = sec_part else {
        let phrase = match (&m_shape, &h_shape) {
            (Shape::Full, Shape::Full) => "every minute".to_owned(),
            (Shape::Every(k), Shape::Full) => format!("every {k} minutes"),
            (Shape::One(0), Shape::Full) => "every hour".to_owned(),
            (Shape::One(m), Shape::Full) => format!("every hour at minute {m}"),
            (Shape::One(0), Shape::Every(k)) => format!("every {k} hours"),
            (Shape::One(m), Shape::Every(k)) => format!("every {k} hours at minute {m}"),
            (Shape::Range(..) | Shape::List(_), Shape::Full) => {
                format!("{} of every hour", minute_phrase(&m_shape).unwrap_or_default())
            }
            _ => [minute_phrase(&m_shape), hour_phrase(&h_shape)].into_iter().flatten().collect::<Vec<_>>().join(", "),
        };
        return (phrase, false);
    };
    let minute = match m_shape {
        Shape::Full if matches!(h_shape, Shape::Full) => {
            if matches!(shape(spec.seconds, 0, 59), Shape::Range(..) | Shape::List(_) | Shape::One(_)) {
                Some("of every minute".to_owned())
            } else {
                None
            }
        }
        Shape::Full => None,
        _ => minute_phrase(&m_shape),
    };
    let phrase = match minute {
        Some(m) if m.starts_with("of ") => format!("{sec_part} {m}"),
        minute => [Some(sec_part), minute, hour_phrase(&h_shape)].into_iter().flatten().collect::<Vec<_>>().join(", "),
    };
    (phrase, false)
}

fn minute_phrase(shape: &Shape) -> Option<String> {
    Some(match shape {
        Shape::Full => "every minute".to_owned(),
        Shape::Every(k) => format!("every {k} minutes"),
        Shape::One(m) => format!("at minute {m}"),
        Shape::Range(a, b) => format!("at minutes {a} to {b}"),
        Shape::List(v) => format!("at minutes {}", numbers(v)),
    })
}

fn hour_phrase(shape: &Shape) -> Option<String> {
    match shape {
        Shape::Full => None,
        Shape::Every(k) => Some(format!("every {k} hours")),
        Shape::One(h) => Some(format!("between {h:02}:00 and {h:02}:59")),
        Shape::Range(a, b) => Some(format!("between {a:02}:00 and {b:02}:59")),
        Shape::List(v) => Some(format!("during hours {}", numbers(v))),
    }
}

/// "on day 1 of the month", "Monday to Friday", "on day 1 of the month or on Monday", "on the
/// last Friday of the month"; empty when every day matches.
fn day_phrase(spec: &CronSpec) -> String {
    let plain_dom = match shape(spec.dom, 1, 31) {
        Shape::Full => Some(None),
        Shape::List(v) if v.is_empty() => None,
        Shape::One(d) => Some(Some(format!("on day {d} of the month"))),
        Shape::Range(a, b) => Some(Some(format!("on days {a} to {b} of the month"))),
        Shape::Every(_) | Shape::List(_) if is_step_from_one(spec.dom) => {
            Some(Some(format!("on every {} day of the month", ordinal(step_of(spec.dom)))))
        }
        Shape::Every(_) | Shape::List(_) => {
            Some(Some(format!("on days {} of the month", numbers(&values(spec.dom, 1, 31)))))
        }
    };
    // `None` = every day of the month; the special tokens add to the plain days.
    let dom = match plain_dom {
        Some(None) => None,
        plain => with_rules(plain.flatten(), spec.dom_rules.iter().map(|r| dom_rule_phrase(*r))),
    };
    let plain_dow = values(spec.dow, 0, 6);
    let dow = if plain_dow.len() == 7 {
        None
    } else {
        with_rules(weekday_phrase(spec.dow), spec.dow_rules.iter().map(|r| dow_rule_phrase(*r)))
    };
    let and_rule = spec.dom_star || spec.dow_star;
    match (dom, dow) {
        (None, None) => String::new(),
        // OR rule with one side matching every day: every day matches.
        (None, Some(_)) | (Some(_), None) if !and_rule => String::new(),
        (Some(d), None) => d,
        (None, Some(w)) => w,
        (Some(d), Some(w)) if and_rule => format!("{d}, if it falls {w}"),
        (Some(d), Some(w)) => format!("{d} or {w}"),
    }
}

/// The plain phrase and the special tokens' phrases, joined with "or"; `None` when both are empty.
fn with_rules(plain: Option<String>, rules: impl Iterator<Item = String>) -> Option<String> {
    let parts: Vec<String> = plain.into_iter().chain(rules).collect();
    (!parts.is_empty()).then(|| join(&parts, "or"))
}

/// "on the last day of the month", "on the weekday nearest day 15 of the month".
fn dom_rule_phrase(rule: DomRule) -> String {
    let base = match rule.base {
        DayBase::Day(n) => format!("day {n} of the month"),
        DayBase::FromEnd(0) => "the last day of the month".to_owned(),
        DayBase::FromEnd(1) => "the last day of the month minus 1 day".to_owned(),
        DayBase::FromEnd(n) => format!("the last day of the month minus {n} days"),
    };
    match (rule.nearest_weekday, rule.base) {
        (false, _) => format!("on {base}"),
        (true, DayBase::FromEnd(0)) => "on the last weekday of the month".to_owned(),
        (true, _) => format!("on the weekday nearest {base}"),
    }
}

/// "on the third Friday of the month", "on the last Friday of the month".
fn dow_rule_phrase(rule: DowRule) -> String {
    let day = DAY_NAMES[rule.weekday() as usize % 7];
    match rule {
        DowRule::Nth { nth, .. } => {
            let which = ["first", "second", "third", "fourth", "fifth"].get(nth as usize - 1).copied().unwrap_or("nth");
            format!("on the {which} {day} of the month")
        }
        DowRule::Last { .. } => format!("on the last {day} of the month"),
    }
}

/// `1, 1+k, 1+2k, ...` through the end of the month, with at least 3 values.
fn is_step_from_one(dom: u64) -> bool {
    let vals = values(dom, 1, 31);
    let k = step_of(dom);
    vals.len() >= 3
        && k > 1
        && vals[0] == 1
        && vals.windows(2).all(|w| w[1] - w[0] == k)
        && vals[vals.len() - 1] + k > 31
}

fn step_of(dom: u64) -> u32 {
    let vals = values(dom, 1, 31);
    vals.get(1).zip(vals.first()).map_or(0, |(b, a)| b - a)
}

fn ordinal(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// "on Sunday", "Monday to Friday", "Friday to Sunday", "on Monday, Wednesday and Friday".
fn weekday_phrase(dow: u64) -> Option<String> {
    let days = values(dow, 0, 6);
    if days.len() == 7 || days.is_empty() {
        return None;
    }
    let names: Vec<String> = days.iter().map(|d| DAY_NAMES[*d as usize].to_owned()).collect();
    // A run of consecutive days, possibly wrapping past Saturday ("Friday to Sunday").
    let has = |d: u32| dow >> (d % 7) & 1 == 1;
    if let Some(&start) = days.iter().find(|&&d| !has(d + 6)) {
        let len = (0..7).take_while(|i| has(start + i)).count();
        let (first, last) = (DAY_NAMES[start as usize], DAY_NAMES[((start + len as u32 - 1) % 7) as usize]);
        if len == days.len() && len >= 3 {
            return Some(format!("{first} to {last}"));
        }
        if len == days.len() && len == 2 {
            return Some(format!("on {first} and {last}"));
        }
    }
    Some(format!("on {}", join(&names, "and")))
}

fn month_phrase(months: u64) -> String {
    match shape(months, 1, 12) {
        Shape::Full => String::new(),
        Shape::One(m) => format!("in {}", month_name(m)),
        Shape::Range(a, b) if b - a >= 2 => format!("from {} to {}", month_name(a), month_name(b)),
        _ => {
            let names: Vec<String> = values(months, 1, 12).into_iter().map(|m| month_name(m).to_owned()).collect();
            format!("in {}", join(&names, "and"))
        }
    }
}

/// "on January 1" when the schedule names one day of one month and no weekday.
fn single_date(spec: &CronSpec) -> Option<String> {
    let (Shape::One(d), Shape::One(m)) = (shape(spec.dom, 1, 31), shape(spec.months, 1, 12)) else { return None };
    let plain = spec.dom_rules.is_empty() && spec.dow_rules.is_empty();
    (plain && spec.dow == 0x7f && spec.dow_star).then(|| format!("on {} {d}", month_name(m)))
}

fn year_phrase(years: Option<&YearSet>) -> String {
    let Some(set) = years else { return String::new() };
    let runs = set.runs();
    match runs.as_slice() {
        [] => String::new(),
        [(a, b)] if a == b => format!("in {a}"),
        [(a, b)] => format!("from {a} to {b}"),
        _ if set.len() <= 5 => format!("in {}", join(&set.iter().map(|y| y.to_string()).collect::<Vec<_>>(), "and")),
        [(first, _), .., (_, last)] => format!("in some years from {first} to {last}"),
    }
}

fn field_json(bits: u64, lo: u32, hi: u32) -> Value {
    let vals = values(bits, lo, hi);
    if vals.len() as u32 == hi - lo + 1 {
        json!("*")
    } else {
        json!(vals)
    }
}

/// The per-field JSON of `Schedule::fields` for a cron expression.
pub(super) fn cron_fields(spec: &CronSpec, expr: &str, description: &str) -> Value {
    let mut out = json!({
        "kind": "cron",
        "expr": expr,
        "seconds": field_json(spec.seconds, 0, 59),
        "minutes": field_json(spec.minutes, 0, 59),
        "hours": field_json(spec.hours, 0, 23),
        "day_of_month": field_json(spec.dom, 1, 31),
        "month": field_json(spec.months, 1, 12),
        "day_of_week": field_json(spec.dow, 0, 6),
        "year": "*",
        "day_of_month_special": spec.dom_rules.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "day_of_week_special": spec.dow_rules.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "day_rule": if spec.dom_star || spec.dow_star { "and" } else { "or" },
        "wildcard": spec.wildcard,
        "description": description,
    });
    if let Some(set) = &spec.years {
        out["year"] = json!(set.iter().take(MAX_LISTED_YEARS).collect::<Vec<_>>());
        out["year_count"] = json!(set.len());
    }
    out
}
