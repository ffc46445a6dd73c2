//! Tests of the cron dialect: every field form, macros, `@every`, the 5/6/7-field readings,
//! the day rule, leap years and years, DST in real zones, invalid input, termination, and a
//! differential check against the `cron` crate where the semantics agree.

use std::str::FromStr;

use chrono::{DateTime, Datelike, Offset, SecondsFormat, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

use super::*;

const NEW_YORK: Tz = chrono_tz::America::New_York;
const LONDON: Tz = chrono_tz::Europe::London;
const LORD_HOWE: Tz = chrono_tz::Australia::Lord_Howe;
const UTC: Tz = chrono_tz::UTC;

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap_or_else(|e| panic!("bad test time {s}: {e}"))
}

fn show(times: &[DateTime<Utc>]) -> Vec<String> {
    times.iter().map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)).collect()
}

fn parse_in(expr: &str, dialect: Dialect) -> Schedule {
    Schedule::parse(expr, dialect).unwrap_or_else(|e| panic!("{expr:?} should parse: {e}"))
}

/// The next `n` fire times of `expr` (distcron dialect) after `after`, in `tz`, as RFC 3339.
fn fires(expr: &str, after: &str, tz: Tz, n: usize) -> Vec<String> {
    show(&parse_in(expr, Dialect::Distcron).next_n(at(after), tz, n))
}

fn seed_fires(expr: &str, after: &str, n: usize) -> Vec<String> {
    show(&parse_in(expr, Dialect::Seed).next_n(at(after), UTC, n))
}

fn err(expr: &str, dialect: Dialect) -> CronError {
    match Schedule::parse(expr, dialect) {
        Ok(s) => panic!("{expr:?} should be rejected, parsed as {s:?}"),
        Err(e) => e,
    }
}

// ---- field forms -------------------------------------------------------------------------

#[test]
fn five_fields_are_minute_first_with_seconds_zero() {
    assert_eq!(
        fires("*/15 * * * *", "2026-01-01T00:00:00Z", UTC, 4),
        ["2026-01-01T00:15:00Z", "2026-01-01T00:30:00Z", "2026-01-01T00:45:00Z", "2026-01-01T01:00:00Z"]
    );
}

#[test]
fn next_after_is_strictly_after_even_on_a_fire_time_or_between_seconds() {
    assert_eq!(fires("0 * * * *", "2026-01-01T05:00:00Z", UTC, 1), ["2026-01-01T06:00:00Z"]);
    let s = parse_in("* * * * * *", Dialect::Distcron);
    let after = at("2026-01-01T05:00:00.500Z");
    assert_eq!(show(&s.next_n(after, UTC, 2)), ["2026-01-01T05:00:01Z", "2026-01-01T05:00:02Z"]);
}

#[test]
fn numbers_ranges_steps_and_lists_are_read_per_field() {
    assert_eq!(
        fires("5-20/5 1 * * *", "2026-01-01T00:00:00Z", UTC, 5),
        [
            "2026-01-01T01:05:00Z",
            "2026-01-01T01:10:00Z",
            "2026-01-01T01:15:00Z",
            "2026-01-01T01:20:00Z",
            "2026-01-02T01:05:00Z"
        ]
    );
    // `a/n` runs from a to the top of the range.
    assert_eq!(
        fires("50/5 * * * *", "2026-01-01T00:00:00Z", UTC, 3),
        ["2026-01-01T00:50:00Z", "2026-01-01T00:55:00Z", "2026-01-01T01:50:00Z"]
    );
    assert_eq!(
        fires("0 1,3-4,22 * * *", "2026-01-01T00:00:00Z", UTC, 5),
        [
            "2026-01-01T01:00:00Z",
            "2026-01-01T03:00:00Z",
            "2026-01-01T04:00:00Z",
            "2026-01-01T22:00:00Z",
            "2026-01-02T01:00:00Z"
        ]
    );
    let f = parse_in("0,15,30,45 */6 1-10/3 * *", Dialect::Distcron).fields();
    assert_eq!(f["seconds"], serde_json::json!([0]));
    assert_eq!(f["minutes"], serde_json::json!([0, 15, 30, 45]));
    assert_eq!(f["hours"], serde_json::json!([0, 6, 12, 18]));
    assert_eq!(f["day_of_month"], serde_json::json!([1, 4, 7, 10]));
    assert_eq!(f["month"], "*");
    assert_eq!(f["day_of_week"], "*");
    assert_eq!(f["year"], "*");
    assert_eq!(f["kind"], "cron");
    assert_eq!(f["wildcard"], true);
}

#[test]
fn leading_zeros_and_any_whitespace_are_accepted() {
    let plain = parse_in("5 1 * * *", Dialect::Distcron);
    for expr in ["05 01 * * *", "  5\t1   *\t\t* *  ", "005 0001 * * *", "\t5 1 * * *\n"] {
        let s = parse_in(expr, Dialect::Distcron);
        assert_eq!(s.fields()["minutes"], plain.fields()["minutes"], "{expr:?}");
        assert_eq!(s.next_after(at("2026-01-01T00:00:00Z"), UTC), plain.next_after(at("2026-01-01T00:00:00Z"), UTC));
    }
}

#[test]
fn month_and_day_names_are_case_insensitive() {
    let a = parse_in("0 0 * jan,Mar mon-FRI", Dialect::Distcron);
    let b = parse_in("0 0 * 1,3 1-5", Dialect::Distcron);
    assert_eq!(a.fields()["month"], serde_json::json!([1, 3]));
    assert_eq!(a.fields()["day_of_week"], serde_json::json!([1, 2, 3, 4, 5]));
    assert_eq!(a.next_n(at("2026-01-01T00:00:00Z"), UTC, 50), b.next_n(at("2026-01-01T00:00:00Z"), UTC, 50));
    let all = parse_in("0 0 1 JAN,feb,Mar,APR,may,jun,jul,aug,sep,oct,nov,dec *", Dialect::Distcron);
    assert_eq!(all.fields()["month"], "*");
    let days = parse_in("0 0 * * sun,MON,tue,Wed,thu,FRI,sat", Dialect::Distcron);
    assert_eq!(days.fields()["day_of_week"], "*");
}

#[test]
fn zero_and_seven_are_both_sunday() {
    // 2026-01-04 is a Sunday.
    let sundays = ["2026-01-04T00:00:00Z", "2026-01-11T00:00:00Z"];
    assert_eq!(fires("0 0 * * 0", "2026-01-01T00:00:00Z", UTC, 2), sundays);
    assert_eq!(fires("0 0 * * 7", "2026-01-01T00:00:00Z", UTC, 2), sundays);
    assert_eq!(fires("0 0 * * SUN", "2026-01-01T00:00:00Z", UTC, 2), sundays);
    assert_eq!(parse_in("0 0 * * 0-7", Dialect::Distcron).fields()["day_of_week"], "*");
}

#[test]
fn one_to_five_is_monday_to_friday_and_five_to_seven_is_friday_to_sunday() {
    // 2026-01-01 is a Thursday.
    assert_eq!(
        fires("0 9 * * 1-5", "2026-01-01T10:00:00Z", UTC, 4),
        ["2026-01-02T09:00:00Z", "2026-01-05T09:00:00Z", "2026-01-06T09:00:00Z", "2026-01-07T09:00:00Z"]
    );
    assert_eq!(
        fires("0 9 * * 5-7", "2026-01-01T10:00:00Z", UTC, 4),
        ["2026-01-02T09:00:00Z", "2026-01-03T09:00:00Z", "2026-01-04T09:00:00Z", "2026-01-09T09:00:00Z"]
    );
    assert_eq!(parse_in("0 0 * * 5-7", Dialect::Distcron).fields()["day_of_week"], serde_json::json!([0, 5, 6]));
}

