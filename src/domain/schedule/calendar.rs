//! The calendar core of a cron schedule: the per-field bitsets and the field-by-field search for
//! the next matching *local wall-clock* time.
//!
//! Times here are "naive seconds": seconds since 1970-01-01T00:00:00 of a wall clock, with no
//! time zone. Mapping them to UTC instants (and the DST rule) is `tz.rs`'s job; parsing text into
//! these sets is `parse.rs`'s.
//!
//! The Quartz/croner day tokens (`L`, `L-n`, `nW`, `LW`, `n#k`, `nL`) are [`DomRule`]s and
//! [`DowRule`]s: each names at most one day of a month, found from the month's length and the
//! weekday of its 1st alone. So a month's matching days stay a function of (length, weekday of
//! the 1st), and the per-year-type month table below still lets the search skip in O(1).

use std::fmt;

/// First year a year field may name; also the floor of the year bitset.
pub(super) const MIN_YEAR: i64 = 1970;
/// Last year any schedule fires in: the search stops after it (a bounded horizon).
pub(super) const MAX_YEAR: i64 = 9999;

const YEAR_WORDS: usize = ((MAX_YEAR - MIN_YEAR + 1) as usize).div_ceil(64);
const SECS_PER_DAY: i64 = 86_400;

/// The set of years a year field allows (1970..=9999), one bit per year.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct YearSet(Box<[u64; YEAR_WORDS]>);

impl YearSet {
    pub(super) fn empty() -> Self {
        Self(Box::new([0; YEAR_WORDS]))
    }

    pub(super) fn insert(&mut self, year: i64) {
        if (MIN_YEAR..=MAX_YEAR).contains(&year) {
            let i = (year - MIN_YEAR) as usize;
            self.0[i / 64] |= 1 << (i % 64);
        }
    }

    pub(super) fn contains(&self, year: i64) -> bool {
        if !(MIN_YEAR..=MAX_YEAR).contains(&year) {
            return false;
        }
        let i = (year - MIN_YEAR) as usize;
        self.0[i / 64] >> (i % 64) & 1 == 1
    }

    /// The smallest year in the set that is `>= from`.
    pub(super) fn next_from(&self, from: i64) -> Option<i64> {
        let from = from.max(MIN_YEAR);
        if from > MAX_YEAR {
            return None;
        }
        let i = (from - MIN_YEAR) as usize;
        let (mut word, bit) = (i / 64, i % 64);
        let mut bits = self.0[word] & (u64::MAX << bit);
        loop {
            if bits != 0 {
                return Some(MIN_YEAR + (word * 64) as i64 + i64::from(bits.trailing_zeros()));
            }
            word += 1;
            if word >= YEAR_WORDS {
                return None;
            }
            bits = self.0[word];
        }
    }

    /// Years in the set, ascending.
    pub(super) fn iter(&self) -> impl Iterator<Item = i64> + '_ {
        let mut next = self.next_from(MIN_YEAR);
        std::iter::from_fn(move || {
            let year = next?;
            next = self.next_from(year + 1);
            Some(year)
        })
    }

    pub(super) fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub(super) fn is_full(&self) -> bool {
        self.len() == (MAX_YEAR - MIN_YEAR + 1) as usize
    }

    /// Maximal runs of consecutive years, as inclusive `(first, last)` pairs.
    pub(super) fn runs(&self) -> Vec<(i64, i64)> {
        let mut runs: Vec<(i64, i64)> = Vec::new();
        for year in self.iter() {
            match runs.last_mut() {
                Some((_, last)) if *last + 1 == year => *last = year,
                _ => runs.push((year, year)),
            }
        }
        runs
    }
}

impl fmt::Debug for YearSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let runs: Vec<String> =
            self.runs().iter().map(|(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") }).collect();
        write!(f, "YearSet[{}]", runs.join(","))
    }
}

/// Where a day-of-month token counts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum DayBase {
    /// Day `n` of the month (1..=31).
    Day(u32),
    /// `n` days before the last day of the month (`L` is 0, `L-3` is 3; 0..=30).
    FromEnd(u32),
}

