//! Timings of the cron dialect's hot paths: `Schedule::parse` and consecutive `next_after`
//! calls, per expression and zone. Prints numbers only; correctness is tested in
//! `src/domain/schedule/tests.rs`. Run: `cargo bench --bench schedule`.

use std::time::Instant;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use distcron::domain::{Dialect, Schedule};

const CALLS: u32 = 10_000;

fn main() {
    let start: DateTime<Utc> = DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default(); // 2026-01-01
    let cases: [(&str, Tz); 7] = [
        ("*/7 3-59/11 8-20/3 1,10-20 * MON-FRI", chrono_tz::America::New_York),
        ("0 0 29 2 *", chrono_tz::UTC),
        ("30 2 * * *", chrono_tz::America::New_York),
        ("* * * * * *", chrono_tz::Europe::London),
        ("*/15 * * * *", chrono_tz::Australia::Lord_Howe),
        ("0 0 0 29 2 MON 2400-9999/400", chrono_tz::UTC),
        ("@every 5m", chrono_tz::UTC),
    ];
    for (expr, tz) in cases {
        let t = Instant::now();
        for _ in 0..CALLS {
            std::hint::black_box(Schedule::parse(std::hint::black_box(expr), Dialect::Distcron).ok());
        }
        let parse = t.elapsed() / CALLS;
        let Ok(schedule) = Schedule::parse(expr, Dialect::Distcron) else {
            println!("{expr:40} does not parse");
            continue;
        };
        let t = Instant::now();
        let mut cursor = start;
        let mut calls = 0u32;
        while calls < CALLS {
            let Some(next) = schedule.next_after(cursor, tz) else { break };
            cursor = next;
            calls += 1;
        }
        let next = t.elapsed() / calls.max(1);
        println!("{expr:40} {tz:22} parse {parse:>10.2?}  next_after {next:>10.2?}  ({calls} calls, last {cursor})");
    }
}