#[test]
fn restricted_day_of_month_and_day_of_week_are_ored() {
    // March 2026: the 1st is a Sunday; Mondays are 2, 9, 16, 23, 30. April 1st is a Wednesday.
    assert_eq!(
        fires("0 0 1 * 1", "2026-02-28T00:00:00Z", UTC, 8),
        [
            "2026-03-01T00:00:00Z",
            "2026-03-02T00:00:00Z",
            "2026-03-09T00:00:00Z",
            "2026-03-16T00:00:00Z",
            "2026-03-23T00:00:00Z",
            "2026-03-30T00:00:00Z",
            "2026-04-01T00:00:00Z",
            "2026-04-06T00:00:00Z"
        ]
    );
    assert_eq!(parse_in("0 0 1 * 1", Dialect::Distcron).fields()["day_rule"], "or");
}

#[test]
fn a_star_day_field_leaves_the_other_to_decide() {
    let first = ["2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z"];
    assert_eq!(fires("0 0 1 * *", "2026-02-28T00:00:00Z", UTC, 2), first);
    assert_eq!(fires("0 0 1 * ?", "2026-02-28T00:00:00Z", UTC, 2), first);
    let mondays = ["2026-03-02T00:00:00Z", "2026-03-09T00:00:00Z"];
    assert_eq!(fires("0 0 * * 1", "2026-02-28T00:00:00Z", UTC, 2), mondays);
    assert_eq!(fires("0 0 ? * MON", "2026-02-28T00:00:00Z", UTC, 2), mondays);
    assert_eq!(parse_in("0 0 ? * MON", Dialect::Distcron).fields()["day_rule"], "and");
    // Vixie: a field starting with `*` (here `*/2`) makes the rule AND: odd days that are Mondays.
    assert_eq!(
        fires("0 0 */2 * 1", "2026-02-28T00:00:00Z", UTC, 3),
        ["2026-03-09T00:00:00Z", "2026-03-23T00:00:00Z", "2026-04-13T00:00:00Z"]
    );
}

#[test]
fn february_29_fires_only_in_leap_years_including_across_2100() {
    assert_eq!(fires("0 0 29 2 *", "2026-01-01T00:00:00Z", UTC, 2), ["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"]);
    // 2100 is not a leap year: eight years between 2096 and 2104.
    assert_eq!(fires("0 0 29 2 *", "2096-03-01T00:00:00Z", UTC, 2), ["2104-02-29T00:00:00Z", "2108-02-29T00:00:00Z"]);
    assert_eq!(
        fires("0 0 0 29 2 * 2400-9999/100", "2026-01-01T00:00:00Z", UTC, 2),
        ["2400-02-29T00:00:00Z", "2800-02-29T00:00:00Z"]
    );
}

#[test]
fn year_field_limits_fire_times_and_runs_past_2099() {
    assert_eq!(
        fires("0 0 0 1 1 * 2027-2029", "2026-06-01T00:00:00Z", UTC, 5),
        ["2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z", "2029-01-01T00:00:00Z"]
    );
    assert_eq!(fires("0 30 12 4 7 * 2150", "2026-06-01T00:00:00Z", UTC, 2), ["2150-07-04T12:30:00Z"]);
    // All years past: parses, never fires again.
    let past = parse_in("0 0 0 1 1 * 1999", Dialect::Distcron);
    assert_eq!(past.next_after(at("2026-01-01T00:00:00Z"), UTC), None);
    assert!(past.next_n(at("2026-01-01T00:00:00Z"), UTC, 3).is_empty());
    // ... but did fire in its year.
    assert_eq!(past.next_after(at("1998-06-01T00:00:00Z"), UTC), Some(at("1999-01-01T00:00:00Z")));
    let f = parse_in("0 0 0 1 1 * 2027,2029", Dialect::Distcron).fields();
    assert_eq!(f["year"], serde_json::json!([2027, 2029]));
    assert_eq!(f["year_count"], 2);
}

#[test]
fn six_fields_are_seconds_first_in_distcron_and_year_last_in_seed() {
    assert_eq!(fires("30 * * * * *", "2026-01-01T00:00:00Z", UTC, 2), ["2026-01-01T00:00:30Z", "2026-01-01T00:01:30Z"]);
    assert_eq!(seed_fires("0 0 1 1 * 2030", "2026-01-01T00:00:00Z", 2), ["2030-01-01T00:00:00Z"]);
    assert_eq!(
        seed_fires("*/30 * * * * *", "2026-01-01T00:00:00Z", 2),
        ["2026-01-01T00:30:00Z", "2026-01-01T01:00:00Z"]
    );
    // The same text read the distcron way has 2030 in the day-of-week field.
    let e = err("0 0 1 1 * 2030", Dialect::Distcron);
    assert_eq!(e.field, Some("day-of-week"));
    assert_eq!(e.message, "2030 is out of range 0-7");
    // 5 and 7 fields read the same in both dialects.
    for expr in ["*/5 1 * * MON", "15 */5 1 * * MON 2026-2030"] {
        let (a, b) = (parse_in(expr, Dialect::Distcron), parse_in(expr, Dialect::Seed));
        assert_eq!(a.next_n(at("2026-01-01T00:00:00Z"), UTC, 20), b.next_n(at("2026-01-01T00:00:00Z"), UTC, 20));
    }
}

#[test]
fn seven_fields_are_seconds_to_year() {
    assert_eq!(
        fires("15 30 6 * * * 2027", "2026-12-31T23:00:00Z", UTC, 2),
        ["2027-01-01T06:30:15Z", "2027-01-02T06:30:15Z"]
    );
}

// ---- macros and @every -------------------------------------------------------------------

#[test]
fn every_macro_has_its_standard_meaning() {
    // 2026-05-15 is a Friday.
    let after = "2026-05-15T10:20:00Z";
    let cases = [
        ("@yearly", "2027-01-01T00:00:00Z"),
        ("@annually", "2027-01-01T00:00:00Z"),
        ("@monthly", "2026-06-01T00:00:00Z"),
        ("@weekly", "2026-05-17T00:00:00Z"),
        ("@daily", "2026-05-16T00:00:00Z"),
        ("@midnight", "2026-05-16T00:00:00Z"),
        ("@hourly", "2026-05-15T11:00:00Z"),
        ("  @DAILY ", "2026-05-16T00:00:00Z"),
    ];
    for (expr, want) in cases {
        assert_eq!(fires(expr, after, UTC, 1), [want], "{expr}");
    }
    assert!(parse_in("@hourly", Dialect::Distcron).is_wildcard());
    for fixed in ["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight"] {
        assert!(!parse_in(fixed, Dialect::Seed).is_wildcard(), "{fixed}");
    }
}

#[test]
fn every_ticks_are_aligned_to_the_unix_epoch_in_any_zone() {
    for (expr, secs) in
        [("@every 30s", 30), ("@every 5m", 300), ("@every 1h30m", 5400), ("@every 7m", 420), ("@every 1d", 86_400)]
    {
        let s = parse_in(expr, Dialect::Distcron);
        assert_eq!(s.fields()["every_secs"], secs, "{expr}");
        assert_eq!(s.fields()["kind"], "every");
        for after in
            ["2026-01-01T00:00:00Z", "2026-03-08T06:59:59Z", "2026-11-01T05:31:17.250Z", "1969-12-31T23:59:59Z"]
        {
            let after = at(after);
            let next = s.next_after(after, NEW_YORK).expect("fires");
            assert_eq!(next.timestamp().rem_euclid(secs), 0, "{expr} after {after}");
            assert!(next > after && next.timestamp() - after.timestamp() <= secs, "{expr} after {after}");
            assert_eq!(s.next_after(after, UTC), Some(next), "time zone is irrelevant for {expr}");
            assert_eq!(s.next_after(after, LORD_HOWE), Some(next));
        }
    }
    assert_eq!(
        fires("@every 1d", "2026-03-08T01:00:00Z", NEW_YORK, 2),
        ["2026-03-09T00:00:00Z", "2026-03-10T00:00:00Z"]
    );
    assert_eq!(parse_in("@every 366d", Dialect::Distcron).fields()["every_secs"], 366 * 86_400);
    assert_eq!(parse_in("@every 1s", Dialect::Distcron).fields()["every_secs"], 1);
}

// ---- invalid input -----------------------------------------------------------------------