/// A day-of-month token whose day depends on the month: `L`, `L-n`, `nW`, `LW`, `L-nW`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct DomRule {
    pub(super) base: DayBase,
    /// `W`: the weekday (Monday to Friday) nearest the base day, never leaving the month
    /// (Quartz): a Saturday moves to the Friday before, or to Monday the 3rd when it is the
    /// 1st; a Sunday moves to the Monday after, or to the Friday before when it is the last day.
    pub(super) nearest_weekday: bool,
}

impl DomRule {
    /// The day of a month with `dim` days whose 1st falls on `weekday1` (0 = Sunday), if any:
    /// `31W` has none in a 30-day month (like a plain `31`), `L-30` only in 31-day months.
    pub(super) fn day(self, dim: u32, weekday1: u32) -> Option<u32> {
        let day = match self.base {
            DayBase::Day(n) => n,
            DayBase::FromEnd(n) => dim.checked_sub(n)?,
        };
        if day == 0 || day > dim {
            return None;
        }
        if !self.nearest_weekday {
            return Some(day);
        }
        Some(match (weekday1 + day - 1) % 7 {
            6 if day == 1 => 3,
            6 => day - 1,
            0 if day == dim => day - 2,
            0 => day + 1,
            _ => day,
        })
    }
}

impl fmt::Display for DomRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.base {
            DayBase::Day(n) => write!(f, "{n}")?,
            DayBase::FromEnd(0) => f.write_str("L")?,
            DayBase::FromEnd(n) => write!(f, "L-{n}")?,
        }
        if self.nearest_weekday {
            f.write_str("W")?;
        }
        Ok(())
    }
}

/// A day-of-week token whose day depends on the month: `n#k` (the k-th such weekday, 1..=5)
/// and `nL` (the last such weekday). Weekdays are 0..=6, 0 = Sunday.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum DowRule {
    Nth { weekday: u32, nth: u32 },
    Last { weekday: u32 },
}

impl DowRule {
    /// The day of a month with `dim` days whose 1st falls on `weekday1`, if any (`1#5` has
    /// none in a month with four Mondays).
    pub(super) fn day(self, dim: u32, weekday1: u32) -> Option<u32> {
        match self {
            Self::Nth { weekday, nth } => {
                let day = 1 + (weekday + 7 - weekday1) % 7 + 7 * (nth - 1);
                (day <= dim).then_some(day)
            }
            Self::Last { weekday } => {
                let last = (weekday1 + dim - 1) % 7;
                Some(dim - (last + 7 - weekday) % 7)
            }
        }
    }

    pub(super) fn weekday(self) -> u32 {
        match self {
            Self::Nth { weekday, .. } | Self::Last { weekday } => weekday,
        }
    }
}

impl fmt::Display for DowRule {
    /// Canonical spelling, valid in both dialects: Sunday is written 7.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let day = if self.weekday() == 0 { 7 } else { self.weekday() };
        match self {
            Self::Nth { nth, .. } => write!(f, "{day}#{nth}"),
            Self::Last { .. } => write!(f, "{day}L"),
        }
    }
}

/// A parsed cron expression: one bitset per field plus the flags the day and DST rules need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct CronSpec {
    /// Bits 0..=59.
    pub(super) seconds: u64,
    /// Bits 0..=59.
    pub(super) minutes: u64,
    /// Bits 0..=23.
    pub(super) hours: u64,
    /// Bits 1..=31.
    pub(super) dom: u64,
    /// Bits 1..=12.
    pub(super) months: u64,
    /// Bits 0..=6, 0 = Sunday (a `7` in the text is folded onto 0).
    pub(super) dow: u64,
    /// Day-of-month tokens beyond `dom` (`L`, `15W`, ...), sorted, no duplicates.
    pub(super) dom_rules: Vec<DomRule>,
    /// Day-of-week tokens beyond `dow` (`5#3`, `5L`), sorted, no duplicates.
    pub(super) dow_rules: Vec<DowRule>,
    /// `None` when there is no year field (or it is `*`): every year.
    pub(super) years: Option<YearSet>,
    /// Day-of-month field begins with `*` or `?` (Vixie's DOM_STAR).
    pub(super) dom_star: bool,
    /// Day-of-week field begins with `*` or `?` (Vixie's DOW_STAR).
    pub(super) dow_star: bool,
    /// ARCHITECTURE.md: a wildcard job's seconds, minute or hour field begins with `*`.
    pub(super) wildcard: bool,
    /// For each year type (`leap * 7 + weekday of January 1st`), the months having at least one
    /// matching day. Lets the search skip whole years and months in O(1).
    type_months: [u16; 14],
}

