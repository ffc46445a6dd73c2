//! Parsing the dialect's text: macros, `@every <duration>`, the 5/6/7-field forms and each
//! field's `*`, `?`, numbers, names, ranges, steps and lists (ARCHITECTURE.md "Scheduling
//! semantics"), and the Quartz/croner day tokens: `L`, `L-n`, `nW`, `LW` in day-of-month,
//! `n#k` and `nL` in day-of-week. Produces a [`CronSpec`] or an interval; computing fire times
//! is left to `calendar.rs` and `tz.rs`.

use super::calendar::{CronSpec, DayBase, DomRule, DowRule, SpecParts, YearSet, MAX_YEAR, MIN_YEAR};
use super::{CronError, Dialect};

/// Longest accepted expression, in bytes; longer input is rejected before any other work.
pub(super) const MAX_EXPR_LEN: usize = 1024;
/// Longest `@every` interval: 366 days.
pub(super) const MAX_EVERY_SECS: u64 = 366 * 86_400;

/// What an expression parses into.
pub(super) enum Parsed {
    Cron(CronSpec),
    /// `@every`: an interval in seconds, ticking at multiples of it since the Unix epoch.
    Every(u64),
}

/// One field's name, range and spelling rules.
struct FieldDef {
    /// The name used in [`CronError::field`].
    name: &'static str,
    /// One value, in prose ("minute", "month").
    what: &'static str,
    min: u32,
    max: u32,
    /// Upper end of `*` and of an open `a/n` (day-of-week: 6, although `7` may be written).
    open_max: u32,
    /// Three-letter names, case-insensitive; the first is worth `name_base`.
    names: &'static [&'static str],
    name_base: u32,
    /// Day fields accept `?` (as `*`).
    day_field: bool,
}