#[test]
fn invalid_expressions_are_rejected_naming_the_field() {
    use Dialect::{Distcron as D, Seed as S};
    let long = "* ".repeat(600);
    let cases: &[(&str, Dialect, Option<&str>)] = &[
        ("", D, None),
        ("   \t ", D, None),
        ("* * * *", D, None),
        ("* * * * * * * *", D, None),
        ("hello", D, None),
        ("not a cron", D, None),
        ("@daily 5", D, None),
        ("@hourly *", S, None),
        ("@every", D, None),
        ("@every 0s", D, None),
        ("@every 367d", D, None),
        ("@every 5x", D, None),
        ("@every 1.5h", D, None),
        ("@every ms", D, None),
        ("@every 1h 30m", D, None),
        ("@every 99999999999999999999999s", D, None),
        ("@fortnightly", D, None),
        ("@", D, None),
        ("* * * * \u{ff0a}", D, None),
        ("* *\n* * *", D, None),
        (long.as_str(), D, None),
        ("60 * * * * *", D, Some("seconds")),
        ("61 * * * *", D, Some("minutes")),
        ("99999999999 * * * *", D, Some("minutes")),
        ("a b c d e", D, Some("minutes")),
        ("*/0 * * * *", D, Some("minutes")),
        ("*/61 * * * *", D, Some("minutes")),
        ("5-1 * * * *", D, Some("minutes")),
        ("1,,2 * * * *", D, Some("minutes")),
        ("1, * * * *", D, Some("minutes")),
        ("1- * * * *", D, Some("minutes")),
        ("-1 * * * *", D, Some("minutes")),
        ("1-2-3 * * * *", D, Some("minutes")),
        ("*/ * * * *", D, Some("minutes")),
        ("*/x * * * *", D, Some("minutes")),
        ("? * * * *", D, Some("minutes")),
        ("MON * * * *", D, Some("minutes")),
        ("* 24 * * *", D, Some("hours")),
        ("* 5-3 * * *", D, Some("hours")),
        ("* * 0 * *", D, Some("day-of-month")),
        ("* * 32 * *", D, Some("day-of-month")),
        ("* * L-40 * *", D, Some("day-of-month")),
        ("* * 32W * *", D, Some("day-of-month")),
        ("* * LW-1 * *", D, Some("day-of-month")),
        ("* * ?/2 * *", D, Some("day-of-month")),
        ("* * 1,? * *", D, Some("day-of-month")),
        ("* * * 0 *", D, Some("month")),
        ("* * * 13 *", D, Some("month")),
        ("* * * DEC-JAN *", D, Some("month")),
        ("* * * FOO *", D, Some("month")),
        ("* * * January *", D, Some("month")),
        ("* * * * 8", D, Some("day-of-week")),
        ("* * * * FRI-MON", D, Some("day-of-week")),
        ("* * * * 0#1", D, Some("day-of-week")),
        ("* * * * 5#6", D, Some("day-of-week")),
        ("* * * * MONDAY", D, Some("day-of-week")),
        ("0 0 0 1 1 * 1969", D, Some("year")),
        ("0 0 0 1 1 * 10000", D, Some("year")),
        ("0 0 1 1 * 2031-2030", S, Some("year")),
        ("0 0 1 1 * ?", S, Some("year")),
    ];
    for (expr, dialect, field) in cases {
        let e = err(expr, *dialect);
        assert_eq!(e.field, *field, "{expr:?} -> {e}");
        assert!(!e.message.is_empty());
    }
}

#[test]
fn error_messages_say_the_value_and_the_allowed_range() {
    let e = err("61 * * * *", Dialect::Distcron);
    assert_eq!(e.message, "61 is out of range 0-59");
    assert_eq!(e.to_string(), "minutes field: 61 is out of range 0-59");
    assert_eq!(err("* * * 13 *", Dialect::Distcron).message, "13 is out of range 1-12");
    assert_eq!(err("0 0 0 1 1 * 1969", Dialect::Distcron).message, "1969 is out of range 1970-9999");
    assert_eq!(err("* * * * 4-2", Dialect::Distcron).message, "range 4-2 is reversed (4 > 2); write it low to high");
    assert!(err("* * * DEC-JAN *", Dialect::Distcron).message.contains("DEC-JAN is reversed"));
    assert!(err("* * * FOO *", Dialect::Distcron).message.contains("1-12 or JAN-DEC"));
    assert!(err("*/0 * * * *", Dialect::Distcron).message.contains("at least 1"));
    assert!(err("* * L-40 * *", Dialect::Distcron).message.contains("out of range 0-30"));
    assert!(err("* * * * 2#9", Dialect::Distcron).message.contains("must be 1-5"));
    let count = err("* * * *", Dialect::Distcron);
    assert_eq!(count.message, "expected 5, 6 or 7 fields, found 4");
    assert_eq!(count.to_string(), "expected 5, 6 or 7 fields, found 4");
    assert!(err(&"*".repeat(5000), Dialect::Distcron).message.contains("too long"));
    assert!(err("@daily 5", Dialect::Distcron).message.contains("takes no fields"));
    assert!(err("@nightly", Dialect::Distcron).message.contains("unknown macro"));
}

#[test]
fn expressions_that_can_never_fire_are_rejected() {
    let e = err("0 0 30 2 *", Dialect::Distcron);
    assert_eq!(e.field, Some("day-of-month"));
    assert_eq!(e.message, "never fires: February has no day 30");
    let e = err("0 0 31 4,6 *", Dialect::Distcron);
    assert_eq!(e.field, Some("day-of-month"));
    assert_eq!(e.message, "never fires: April and June have no day 31");
    assert_eq!(err("0 0 30,31 FEB ?", Dialect::Distcron).message, "never fires: February has no day 30 or 31");
    // Year fields: 2027 is not a leap year.
    for (expr, dialect) in [("0 0 29 2 * 2027", Dialect::Seed), ("0 0 0 29 2 * 2027", Dialect::Distcron)] {
        let e = err(expr, dialect);
        assert_eq!(e.field, None, "{expr}");
        assert!(e.message.starts_with("never fires"), "{expr}: {e}");
        assert!(e.message.contains("leap"), "{expr}: {e}");
    }
    // ... but a leap year in the list makes it valid, and Feb 29 with a weekday is ORed.
    parse_in("0 0 0 29 2 * 2027,2028", Dialect::Distcron);
    parse_in("0 0 30 2 MON", Dialect::Distcron);
}

// ---- DST ---------------------------------------------------------------------------------

#[test]
fn new_york_spring_gap_moves_fixed_jobs_to_the_gap_end_and_skips_wildcard_times() {
    // 2026-03-08 02:00 EST -> 03:00 EDT at 07:00Z.
    assert_eq!(
        fires("30 2 * * *", "2026-03-06T12:00:00Z", NEW_YORK, 3),
        ["2026-03-07T07:30:00Z", "2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"]
    );
    assert_eq!(
        fires("*/30 * * * *", "2026-03-08T06:00:00Z", NEW_YORK, 3),
        ["2026-03-08T06:30:00Z", "2026-03-08T07:00:00Z", "2026-03-08T07:30:00Z"]
    );
    // A wildcard job that only matches inside the gap skips that day.
    assert_eq!(
        fires("*/20 2 * * *", "2026-03-07T12:00:00Z", NEW_YORK, 4),
        ["2026-03-09T06:00:00Z", "2026-03-09T06:20:00Z", "2026-03-09T06:40:00Z", "2026-03-10T06:00:00Z"]
    );
    // Fixed-time even with a wildcard day field; after the gap fire, the next day.
    assert_eq!(fires("0 2 * * *", "2026-03-08T07:00:00Z", NEW_YORK, 1), ["2026-03-09T06:00:00Z"]);
}