/// The fields of a [`CronSpec`] before the derived tables are computed.
pub(super) struct SpecParts {
    pub(super) seconds: u64,
    pub(super) minutes: u64,
    pub(super) hours: u64,
    pub(super) dom: u64,
    pub(super) months: u64,
    pub(super) dow: u64,
    pub(super) dom_rules: Vec<DomRule>,
    pub(super) dow_rules: Vec<DowRule>,
    pub(super) years: Option<YearSet>,
    pub(super) dom_star: bool,
    pub(super) dow_star: bool,
    pub(super) wildcard: bool,
}

impl CronSpec {
    pub(super) fn new(p: SpecParts) -> Self {
        let mut spec = Self {
            seconds: p.seconds,
            minutes: p.minutes,
            hours: p.hours,
            dom: p.dom,
            months: p.months,
            dow: p.dow,
            dom_rules: sorted(p.dom_rules),
            dow_rules: sorted(p.dow_rules),
            years: p.years.filter(|y| !y.is_full()),
            dom_star: p.dom_star,
            dow_star: p.dow_star,
            wildcard: p.wildcard,
            type_months: [0; 14],
        };
        for leap in [false, true] {
            for jan1 in 0..7u32 {
                let mut weekday = jan1;
                let mut months = 0u16;
                for month in 1..=12u32 {
                    let dim = month_len(month, leap);
                    if spec.months >> month & 1 == 1 && spec.day_mask(dim, weekday) != 0 {
                        months |= 1 << month;
                    }
                    weekday = (weekday + dim) % 7;
                }
                spec.type_months[usize::from(leap) * 7 + jan1 as usize] = months;
            }
        }
        spec
    }

    /// Days (bits 1..=dim) of a month with `dim` days whose 1st falls on `weekday1` (0 = Sunday)
    /// that match the day fields. ARCHITECTURE.md / Vixie cron: when both day fields are
    /// restricted a day matches if either does; when one begins with `*` both sets must match
    /// (so `*` alone means "the other field decides"). The `L`/`W`/`#` tokens add their day to
    /// their own field's set before the rule is applied, so they combine like any other value.
    fn day_mask(&self, dim: u32, weekday1: u32) -> u64 {
        let mut week = 0u64;
        for k in 0..7 {
            if self.dow >> ((weekday1 + k) % 7) & 1 == 1 {
                week |= 1 << k;
            }
        }
        // Bit k of `repeated` is day k + 1 of the month; five weeks cover 31 days.
        let repeated = week | week << 7 | week << 14 | week << 21 | week << 28;
        let valid = (1u64 << (dim + 1)) - 2;
        let mut by_dow = (repeated << 1) & valid;
        let mut by_dom = self.dom & valid;
        for rule in &self.dom_rules {
            by_dom |= rule.day(dim, weekday1).map_or(0, |d| 1 << d);
        }
        for rule in &self.dow_rules {
            by_dow |= rule.day(dim, weekday1).map_or(0, |d| 1 << d);
        }
        if self.dom_star || self.dow_star {
            by_dom & by_dow
        } else {
            by_dom | by_dow
        }
    }

    /// Months of `year` (bits 1..=12) with at least one matching day; 0 if the year is excluded.
    fn year_months(&self, year: i64) -> u64 {
        if self.years.as_ref().is_some_and(|set| !set.contains(year)) {
            return 0;
        }
        u64::from(self.type_months[year_type(year)])
    }

    /// The first year `>= from` (and `<= MAX_YEAR`) with a matching day.
    fn next_year(&self, from: i64) -> Option<i64> {
        match &self.years {
            Some(set) => {
                let mut year = set.next_from(from)?;
                loop {
                    if self.type_months[year_type(year)] != 0 {
                        return Some(year);
                    }
                    year = set.next_from(year + 1)?;
                }
            }
            None => (from..=MAX_YEAR).find(|&y| self.type_months[year_type(y)] != 0),
        }
    }