const MONTH_NAMES: &[&str] = &["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];
const DAY_NAMES: &[&str] = &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

const fn plain(name: &'static str, what: &'static str, min: u32, max: u32) -> FieldDef {
    FieldDef { name, what, min, max, open_max: max, names: &[], name_base: 0, day_field: false }
}

const SECONDS: FieldDef = plain("seconds", "second", 0, 59);
const MINUTES: FieldDef = plain("minutes", "minute", 0, 59);
const HOURS: FieldDef = plain("hours", "hour", 0, 23);
const DAY_OF_MONTH: FieldDef = FieldDef { day_field: true, ..plain("day-of-month", "day of the month", 1, 31) };
const MONTH: FieldDef = FieldDef { names: MONTH_NAMES, name_base: 1, ..plain("month", "month", 1, 12) };
const DAY_OF_WEEK: FieldDef =
    FieldDef { open_max: 6, names: DAY_NAMES, day_field: true, ..plain("day-of-week", "day of the week", 0, 7) };
const YEAR: FieldDef = plain("year", "year", MIN_YEAR as u32, MAX_YEAR as u32);

fn whole(message: impl Into<String>) -> CronError {
    CronError { field: None, message: message.into() }
}

fn field_err(def: &FieldDef, message: String) -> CronError {
    CronError { field: Some(def.name), message }
}

/// Parses a whole expression in `dialect`.
pub(super) fn parse(expr: &str, dialect: Dialect) -> Result<Parsed, CronError> {
    // Checked first so that hostile input costs nothing.
    if expr.len() > MAX_EXPR_LEN {
        return Err(whole(format!("expression is too long ({} bytes; at most {MAX_EXPR_LEN})", expr.len())));
    }
    let text = expr.trim();
    if text.is_empty() {
        return Err(whole("empty expression"));
    }
    if let Some(c) = text.chars().find(|c| !(c.is_ascii_graphic() || *c == ' ' || *c == '\t')) {
        return Err(whole(format!("invalid character {c:?}; fields are ASCII, separated by spaces or tabs")));
    }
    let tokens: Vec<&str> = text.split([' ', '\t']).filter(|t| !t.is_empty()).collect();
    if tokens[0].starts_with('@') {
        return parse_macro(&tokens);
    }
    let texts = match (tokens.len(), dialect) {
        (5, _) => FieldTexts { seconds: "0", rest: &tokens[0..5], year: None, dialect },
        (6, Dialect::Distcron) => FieldTexts { seconds: tokens[0], rest: &tokens[1..6], year: None, dialect },
        // gorhill/cronexpr: six fields are the five standard ones plus a year.
        (6, Dialect::Seed) => FieldTexts { seconds: "0", rest: &tokens[0..5], year: Some(tokens[5]), dialect },
        (7, _) => FieldTexts { seconds: tokens[0], rest: &tokens[1..6], year: Some(tokens[6]), dialect },
        (n, _) => return Err(whole(format!("expected 5, 6 or 7 fields, found {n}"))),
    };
    texts.parse().map(Parsed::Cron)
}

fn parse_macro(tokens: &[&str]) -> Result<Parsed, CronError> {
    let name = tokens[0].to_ascii_lowercase();
    if name == "@every" {
        return match tokens {
            [_] => Err(whole("@every needs a duration, such as @every 5m")),
            [_, duration] => parse_every(duration).map(Parsed::Every),
            [_, _, extra, ..] => {
                Err(whole(format!("@every takes one duration (write 1h30m, not 1h 30m); found extra field {extra:?}")))
            }
            [] => Err(whole("empty expression")),
        };
    }
    // Standard meanings; seconds are 0. `@hourly` has hour `*` and so is a wildcard job.
    let fields: [&str; 6] = match name.as_str() {
        "@yearly" | "@annually" => ["0", "0", "0", "1", "1", "*"],
        "@monthly" => ["0", "0", "0", "1", "*", "*"],
        "@weekly" => ["0", "0", "0", "*", "*", "0"],
        "@daily" | "@midnight" => ["0", "0", "0", "*", "*", "*"],
        "@hourly" => ["0", "0", "*", "*", "*", "*"],
        _ => {
            return Err(whole(format!(
                "unknown macro {}; use @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly or @every <duration>",
                tokens[0]
            )))
        }
    };
    if let Some(extra) = tokens.get(1) {
        return Err(whole(format!("{} takes no fields; found extra field {extra:?}", tokens[0])));
    }
    FieldTexts { seconds: fields[0], rest: &fields[1..6], year: None, dialect: Dialect::Distcron }
        .parse()
        .map(Parsed::Cron)
}

/// Go-style duration with whole numbers and units `s`, `m`, `h`, `d`, combined (`1h30m`).
fn parse_every(text: &str) -> Result<u64, CronError> {
    let invalid = || {
        whole(format!(
            "invalid @every duration {text:?}: use whole numbers with units s, m, h or d, such as 30s, 5m, 1h30m or 1d"
        ))
    };
    let too_long = || whole(format!("@every duration {text} is longer than 366d"));
    let bytes = text.as_bytes();
    let (mut i, mut total) = (0usize, 0u64);
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == start || i == bytes.len() {
            return Err(invalid());
        }
        let unit: u64 = match bytes[i] {
            b's' => 1,
            b'm' => 60,
            b'h' => 3600,
            b'd' => 86_400,
            _ => return Err(invalid()),
        };
        let n: u64 = text[start..i].parse().map_err(|_| too_long())?;
        total = n.checked_mul(unit).and_then(|v| v.checked_add(total)).ok_or_else(too_long)?;
        i += 1;
    }
    if total == 0 {
        return Err(whole("@every duration must be at least 1s"));
    }
    if total > MAX_EVERY_SECS {
        return Err(too_long());
    }
    Ok(total)
}

/// The text of each field of a cron expression, normalized to the 7-field order.
struct FieldTexts<'a> {
    seconds: &'a str,
    /// minute, hour, day-of-month, month, day-of-week
    rest: &'a [&'a str],
    year: Option<&'a str>,
    /// The seed also reads weekday 0 before `#` and `L` (gorhill/cronexpr).
    dialect: Dialect,
}