#[test]
fn new_york_fall_overlap_runs_fixed_jobs_once_and_wildcard_jobs_in_both_passes() {
    // 2026-11-01 02:00 EDT -> 01:00 EST at 06:00Z; 01:00-02:00 happens twice.
    assert_eq!(
        fires("30 1 * * *", "2026-10-31T12:00:00Z", NEW_YORK, 2),
        ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]
    );
    assert_eq!(
        fires("*/30 * * * *", "2026-11-01T04:00:00Z", NEW_YORK, 6),
        [
            "2026-11-01T04:30:00Z",
            "2026-11-01T05:00:00Z",
            "2026-11-01T05:30:00Z",
            "2026-11-01T06:00:00Z",
            "2026-11-01T06:30:00Z",
            "2026-11-01T07:00:00Z"
        ]
    );
    assert_eq!(
        fires("@hourly", "2026-11-01T04:30:00Z", NEW_YORK, 3),
        ["2026-11-01T05:00:00Z", "2026-11-01T06:00:00Z", "2026-11-01T07:00:00Z"]
    );
    // Starting inside the overlap, in either pass.
    assert_eq!(fires("30 1 * * *", "2026-11-01T05:10:00Z", NEW_YORK, 1), ["2026-11-01T05:30:00Z"]);
    assert_eq!(fires("30 1 * * *", "2026-11-01T06:10:00Z", NEW_YORK, 1), ["2026-11-02T06:30:00Z"]);
    assert_eq!(
        fires("*/30 * * * *", "2026-11-01T05:59:30Z", NEW_YORK, 2),
        ["2026-11-01T06:00:00Z", "2026-11-01T06:30:00Z"]
    );
    assert_eq!(
        fires("*/30 * * * *", "2026-11-01T06:10:00Z", NEW_YORK, 2),
        ["2026-11-01T06:30:00Z", "2026-11-01T07:00:00Z"]
    );
    assert_eq!(
        fires("10 * * * *", "2026-11-01T05:30:00Z", NEW_YORK, 2),
        ["2026-11-01T06:10:00Z", "2026-11-01T07:10:00Z"]
    );
}

#[test]
fn gap_fires_landing_on_the_same_instant_count_once() {
    // 02:00 and 02:30 both move to 03:00 EDT (07:00Z); so does the real 03:00.
    assert_eq!(
        fires("0,30 2 * * *", "2026-03-08T05:00:00Z", NEW_YORK, 2),
        ["2026-03-08T07:00:00Z", "2026-03-09T06:00:00Z"]
    );
    assert_eq!(
        fires("0,30 2,3 * * *", "2026-03-08T05:00:00Z", NEW_YORK, 3),
        ["2026-03-08T07:00:00Z", "2026-03-08T07:30:00Z", "2026-03-09T06:00:00Z"]
    );
    assert_eq!(
        fires("0 30 2 * * *", "2026-03-08T05:00:00Z", NEW_YORK, 1),
        fires("0 0 3 * * *", "2026-03-08T05:00:00Z", NEW_YORK, 1)
    );
}

#[test]
fn london_gap_and_overlap_follow_the_rule() {
    // 2026-03-29 01:00 GMT -> 02:00 BST at 01:00Z.
    assert_eq!(
        fires("30 1 * * *", "2026-03-28T12:00:00Z", LONDON, 2),
        ["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"]
    );
    assert_eq!(
        fires("*/30 * * * *", "2026-03-29T00:15:00Z", LONDON, 3),
        ["2026-03-29T00:30:00Z", "2026-03-29T01:00:00Z", "2026-03-29T01:30:00Z"]
    );
    // 2026-10-25 02:00 BST -> 01:00 GMT at 01:00Z.
    assert_eq!(
        fires("30 1 * * *", "2026-10-24T12:00:00Z", LONDON, 2),
        ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
    );
    assert_eq!(
        fires("0 * * * *", "2026-10-24T23:30:00Z", LONDON, 3),
        ["2026-10-25T00:00:00Z", "2026-10-25T01:00:00Z", "2026-10-25T02:00:00Z"]
    );
}

#[test]
fn lord_howe_half_hour_shifts_follow_the_rule() {
    // 2026-10-04 02:00 (+10:30) -> 02:30 (+11) at 2026-10-03T15:30Z.
    assert_eq!(
        fires("0 2 * * *", "2026-10-03T00:00:00Z", LORD_HOWE, 2),
        ["2026-10-03T15:30:00Z", "2026-10-04T15:00:00Z"]
    );
    assert_eq!(fires("15 2 * * *", "2026-10-03T00:00:00Z", LORD_HOWE, 1), ["2026-10-03T15:30:00Z"]);
    assert_eq!(
        fires("*/15 * * * *", "2026-10-03T15:00:00Z", LORD_HOWE, 3),
        ["2026-10-03T15:15:00Z", "2026-10-03T15:30:00Z", "2026-10-03T15:45:00Z"]
    );
    // 2026-04-05 02:00 (+11) -> 01:30 (+10:30) at 2026-04-04T15:00Z; 01:30-02:00 happens twice.
    assert_eq!(
        fires("45 1 * * *", "2026-04-04T00:00:00Z", LORD_HOWE, 2),
        ["2026-04-04T14:45:00Z", "2026-04-05T15:15:00Z"]
    );
    assert_eq!(
        fires("*/15 * * * *", "2026-04-04T14:20:00Z", LORD_HOWE, 5),
        [
            "2026-04-04T14:30:00Z",
            "2026-04-04T14:45:00Z",
            "2026-04-04T15:00:00Z",
            "2026-04-04T15:15:00Z",
            "2026-04-04T15:30:00Z"
        ]
    );
}

/// The fire times the DST rule prescribes in `[from, to]`, found by brute force minute by
/// minute, with the `cron` crate deciding which wall-clock times match (5-field expressions
/// without day restrictions, where its semantics agree).
fn brute_force_fires(expr5: &str, tz: Tz, from: i64, to: i64) -> Vec<i64> {
    let oracle = cron::Schedule::from_str(&format!("0 {expr5}")).expect("oracle parses");
    let fields: Vec<&str> = expr5.split_whitespace().collect();
    let wildcard = fields[0].starts_with('*') || fields[1].starts_with('*');
    let naive = |secs: i64| DateTime::from_timestamp(secs, 0).expect("in range").naive_utc();
    let wall = |i: i64| i + i64::from(tz.offset_from_utc_datetime(&naive(i)).fix().local_minus_utc());
    let matches = |local: i64| oracle.includes(Utc.from_utc_datetime(&naive(local)));
    let mut out = Vec::new();
    let mut prev_wall = wall(from - 60);
    for i in (from..=to).step_by(60) {
        let w = wall(i);
        if !wildcard && w - prev_wall > 60 && (prev_wall + 60..w).step_by(60).any(matches) {
            out.push(i); // a fixed-time match inside the gap fires when it ends
        }
        if matches(w) {
            let first = tz.from_local_datetime(&naive(w)).earliest().map(|d| d.timestamp()) == Some(i);
            if wildcard || first {
                out.push(i);
            }
        }
        prev_wall = w;
    }
    out.dedup();
    out
}

#[test]
fn dst_rule_matches_a_brute_force_oracle_around_real_transitions() {
    let windows = [
        (NEW_YORK, "2026-03-07T00:00:00Z"),
        (NEW_YORK, "2026-10-31T00:00:00Z"),
        (LONDON, "2026-03-28T00:00:00Z"),
        (LONDON, "2026-10-24T00:00:00Z"),
        (LORD_HOWE, "2026-10-02T00:00:00Z"),
        (LORD_HOWE, "2026-04-03T00:00:00Z"),
        // Samoa skipped 2011-12-30 entirely (UTC-10 -> UTC+14).
        (chrono_tz::Pacific::Apia, "2011-12-28T00:00:00Z"),
        (chrono_tz::Asia::Kolkata, "2026-01-01T00:00:00Z"),
    ];
    let exprs = [
        "*/15 * * * *",
        "30 1 * * *",
        "0,30 2,3 * * *",
        "15 * * * *",
        "* 1 * * *",
        "0 2 * * *",
        "45 1 * * *",
        "*/20 2 * * *",
        "0 0-3 * * *",
        "30 12 * * *",
        "0,10 1-2 * * *",
    ];
    for (tz, start) in windows {
        let from = at(start).timestamp();
        let to = from + 3 * 86_400;
        for expr in exprs {
            let want = brute_force_fires(expr, tz, from, to);
            let s = parse_in(expr, Dialect::Distcron);
            let mut got = Vec::new();
            let mut cursor = at(start) - chrono::Duration::seconds(1);
            while let Some(next) = s.next_after(cursor, tz) {
                if next.timestamp() > to {
                    break;
                }
                got.push(next.timestamp());
                cursor = next;
            }
            assert_eq!(show_secs(&got), show_secs(&want), "{expr} in {tz} from {start}");
        }
    }
}