    /// Whether some day in some allowed year matches (parse rejects schedules that never fire).
    pub(super) fn fires_in_some_year(&self) -> bool {
        match &self.years {
            Some(set) => set.iter().any(|y| self.type_months[year_type(y)] != 0),
            None => self.type_months.iter().any(|&m| m != 0),
        }
    }

    /// Whether the day fields and months can match in some kind of year, ignoring the year field.
    pub(super) fn fires_in_some_year_type(&self) -> bool {
        self.type_months.iter().any(|&m| m != 0)
    }

    /// Whether every matching day needs a leap year (e.g. only February 29).
    pub(super) fn fires_only_in_leap_years(&self) -> bool {
        self.type_months[..7].iter().all(|&m| m == 0) && self.type_months[7..].iter().any(|&m| m != 0)
    }

    /// The first wall-clock time `>= start` (naive seconds) that matches every field, or `None`
    /// when there is none up to the end of [`MAX_YEAR`]. Advances year, month, day, hour,
    /// minute and second to the next allowed value in turn (no scanning).
    pub(super) fn next_match(&self, start: i64) -> Option<i64> {
        let (y, mo, d) = civil_from_days(start.div_euclid(SECS_PER_DAY));
        let sod = start.rem_euclid(SECS_PER_DAY) as u32;
        let (mut y, mut mo, mut d) = (y, mo, d);
        let (mut h, mut mi, mut s) = (sod / 3600, sod / 60 % 60, sod % 60);
        loop {
            if y > MAX_YEAR {
                return None;
            }
            let months = self.year_months(y);
            if months == 0 {
                y = self.next_year(y + 1)?;
                (mo, d, h, mi, s) = (1, 1, 0, 0, 0);
                continue;
            }
            match next_bit(months, mo) {
                None => {
                    y += 1;
                    (mo, d, h, mi, s) = (1, 1, 0, 0, 0);
                    continue;
                }
                Some(m) if m != mo => (mo, d, h, mi, s) = (m, 1, 0, 0, 0),
                Some(_) => {}
            }
            let mask = self.day_mask(month_len(mo, is_leap(y)), weekday(y, mo, 1));
            match next_bit(mask, d) {
                None => {
                    (mo, d, h, mi, s) = (mo + 1, 1, 0, 0, 0);
                    if mo > 12 {
                        (y, mo) = (y + 1, 1);
                    }
                    continue;
                }
                Some(nd) if nd != d => (d, h, mi, s) = (nd, 0, 0, 0),
                Some(_) => {}
            }
            match next_bit(self.hours, h) {
                None => {
                    (d, h, mi, s) = (d + 1, 0, 0, 0);
                    continue;
                }
                Some(nh) if nh != h => (h, mi, s) = (nh, 0, 0),
                Some(_) => {}
            }
            match next_bit(self.minutes, mi) {
                None => {
                    (h, mi, s) = (h + 1, 0, 0);
                    continue;
                }
                Some(nm) if nm != mi => (mi, s) = (nm, 0),
                Some(_) => {}
            }
            match next_bit(self.seconds, s) {
                None => {
                    (mi, s) = (mi + 1, 0);
                    continue;
                }
                Some(ns) => s = ns,
            }
            let secs_of_day = i64::from(h * 3600 + mi * 60 + s);
            return Some(days_from_civil(y, mo, d) * SECS_PER_DAY + secs_of_day);
        }
    }
}

fn sorted<T: Ord>(mut rules: Vec<T>) -> Vec<T> {
    rules.sort_unstable();
    rules.dedup();
    rules
}

/// The lowest set bit of `bits` at position `>= from`.
pub(super) fn next_bit(bits: u64, from: u32) -> Option<u32> {
    if from >= 64 {
        return None;
    }
    let rest = bits >> from;
    (rest != 0).then(|| from + rest.trailing_zeros())
}

pub(super) fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

pub(super) fn month_len(month: u32, leap: bool) -> u32 {
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Weekday of a date, 0 = Sunday.
fn weekday(year: i64, month: u32, day: u32) -> u32 {
    // 1970-01-01 was a Thursday (4).
    (days_from_civil(year, month, day) + 4).rem_euclid(7) as u32
}

fn year_type(year: i64) -> usize {
    usize::from(is_leap(year)) * 7 + weekday(year, 1, 1) as usize
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
pub(super) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01 (H. Hinnant's `civil_from_days`).
pub(super) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}