impl FieldTexts<'_> {
    fn parse(&self) -> Result<CronSpec, CronError> {
        let [minute, hour, dom, month, dow] = self.rest else {
            return Err(whole(format!("expected 5, 6 or 7 fields, found {}", self.rest.len())));
        };
        let seconds = bits(self.seconds, &SECONDS)?;
        let minutes = bits(minute, &MINUTES)?;
        let hours = bits(hour, &HOURS)?;
        let (dom_bits, dom_rules) = day_of_month(dom)?;
        let months = bits(month, &MONTH)?;
        let (mut dow_bits, dow_rules) = day_of_week(dow, self.dialect)?;
        if dow_bits >> 7 & 1 == 1 {
            // 7 is Sunday, like 0.
            dow_bits = (dow_bits & !(1 << 7)) | 1;
        }
        let years = self.year.map(year_set).transpose()?;
        let star = |t: &str| t.starts_with(['*', '?']);
        let spec = CronSpec::new(SpecParts {
            seconds,
            minutes,
            hours,
            dom: dom_bits,
            months,
            dow: dow_bits,
            dom_rules,
            dow_rules,
            years,
            dom_star: star(dom),
            dow_star: star(dow),
            // ARCHITECTURE.md: wildcard = the seconds, minute or hour field begins with `*`.
            wildcard: [self.seconds, minute, hour].iter().any(|t| t.starts_with('*')),
        });
        if !spec.fires_in_some_year() {
            return Err(never_fires(&spec));
        }
        Ok(spec)
    }
}

/// Why a schedule with no matching day never fires, naming the field to blame when one is.
fn never_fires(spec: &CronSpec) -> CronError {
    if spec.fires_in_some_year_type() {
        let hint = if spec.fires_only_in_leap_years() { " (its only days are February 29, in leap years)" } else { "" };
        return whole(format!("never fires: no year in the year field has a matching day{hint}"));
    }
    if spec.dow_star && spec.dow == 0x7f && spec.dom_rules.is_empty() {
        let months: Vec<String> = set_bits(spec.months).map(|m| month_name(m).to_owned()).collect();
        let days: Vec<String> = set_bits(spec.dom).map(|d| d.to_string()).collect();
        let verb = if months.len() == 1 { "has" } else { "have" };
        return CronError {
            field: Some(DAY_OF_MONTH.name),
            message: format!("never fires: {} {verb} no day {}", join(&months, "and"), join(&days, "or")),
        };
    }
    whole("never fires: no date matches the day-of-month, month and day-of-week fields together")
}

pub(super) fn month_name(month: u32) -> &'static str {
    const FULL: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    FULL.get(month.wrapping_sub(1) as usize).copied().unwrap_or("?")
}

/// `a`, `a and b`, `a, b and c` (with `word` = "and" or "or").
pub(super) fn join(items: &[String], word: &str) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} {word} {last}", init.join(", ")),
    }
}

pub(super) fn set_bits(bits: u64) -> impl Iterator<Item = u32> {
    (0..64u32).filter(move |i| bits >> i & 1 == 1)
}