fn show_secs(secs: &[i64]) -> Vec<String> {
    show(&secs.iter().filter_map(|s| DateTime::from_timestamp(*s, 0)).collect::<Vec<_>>())
}

// ---- termination and consistency ---------------------------------------------------------

#[test]
fn ten_thousand_consecutive_fire_times_are_increasing_and_match_the_fields() {
    let s = parse_in("*/7 3-59/11 8-20/3 1,10-20 * MON-FRI", Dialect::Distcron);
    let times = s.next_n(at("2026-01-01T00:00:00Z"), NEW_YORK, 10_000);
    assert_eq!(times.len(), 10_000);
    for pair in times.windows(2) {
        assert!(pair[0] < pair[1], "{pair:?}");
    }
    for t in &times {
        let local = t.with_timezone(&NEW_YORK);
        assert_eq!(local.second() % 7, 0, "{local}");
        assert!(local.minute() >= 3 && (local.minute() - 3) % 11 == 0, "{local}");
        assert!((8..=20).contains(&local.hour()) && (local.hour() - 8) % 3 == 0, "{local}");
        let dom_ok = local.day() == 1 || (10..=20).contains(&local.day());
        let dow_ok = (1..=5).contains(&local.weekday().number_from_sunday().wrapping_sub(1));
        assert!(dom_ok || dow_ok, "{local}");
    }
}

#[test]
fn searches_end_quickly_at_the_horizon() {
    let leap = parse_in("0 0 29 2 *", Dialect::Distcron);
    assert_eq!(leap.next_after(at("9996-03-01T00:00:00Z"), UTC), None);
    assert_eq!(parse_in("@daily", Dialect::Distcron).next_after(at("9999-12-31T00:00:00Z"), UTC), None);
    let sparse = parse_in("0 0 0 29 2 MON 2400-9999/400", Dialect::Distcron);
    // OR rule: Mondays in February of 2400, 2800, ... and the 29th.
    assert_eq!(
        show(&sparse.next_n(at("2026-01-01T00:00:00Z"), UTC, 5)),
        [
            "2400-02-07T00:00:00Z",
            "2400-02-14T00:00:00Z",
            "2400-02-21T00:00:00Z",
            "2400-02-28T00:00:00Z",
            "2400-02-29T00:00:00Z"
        ]
    );
    // AND rule (day-of-week starts with `*`): February 29 falling on a Sunday.
    let sunday_leap = parse_in("0 0 0 29 2 */7", Dialect::Distcron);
    let want: Vec<String> = (2026..2200)
        .filter_map(|y| chrono::NaiveDate::from_ymd_opt(y, 2, 29))
        .filter(|d| d.weekday() == chrono::Weekday::Sun)
        .take(3)
        .map(|d| format!("{d}T00:00:00Z"))
        .collect();
    assert_eq!(show(&sunday_leap.next_n(at("2026-01-01T00:00:00Z"), UTC, 3)), want);
    let every_second = parse_in("* * * * * *", Dialect::Distcron);
    assert_eq!(every_second.next_n(at("2026-11-01T05:59:58Z"), NEW_YORK, 4).len(), 4);
}

#[test]
fn consecutive_fire_times_are_strictly_increasing_in_many_zones() {
    let zones = [
        NEW_YORK,
        LONDON,
        LORD_HOWE,
        chrono_tz::Pacific::Apia,
        chrono_tz::America::Sao_Paulo,
        chrono_tz::Europe::Moscow,
    ];
    for expr in ["*/10 * * * *", "30 1 * * *", "0 2 * * 0", "* 1 * * *", "0 */3 * * *"] {
        let s = parse_in(expr, Dialect::Distcron);
        for tz in zones {
            let times = s.next_n(at("2011-01-01T00:00:00Z"), tz, 3000);
            assert!(!times.is_empty());
            assert!(times.windows(2).all(|p| p[0] < p[1]), "{expr} in {tz}");
        }
    }
}

// ---- differential ------------------------------------------------------------------------