fn bits(text: &str, def: &FieldDef) -> Result<u64, CronError> {
    let mut bits = 0u64;
    for (lo, hi, step) in items(text, def)? {
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

fn year_set(text: &str) -> Result<YearSet, CronError> {
    let mut set = YearSet::empty();
    for (lo, hi, step) in items(text, &YEAR)? {
        let mut v = lo;
        while v <= hi {
            set.insert(i64::from(v));
            v += step;
        }
    }
    Ok(set)
}

/// A field's comma-separated items as inclusive `(low, high, step)` triples, all within range.
fn items(text: &str, def: &FieldDef) -> Result<Vec<(u32, u32, u32)>, CronError> {
    if text.contains('?') {
        if !def.day_field {
            return Err(field_err(
                def,
                format!("{text:?}: ? is only allowed in the day-of-month and day-of-week fields"),
            ));
        }
        if text != "?" {
            return Err(field_err(def, format!("{text:?}: ? must be the whole field")));
        }
        return Ok(vec![(def.min, def.open_max, 1)]);
    }
    let mut out = Vec::new();
    for item in text.split(',') {
        if item.is_empty() {
            return Err(field_err(def, format!("empty list item in {text:?}")));
        }
        let (base, step) = match item.split_once('/') {
            Some((base, step)) => (base, Some(parse_step(step, item, def)?)),
            None => (item, None),
        };
        let (lo, hi) = if base == "*" {
            (def.min, def.open_max)
        } else if let Some((a, b)) = base.split_once('-') {
            if b.contains('-') {
                return Err(field_err(def, format!("invalid range {base:?}")));
            }
            let (lo, hi) = (value(a, item, def)?, value(b, item, def)?);
            if lo > hi {
                return Err(field_err(def, format!("range {base} is reversed ({lo} > {hi}); write it low to high")));
            }
            (lo, hi)
        } else {
            let v = value(base, item, def)?;
            // `a/n` runs from a to the top of the range.
            (v, if step.is_some() { def.open_max.max(v) } else { v })
        };
        out.push((lo, hi, step.unwrap_or(1)));
    }
    Ok(out)
}

fn parse_step(text: &str, item: &str, def: &FieldDef) -> Result<u32, CronError> {
    let span = def.open_max - def.min + 1;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(field_err(def, format!("invalid step {text:?} in {item:?}; a step is a whole number")));
    }
    let n: u32 = if text.len() > 9 { u32::MAX } else { text.parse().unwrap_or(u32::MAX) };
    if n == 0 {
        return Err(field_err(def, format!("step 0 in {item:?} is invalid; a step is at least 1")));
    }
    if n > span {
        return Err(field_err(def, format!("step {text} in {item:?} is out of range 1-{span}")));
    }
    Ok(n)
}

fn value(token: &str, item: &str, def: &FieldDef) -> Result<u32, CronError> {
    if token.is_empty() {
        return Err(field_err(def, format!("missing value in {item:?}")));
    }
    let (min, max) = (def.min, def.max);
    if token.bytes().all(|b| b.is_ascii_digit()) {
        let v: u32 = if token.len() > 9 { u32::MAX } else { token.parse().unwrap_or(u32::MAX) };
        if !(min..=max).contains(&v) {
            return Err(field_err(def, format!("{token} is out of range {min}-{max}")));
        }
        return Ok(v);
    }
    if let Some(i) = def.names.iter().position(|n| n.eq_ignore_ascii_case(token)) {
        return Ok(def.name_base + i as u32);
    }
    let names = match def.names {
        [first, .., last] => format!(" or {first}-{last}"),
        _ => String::new(),
    };
    Err(field_err(def, format!("{token:?} is not a valid {} ({min}-{max}{names})", def.what)))
}

/// The items of a day field other than `?`: each either plain (numbers, ranges, steps, names,
/// handled by `bits`) or one of the field's special tokens (`special` returns it).
fn split_day_field<'a, R>(
    text: &'a str,
    def: &FieldDef,
    special: impl Fn(&str) -> Result<Option<R>, CronError>,
) -> Result<(u64, Vec<R>), CronError> {
    if text.contains('?') {
        return Ok((bits(text, def)?, Vec::new()));
    }
    let (mut plain, mut rules) = (Vec::<&'a str>::new(), Vec::new());
    for item in text.split(',') {
        if item.is_empty() {
            return Err(field_err(def, format!("empty list item in {text:?}")));
        }
        match special(item)? {
            Some(rule) => rules.push(rule),
            None => plain.push(item),
        }
    }
    let bits = if plain.is_empty() { 0 } else { bits(&plain.join(","), def)? };
    Ok((bits, rules))
}

/// The day-of-month field: plain days and `L`, `L-n` (0..=30), `nW`, `LW`, `L-nW`.
fn day_of_month(text: &str) -> Result<(u64, Vec<DomRule>), CronError> {
    split_day_field(text, &DAY_OF_MONTH, dom_rule)
}

fn dom_rule(item: &str) -> Result<Option<DomRule>, CronError> {
    let def = &DAY_OF_MONTH;
    let up = item.to_ascii_uppercase();
    if up.contains('#') {
        return Err(field_err(
            def,
            format!("{item:?}: # (nth weekday) belongs in the day-of-week field, such as 5#3 for the third Friday"),
        ));
    }
    if !up.contains(['L', 'W']) {
        return Ok(None);
    }
    let shape = || {
        field_err(
            def,
            format!(
                "{item:?} is not a valid day of the month; the L and W forms are L (last day), L-n \
                 (n days before it, n 0-30), nW (weekday nearest day n), LW (last weekday) and L-nW, \
                 each on its own between commas"
            ),
        )
    };
    let (stem, nearest_weekday) = match up.strip_suffix('W') {
        Some(stem) => (stem, true),
        None => (up.as_str(), false),
    };
    let base = if stem == "L" {
        DayBase::FromEnd(0)
    } else if let Some(offset) = stem.strip_prefix("L-") {
        if offset.is_empty() || !offset.bytes().all(|b| b.is_ascii_digit()) {
            return Err(shape());
        }
        let n = number(offset);
        if n > 30 {
            return Err(field_err(def, format!("{item:?}: the offset after L- is {n}, out of range 0-30")));
        }
        DayBase::FromEnd(n)
    } else if nearest_weekday && !stem.is_empty() && stem.bytes().all(|b| b.is_ascii_digit()) {
        let n = number(stem);
        if !(1..=31).contains(&n) {
            return Err(field_err(def, format!("{item:?}: day {stem} is out of range 1-31")));
        }
        DayBase::Day(n)
    } else {
        return Err(shape());
    };
    Ok(Some(DomRule { base, nearest_weekday }))
}

/// The day-of-week field: plain weekdays and `n#k` (k 1-5, or `L` as croner writes it), `nL`.
fn day_of_week(text: &str, dialect: Dialect) -> Result<(u64, Vec<DowRule>), CronError> {
    split_day_field(text, &DAY_OF_WEEK, |item| dow_rule(item, dialect))
}

fn dow_rule(item: &str, dialect: Dialect) -> Result<Option<DowRule>, CronError> {
    let def = &DAY_OF_WEEK;
    let up = item.to_ascii_uppercase();
    if let Some((day, nth)) = up.split_once('#') {
        let weekday = rule_weekday(day, item, dialect)?;
        if nth == "L" {
            return Ok(Some(DowRule::Last { weekday }));
        }
        if nth.is_empty() || !nth.bytes().all(|b| b.is_ascii_digit()) || !(1..=5).contains(&number(nth)) {
            return Err(field_err(
                def,
                format!("{item:?}: the occurrence after # must be 1-5 (5#3 is the third Friday of the month) or L"),
            ));
        }
        return Ok(Some(DowRule::Nth { weekday, nth: number(nth) }));
    }
    if up == "L" {
        return Err(field_err(
            def,
            "\"L\" alone is not a day of the week; write 5L for the last Friday of the month, or L in the \
             day-of-month field for the last day of the month"
                .to_owned(),
        ));
    }
    if up.contains('W') && !up.contains("WED") {
        return Err(field_err(def, format!("{item:?}: W (nearest weekday) belongs in the day-of-month field")));
    }
    match up.strip_suffix('L') {
        Some(day) => Ok(Some(DowRule::Last { weekday: rule_weekday(day, item, dialect)? })),
        None => Ok(None),
    }
}

/// The weekday before `#` or `L`: one number or name, 7 (or, in the seed dialect, 0) = Sunday.
fn rule_weekday(day: &str, item: &str, dialect: Dialect) -> Result<u32, CronError> {
    let def = &DAY_OF_WEEK;
    if day.is_empty() || day.contains(['-', '/', '*', ',']) {
        return Err(field_err(
            def,
            format!("{item:?}: one weekday goes before # or L (1-7 or MON-SUN, such as 5#3 or FRI#3, 5L or FRIL)"),
        ));
    }
    let weekday = value(day, item, def)?;
    if weekday == 0 && dialect == Dialect::Distcron && day.bytes().all(|b| b.is_ascii_digit()) {
        // Quartz, where these forms come from, has no weekday 0; one spelling of Sunday here.
        return Err(field_err(
            def,
            format!("{item:?}: write Sunday as 7 or SUN before # or L (7#1 or SUN#1 is the first Sunday of the month)"),
        ));
    }
    Ok(weekday % 7)
}

/// A run of at most a few ASCII digits (checked by the caller) as a number; longer runs are
/// out of every range.
fn number(digits: &str) -> u32 {
    if digits.len() > 9 {
        u32::MAX
    } else {
        digits.parse().unwrap_or(u32::MAX)
    }
}