#[test]
fn agrees_with_the_cron_crate_where_semantics_coincide() {
    // 6-field seconds-first, no day-of-week restriction, UTC.
    let seconds = ["0", "*/15", "5,35", "10-20/5", "*"];
    let minutes = ["*", "0", "*/7", "15-45/10", "0,30"];
    let hours = ["*", "3", "*/6", "9-17", "0,12"];
    let doms = ["*", "1", "15,31", "29", "1-7", "*/10"];
    let months = ["*", "2", "1-6", "*/3", "FEB,AUG"];
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rand = move |n: u64| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    for _ in 0..300 {
        let pick = |list: &[&'static str], r: u64| list[r as usize % list.len()];
        let expr = format!(
            "{} {} {} {} {} *",
            pick(&seconds, rand(100)),
            pick(&minutes, rand(100)),
            pick(&hours, rand(100)),
            pick(&doms, rand(100)),
            pick(&months, rand(100))
        );
        let ours = parse_in(&expr, Dialect::Distcron);
        let theirs = cron::Schedule::from_str(&expr).expect("cron crate parses");
        for _ in 0..5 {
            // 1970..2090
            let after = DateTime::from_timestamp(rand(3_786_912_000) as i64, 0).expect("in range");
            let want: Vec<DateTime<Utc>> = theirs.after(&after).take(5).collect();
            assert_eq!(show(&ours.next_n(after, UTC, 5)), show(&want), "{expr} after {after}");
        }
    }
}

// ---- readings ----------------------------------------------------------------------------

#[test]
fn describe_reads_schedules_in_plain_language() {
    let cases = [
        ("*/5 * * * 1-5", "every 5 minutes, Monday to Friday"),
        ("30 2 * * *", "at 02:30 every day"),
        ("*/30 * * * * *", "every 30 seconds"),
        ("* * * * *", "every minute"),
        ("* * * * * *", "every second"),
        ("@daily", "at 00:00 every day"),
        ("@hourly", "every hour"),
        ("@weekly", "at 00:00 on Sunday"),
        ("@monthly", "at 00:00 on day 1 of the month"),
        ("@yearly", "at 00:00 on January 1"),
        ("0 9 * * 1-5", "at 09:00, Monday to Friday"),
        ("0 9,17 * * *", "at 09:00 and 17:00 every day"),
        ("0 0 1 * 1", "at 00:00 on day 1 of the month or on Monday"),
        ("*/15 9-17 * * *", "every 15 minutes, between 09:00 and 17:59"),
        ("0 0 * * 5-7", "at 00:00, Friday to Sunday"),
        ("15 * * * *", "every hour at minute 15"),
        ("0 */2 * * *", "every 2 hours"),
        ("0 0 0 1 1 * 2027", "at 00:00 on January 1 in 2027"),
        ("0 12 * 6-8 *", "at 12:00 every day from June to August"),
        ("15 30 6 * * *", "at 06:30:15 every day"),
        ("15,45 * * * *", "at minutes 15 and 45 of every hour"),
        ("0 0 * * 6,0", "at 00:00 on Saturday and Sunday"),
        ("0 0 */2 * 1", "at 00:00 on every 2nd day of the month, if it falls on Monday"),
        ("0,30 9-17 * * MON-FRI", "every 30 minutes, between 09:00 and 17:59, Monday to Friday"),
        ("@every 30s", "every 30 seconds"),
        ("@every 1h30m", "every 1 hour 30 minutes"),
        ("@every 1h", "every hour"),
        ("@every 2d", "every 2 days"),
    ];
    for (expr, want) in cases {
        assert_eq!(parse_in(expr, Dialect::Distcron).describe(), want, "{expr}");
    }
}

#[test]
fn fields_report_kind_wildcard_and_description() {
    let f = parse_in("*/15 * * * *", Dialect::Distcron).fields();
    assert_eq!(f["kind"], "cron");
    assert_eq!(f["wildcard"], true);
    assert_eq!(f["minutes"], serde_json::json!([0, 15, 30, 45]));
    assert_eq!(f["hours"], "*");
    assert_eq!(f["expr"], "*/15 * * * *");
    assert_eq!(f["description"], "every 15 minutes");
    let every = parse_in(" @every 5m ", Dialect::Distcron).fields();
    assert_eq!(
        every,
        serde_json::json!({
            "kind": "every", "expr": "@every 5m", "every_secs": 300, "wildcard": true, "description": "every 5 minutes"
        })
    );
}

#[test]
fn wildcard_means_seconds_minute_or_hour_begins_with_star() {
    for (expr, dialect, wildcard) in [
        ("* 2 * * *", Dialect::Distcron, true),
        ("30 */2 * * *", Dialect::Distcron, true),
        ("30 2 * * *", Dialect::Distcron, false),
        ("0-59 2 * * *", Dialect::Distcron, false),
        ("*/10 30 2 * * *", Dialect::Distcron, true),
        ("0 30 2 * * *", Dialect::Distcron, false),
        ("30 2 * * * 2030", Dialect::Seed, false),
        ("0 30 2 * * * *", Dialect::Seed, false),
    ] {
        assert_eq!(parse_in(expr, dialect).is_wildcard(), wildcard, "{expr}");
    }
}

#[test]
fn schedule_is_send_sync_clone_and_debug() {
    fn assert_traits<T: Clone + std::fmt::Debug + Send + Sync + 'static>() {}
    assert_traits::<Schedule>();
    assert_traits::<CronError>();
    let s = parse_in("0 0 0 1 1 * 2027-2030,2040", Dialect::Distcron);
    assert!(format!("{s:?}").contains("2027-2030,2040"));
    assert_eq!(s.clone(), s);
    assert_eq!(serde_json::to_string(&Dialect::Seed).expect("serializes"), "\"seed\"");
    assert_eq!(serde_json::from_str::<Dialect>("\"distcron\"").expect("parses"), Dialect::Distcron);
}

// ---- Quartz/croner day tokens: L, W, #, ? -------------------------------------------------
//
// Vectors written from the documented semantics (Quartz CronTrigger, croner's pattern docs,
// gorhill/cronexpr): `L` = last day of the month, `L-n` = n days before it, `nW` = the weekday
// (Mon-Fri) nearest day n without leaving the month, `LW` = the last weekday of the month,
// `n#k` = the k-th weekday n of the month, `nL` = the last weekday n of the month, `?` = `*`.
// Weekdays are numbered as elsewhere in the dialect (1 = Monday, 5 = Friday, 7 or SUN = Sunday).

const BERLIN: Tz = chrono_tz::Europe::Berlin;

fn midnights(dates: &[&str]) -> Vec<String> {
    dates.iter().map(|d| format!("{d}T00:00:00Z")).collect()
}

#[test]
fn last_day_of_month_covers_28_29_30_and_31_day_months() {
    assert_eq!(
        fires("0 0 L * *", "2023-12-30T12:00:00Z", UTC, 15),
        midnights(&[
            "2023-12-31",
            "2024-01-31",
            "2024-02-29",
            "2024-03-31",
            "2024-04-30",
            "2024-05-31",
            "2024-06-30",
            "2024-07-31",
            "2024-08-31",
            "2024-09-30",
            "2024-10-31",
            "2024-11-30",
            "2024-12-31",
            "2025-01-31",
            "2025-02-28"
        ])
    );
    // February of a century year: 2100 is not a leap year, 2000 and 2400 are.
    assert_eq!(fires("0 0 L 2 *", "2099-12-31T00:00:00Z", UTC, 1), midnights(&["2100-02-28"]));
    assert_eq!(fires("0 0 L 2 *", "2399-12-31T00:00:00Z", UTC, 1), midnights(&["2400-02-29"]));
    // `L-n`: n days before the last day.
    assert_eq!(
        fires("0 0 L-3 * *", "2024-01-01T00:00:00Z", UTC, 4),
        midnights(&["2024-01-28", "2024-02-26", "2024-03-28", "2024-04-27"])
    );
    assert_eq!(fires("0 0 L-3 2 *", "2025-01-01T00:00:00Z", UTC, 1), midnights(&["2025-02-25"]));
    // L-0 is L; L-30 exists only in 31-day months (day 1).
    assert_eq!(fires("0 0 L-0 * *", "2024-02-01T00:00:00Z", UTC, 1), midnights(&["2024-02-29"]));
    assert_eq!(
        fires("0 0 L-30 * *", "2024-01-15T00:00:00Z", UTC, 3),
        midnights(&["2024-03-01", "2024-05-01", "2024-07-01"])
    );
    // In a list with plain days.
    assert_eq!(
        fires("0 0 1,15,L * *", "2024-02-01T00:00:00Z", UTC, 4),
        midnights(&["2024-02-15", "2024-02-29", "2024-03-01", "2024-03-15"])
    );
}

#[test]
fn nearest_weekday_moves_weekends_without_leaving_the_month() {
    // 2026-02-15 and 2026-03-15 are Sundays -> Monday 16th; 2026-08-15 is a Saturday -> Friday 14th.
    assert_eq!(
        fires("0 0 15W * *", "2026-01-20T00:00:00Z", UTC, 7),
        midnights(&["2026-02-16", "2026-03-16", "2026-04-15", "2026-05-15", "2026-06-15", "2026-07-15", "2026-08-14"])
    );
    // 2026-08-01 is a Saturday: 1W is Monday the 3rd, not Friday July 31.
    assert_eq!(fires("0 0 1W 8 *", "2026-01-01T00:00:00Z", UTC, 1), midnights(&["2026-08-03"]));
    // 2026-05-31 is a Sunday: 31W is Friday the 29th, not Monday June 1; no day 31 in June.
    assert_eq!(fires("0 0 31W 5,6 *", "2026-05-01T00:00:00Z", UTC, 2), midnights(&["2026-05-29", "2027-05-31"]));
    // LW: the last weekday. 2027-01-31 and 2027-02-28 are Sundays, 2027-07-31 a Saturday.
    assert_eq!(
        fires("0 0 LW * *", "2027-01-01T00:00:00Z", UTC, 3),
        midnights(&["2027-01-29", "2027-02-26", "2027-03-31"])
    );
    assert_eq!(fires("0 0 LW 7 *", "2027-01-01T00:00:00Z", UTC, 1), midnights(&["2027-07-30"]));
    // 2024-02-29 (leap day) is a Thursday.
    assert_eq!(fires("0 0 LW 2 *", "2024-01-01T00:00:00Z", UTC, 1), midnights(&["2024-02-29"]));
    // L-nW: the weekday nearest the last day minus n. 2026-05-31 - 1 = Saturday 30th -> 29th.
    assert_eq!(fires("0 0 L-1W 5 *", "2026-01-01T00:00:00Z", UTC, 1), midnights(&["2026-05-29"]));
}

#[test]
fn nth_weekday_fires_on_the_first_monday_of_every_month_across_a_year() {
    assert_eq!(
        fires("0 0 * * 1#1", "2025-12-31T00:00:00Z", UTC, 12),
        midnights(&[
            "2026-01-05",
            "2026-02-02",
            "2026-03-02",
            "2026-04-06",
            "2026-05-04",
            "2026-06-01",
            "2026-07-06",
            "2026-08-03",
            "2026-09-07",
            "2026-10-05",
            "2026-11-02",
            "2026-12-07"
        ])
    );
    // Names and Sunday as 7 or SUN; `#L` is croner's spelling of the last one.
    let by_number = fires("0 0 * * 5#3", "2026-01-01T00:00:00Z", UTC, 6);
    assert_eq!(by_number, fires("0 0 * * fri#3", "2026-01-01T00:00:00Z", UTC, 6));
    assert_eq!(by_number[..3], midnights(&["2026-01-16", "2026-02-20", "2026-03-20"]));
    assert_eq!(
        fires("0 0 * * 7#1", "2026-01-01T00:00:00Z", UTC, 12),
        fires("0 0 * * SUN#1", "2026-01-01T00:00:00Z", UTC, 12)
    );
    assert_eq!(fires("0 0 * * 7#1", "2026-01-01T00:00:00Z", UTC, 2), midnights(&["2026-01-04", "2026-02-01"]));
    assert_eq!(
        fires("0 0 * * 5#L", "2026-01-01T00:00:00Z", UTC, 12),
        fires("0 0 * * 5L", "2026-01-01T00:00:00Z", UTC, 12)
    );
    // A fifth Friday only in months that have one; a fifth Thursday of February only in a leap
    // year whose February starts on a Thursday.
    assert_eq!(
        fires("0 0 * * 5#5", "2026-01-01T00:00:00Z", UTC, 4),
        midnights(&["2026-01-30", "2026-05-29", "2026-07-31", "2026-10-30"])
    );
    assert_eq!(fires("0 0 * 2 4#5", "2020-01-01T00:00:00Z", UTC, 2), midnights(&["2024-02-29", "2052-02-29"]));
    // A list mixes plain weekdays and tokens.
    assert_eq!(
        fires("0 0 * * 1#1,5L", "2026-01-01T00:00:00Z", UTC, 4),
        midnights(&["2026-01-05", "2026-01-30", "2026-02-02", "2026-02-27"])
    );
}

#[test]
fn last_friday_at_18_in_berlin_follows_the_local_clock_through_the_year() {
    // 18:00 CET is 17:00Z, 18:00 CEST is 16:00Z; DST runs from March 29 to October 25, 2026.
    assert_eq!(
        fires("0 18 * * 5L", "2026-01-01T00:00:00Z", BERLIN, 12),
        [
            "2026-01-30T17:00:00Z",
            "2026-02-27T17:00:00Z",
            "2026-03-27T17:00:00Z",
            "2026-04-24T16:00:00Z",
            "2026-05-29T16:00:00Z",
            "2026-06-26T16:00:00Z",
            "2026-07-31T16:00:00Z",
            "2026-08-28T16:00:00Z",
            "2026-09-25T16:00:00Z",
            "2026-10-30T17:00:00Z",
            "2026-11-27T17:00:00Z",
            "2026-12-25T17:00:00Z"
        ]
    );
}

#[test]
fn day_tokens_on_dst_days_follow_the_dst_rule() {
    // The last Sunday of March and October is Berlin's DST day. A fixed-time job at 02:30 runs
    // at the gap's end (03:00 CEST = 01:00Z) in March and once, at the first 02:30, in October.
    assert_eq!(
        fires("30 2 * * 7L", "2026-03-01T00:00:00Z", BERLIN, 2),
        ["2026-03-29T01:00:00Z", "2026-04-26T00:30:00Z"]
    );
    assert_eq!(fires("30 2 * * SUNL", "2026-10-01T00:00:00Z", BERLIN, 1), ["2026-10-25T00:30:00Z"]);
    // A wildcard job skips the lost hour in March and runs in both passes in October.
    assert_eq!(
        fires("*/30 2 * * 7L", "2026-03-01T00:00:00Z", BERLIN, 2),
        ["2026-04-26T00:00:00Z", "2026-04-26T00:30:00Z"]
    );
    assert_eq!(
        fires("*/30 2 * * 7L", "2026-10-01T00:00:00Z", BERLIN, 4),
        ["2026-10-25T00:00:00Z", "2026-10-25T00:30:00Z", "2026-10-25T01:00:00Z", "2026-10-25T01:30:00Z"]
    );
    // New York: 2026-03-08 (spring forward) is the second Sunday of March, 2026-11-01 the first
    // of November.
    assert_eq!(fires("30 2 * 3 7#2", "2026-01-01T00:00:00Z", NEW_YORK, 1), ["2026-03-08T07:00:00Z"]);
    assert_eq!(fires("30 1 * 11 SUN#1", "2026-01-01T00:00:00Z", NEW_YORK, 1), ["2026-11-01T05:30:00Z"]);
    // L on a DST day in the southern hemisphere: Lord Howe moves 30 min at 02:00 on
    // 2026-10-04 (first Sunday of October) - not the last day; L-27 is October 4.
    assert_eq!(fires("15 2 L-27 10 *", "2026-01-01T00:00:00Z", LORD_HOWE, 1), ["2026-10-03T15:30:00Z"]);
}

#[test]
fn question_mark_is_star_in_day_fields() {
    let after = "2026-01-01T00:00:00Z";
    assert_eq!(fires("0 0 ? * 5L", after, UTC, 6), fires("0 0 * * 5L", after, UTC, 6));
    assert_eq!(fires("0 0 L * ?", after, UTC, 6), fires("0 0 L * *", after, UTC, 6));
    assert_eq!(fires("0 0 0 15W * ? 2026", after, UTC, 6), fires("0 0 15W * *", after, UTC, 6));
    assert_eq!(parse_in("0 0 ? * MON", Dialect::Distcron).fields()["day_rule"], "and");
}

#[test]
fn day_tokens_combine_with_the_or_rule_like_plain_values() {
    // Both day fields restricted: a day matches if either does (Vixie/croner), tokens included.
    // January 2026: Fridays 2, 9, 16, 23, 30; last day Saturday 31.
    assert_eq!(
        fires("0 0 L * 5", "2026-01-20T00:00:00Z", UTC, 4),
        midnights(&["2026-01-23", "2026-01-30", "2026-01-31", "2026-02-06"])
    );
    assert_eq!(
        fires("0 0 1 * 1#1", "2026-01-01T00:00:00Z", UTC, 4),
        midnights(&["2026-01-05", "2026-02-01", "2026-02-02", "2026-03-01"])
    );
    // One field `*` or `?`: the other decides.
    assert_eq!(fires("0 0 L * *", "2026-01-20T00:00:00Z", UTC, 1), midnights(&["2026-01-31"]));
    // `*/1` in day-of-week allows every day, and as it begins with `*` the AND rule holds.
    assert_eq!(fires("0 0 L * */1", "2026-01-01T00:00:00Z", UTC, 1), midnights(&["2026-01-31"]));
    assert_eq!(fires("0 0 L * *", "2026-01-01T00:00:00Z", UTC, 1), midnights(&["2026-01-31"]));
}

/// Days in `[from, to)` matching a day-of-month token, computed from the documented semantics
/// with chrono's calendar (independent of the bitset code).
fn oracle_days(token: &str, from: i32, to: i32) -> Vec<String> {
    use chrono::{NaiveDate, Weekday};
    let mut out = Vec::new();
    for year in from..to {
        for month in 1..=12u32 {
            let first = NaiveDate::from_ymd_opt(year, month, 1).expect("valid");
            let next = if month == 12 {
                NaiveDate::from_ymd_opt(year + 1, 1, 1)
            } else {
                NaiveDate::from_ymd_opt(year, month + 1, 1)
            }
            .expect("valid");
            let last = next.pred_opt().expect("valid");
            let dim = last.day();
            let nearest = |d: NaiveDate| match d.weekday() {
                Weekday::Sat if d.day() == 1 => d + chrono::Duration::days(2),
                Weekday::Sat => d - chrono::Duration::days(1),
                Weekday::Sun if d.day() == dim => d - chrono::Duration::days(2),
                Weekday::Sun => d + chrono::Duration::days(1),
                _ => d,
            };
            let days: Vec<NaiveDate> = match token {
                "L" => vec![last],
                "LW" => vec![nearest(last)],
                t if t.starts_with("L-") => {
                    let n: u32 = t[2..].parse().expect("offset");
                    (n < dim).then(|| last - chrono::Duration::days(i64::from(n))).into_iter().collect()
                }
                t if t.ends_with('W') => {
                    let n: u32 = t[..t.len() - 1].parse().expect("day");
                    NaiveDate::from_ymd_opt(year, month, n).map(nearest).into_iter().collect()
                }
                t if t.ends_with('L') => {
                    let wd: u32 = t[..t.len() - 1].parse().expect("weekday");
                    (1..=dim)
                        .rev()
                        .filter_map(|d| NaiveDate::from_ymd_opt(year, month, d))
                        .find(|d| d.weekday().num_days_from_sunday() == wd % 7)
                        .into_iter()
                        .collect()
                }
                t => {
                    let (wd, nth) = t.split_once('#').expect("n#k");
                    let (wd, nth): (u32, usize) = (wd.parse().expect("weekday"), nth.parse().expect("nth"));
                    (1..=dim)
                        .filter_map(|d| NaiveDate::from_ymd_opt(year, month, d))
                        .filter(|d| d.weekday().num_days_from_sunday() == wd % 7)
                        .nth(nth - 1)
                        .into_iter()
                        .collect()
                }
            };
            out.extend(days.into_iter().filter(|d| *d >= first).map(|d| format!("{d}T00:00:00Z")));
        }
    }
    out
}

#[test]
fn day_tokens_match_a_calendar_oracle_over_thirty_years() {
    let dom = ["L", "L-1", "L-2", "L-15", "L-28", "L-29", "L-30", "LW", "1W", "2W", "15W", "28W", "29W", "30W", "31W"];
    let dow = ["1#1", "5#3", "7#2", "6#4", "3#5", "1L", "5L", "6L", "7L"];
    for token in dom.iter().chain(dow.iter()) {
        let want = oracle_days(token, 2020, 2050);
        let expr = if dom.contains(token) { format!("0 0 {token} * *") } else { format!("0 0 * * {token}") };
        let got = fires(&expr, "2019-12-31T12:00:00Z", UTC, want.len() + 1);
        assert_eq!(got[..want.len()], want[..], "{expr}");
        assert!(got.get(want.len()).is_none_or(|t| t.as_str() >= "2050-01-01"), "{expr}");
    }
}

#[test]
fn seed_dialect_reads_the_day_tokens_of_gorhill_cronexpr() {
    // gorhill/cronexpr numbers weekdays 0-6 and accepts 0 before # and L.
    let seed = seed_fires("0 0 * * 0#1", "2026-01-01T00:00:00Z", 3);
    assert_eq!(seed, fires("0 0 * * 7#1", "2026-01-01T00:00:00Z", UTC, 3));
    assert_eq!(seed_fires("0 0 * * 0L", "2026-01-01T00:00:00Z", 1), midnights(&["2026-01-25"]));
    // Six seed fields are five plus a year.
    assert_eq!(seed_fires("0 0 L * * 2027", "2026-01-01T00:00:00Z", 2), midnights(&["2027-01-31", "2027-02-28"]));
    assert_eq!(seed_fires("0 0 LW * * 2027", "2026-01-01T00:00:00Z", 1), midnights(&["2027-01-29"]));
    assert_eq!(seed_fires("0 0 15W * *", "2026-02-01T00:00:00Z", 1), midnights(&["2026-02-16"]));
}

#[test]
fn invalid_day_tokens_are_rejected_with_a_clear_message() {
    use Dialect::{Distcron as D, Seed as S};
    let cases: &[(&str, Dialect, &str, &str)] = &[
        ("0 0 * * 0#1", D, "day-of-week", "write Sunday as 7 or SUN"),
        ("0 0 * * 0L", D, "day-of-week", "write Sunday as 7 or SUN"),
        ("0 0 32W * *", D, "day-of-month", "day 32 is out of range 1-31"),
        ("0 0 0W * *", D, "day-of-month", "out of range 1-31"),
        ("0 0 L-40 * *", D, "day-of-month", "offset after L- is 40, out of range 0-30"),
        ("0 0 L-31 * *", D, "day-of-month", "out of range 0-30"),
        ("0 0 L- * *", D, "day-of-month", "not a valid day of the month"),
        ("0 0 L-x * *", D, "day-of-month", "not a valid day of the month"),
        ("0 0 W * *", D, "day-of-month", "not a valid day of the month"),
        ("0 0 L/2 * *", D, "day-of-month", "not a valid day of the month"),
        ("0 0 1-L * *", D, "day-of-month", "not a valid day of the month"),
        ("0 0 15W-20 * *", D, "day-of-month", "not a valid day of the month"),
        ("0 0 5#3 * *", D, "day-of-month", "belongs in the day-of-week field"),
        ("0 0 * * 1#0", D, "day-of-week", "must be 1-5"),
        ("0 0 * * 1#6", D, "day-of-week", "must be 1-5"),
        ("0 0 * * 1#", D, "day-of-week", "must be 1-5"),
        ("0 0 * * 8#1", D, "day-of-week", "8 is out of range 0-7"),
        ("0 0 * * MON-FRI#2", D, "day-of-week", "one weekday goes before # or L"),
        ("0 0 * * #1", D, "day-of-week", "one weekday goes before # or L"),
        ("0 0 * * L", D, "day-of-week", "alone is not a day of the week"),
        ("0 0 * * 15W", D, "day-of-week", "belongs in the day-of-month field"),
        ("0 0 * * FOOL", D, "day-of-week", "not a valid day of the week"),
        ("0 0 L * 1#0", S, "day-of-week", "must be 1-5"),
        ("0 0 L,, * *", D, "day-of-month", "empty list item"),
        ("0 L * * *", D, "hours", "not a valid hour"),
        ("0 0 * L *", D, "month", "not a valid month"),
    ];
    for (expr, dialect, field, needle) in cases {
        let e = err(expr, *dialect);
        assert_eq!(e.field, Some(*field), "{expr:?} -> {e}");
        assert!(e.message.contains(needle), "{expr:?}: {e} should say {needle:?}");
    }
    // Tokens that can never match with the given months.
    let e = err("0 0 31W 2 *", Dialect::Distcron);
    assert!(e.message.starts_with("never fires"), "{e}");
    let e = err("0 0 * 2 1#5 2027", Dialect::Seed);
    assert!(e.message.starts_with("never fires"), "{e}");
}

#[test]
fn describe_reads_day_tokens_in_plain_language() {
    let cases = [
        ("0 0 L * *", "at 00:00 on the last day of the month"),
        ("0 0 L-3 * *", "at 00:00 on the last day of the month minus 3 days"),
        ("0 0 15W * *", "at 00:00 on the weekday nearest day 15 of the month"),
        ("0 0 LW * *", "at 00:00 on the last weekday of the month"),
        ("0 18 * * 5L", "at 18:00 on the last Friday of the month"),
        ("0 0 * * 1#1", "at 00:00 on the first Monday of the month"),
        ("0 9 ? * 5#3", "at 09:00 on the third Friday of the month"),
        ("0 0 1,L * *", "at 00:00 on day 1 of the month or on the last day of the month"),
        ("0 0 * * MON,5L", "at 00:00 on Monday or on the last Friday of the month"),
        ("0 0 L * 5", "at 00:00 on the last day of the month or on Friday"),
        ("0 0 L 2 *", "at 00:00 on the last day of the month in February"),
        ("*/15 * L * *", "every 15 minutes, on the last day of the month"),
    ];
    for (expr, want) in cases {
        assert_eq!(parse_in(expr, Dialect::Distcron).describe(), want, "{expr}");
    }
    let f = parse_in("0 0 1,LW,L-2 * 1#1,fri#L", Dialect::Distcron).fields();
    assert_eq!(f["day_of_month"], serde_json::json!([1]));
    assert_eq!(f["day_of_month_special"], serde_json::json!(["LW", "L-2"]));
    assert_eq!(f["day_of_week"], serde_json::json!([]));
    assert_eq!(f["day_of_week_special"], serde_json::json!(["1#1", "5L"]));
    assert_eq!(
        parse_in("0 0 * * SUN#2", Dialect::Distcron).fields()["day_of_week_special"],
        serde_json::json!(["7#2"])
    );
}
