//! [`Timestamp`]: albatross's `Time` (GeneralizedTime, spec §10.4), with its own calendar
//! arithmetic (proleptic Gregorian, UTC, no leap seconds) and no clock.

use std::fmt;

use serde::{Serialize, Serializer};

use crate::codec::error::DecodeError;

/// Milliseconds per day.
const DAY_MS: i64 = 86_400_000;

/// A point in time: milliseconds since 1970-01-01T00:00:00Z, between
/// [`Timestamp::MIN`] (0000-01-01) and [`Timestamp::MAX`] (9999-12-31T23:59:59.999), the
/// range a four-digit GeneralizedTime year can express.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// 1970-01-01T00:00:00Z, the default of absent `started` fields.
    pub const EPOCH: Self = Self(0);
    /// 0000-01-01T00:00:00Z.
    pub const MIN: Self = Self(days_from_civil(0, 1, 1) * DAY_MS);
    /// 9999-12-31T23:59:59.999Z.
    pub const MAX: Self = Self(days_from_civil(9999, 12, 31) * DAY_MS + DAY_MS - 1);

    /// The timestamp `ms` milliseconds after the epoch, if within range.
    pub fn from_millis(ms: i64) -> Option<Self> {
        (Self::MIN.0..=Self::MAX.0)
            .contains(&ms)
            .then_some(Self(ms))
    }

    /// The timestamp `secs` seconds after the epoch, if within range.
    pub fn from_unix_seconds(secs: i64) -> Option<Self> {
        secs.checked_mul(1000).and_then(Self::from_millis)
    }

    /// Milliseconds since the epoch.
    pub fn millis(self) -> i64 {
        self.0
    }

    /// RFC 3339 text in UTC: `2025-08-22T13:04:43Z`, with `.fff` when the milliseconds
    /// are not zero.
    pub fn rfc3339(self) -> String {
        let c = Civil::of(self);
        let mut s = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            c.year, c.month, c.day, c.hour, c.minute, c.second
        );
        if c.milli != 0 {
            s.push_str(&format!(".{:03}", c.milli));
        }
        s.push('Z');
        s
    }

    /// The GeneralizedTime text albatross writes: `YYYYMMDDHHMMSS`, `.fff` only when
    /// the milliseconds are not zero, then `Z`.
    pub(crate) fn generalized(self) -> String {
        let c = Civil::of(self);
        let mut s = format!(
            "{:04}{:02}{:02}{:02}{:02}{:02}",
            c.year, c.month, c.day, c.hour, c.minute, c.second
        );
        if c.milli != 0 {
            s.push_str(&format!(".{:03}", c.milli));
        }
        s.push('Z');
        s
    }

    /// Parses GeneralizedTime content leniently, as albatross does: `YYYYMMDDHH`, then
    /// optional `MM`, then (only after minutes) optional `SS`, then (only after seconds)
    /// optional `.` with 1–3 digits read as a number of milliseconds (`.5` = 5 ms), then
    /// optional `Z` or `±hhmm`. No zone means UTC.
    pub(crate) fn parse_generalized(text: &[u8]) -> Result<Self, DecodeError> {
        parse(text).ok_or(DecodeError::BadTime)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.rfc3339())
    }
}

/// A timestamp broken down into calendar fields.
struct Civil {
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
    milli: i64,
}

impl Civil {
    fn of(t: Timestamp) -> Self {
        let days = t.0.div_euclid(DAY_MS);
        let in_day = t.0.rem_euclid(DAY_MS);
        let (year, month, day) = civil_from_days(days);
        Self {
            year,
            month,
            day,
            hour: in_day / 3_600_000,
            minute: in_day / 60_000 % 60,
            second: in_day / 1000 % 60,
            milli: in_day % 1000,
        }
    }
}

/// Days from 1970-01-01 to the given date of the proleptic Gregorian calendar.
///
/// Counts in 400-year eras (146 097 days each) of years starting on 1 March, so that the
/// leap day falls at the end of a year.
const fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    // 719 468 days lie between 0000-03-01 and 1970-01-01.
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days in `month` of `year`.
fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Reads exactly `n` ASCII digits from the front of `s`.
fn digits(s: &mut &[u8], n: usize) -> Option<i64> {
    let (head, rest) = s.split_at_checked(n)?;
    let mut value = 0i64;
    for &b in head {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value * 10 + i64::from(b - b'0');
    }
    *s = rest;
    Some(value)
}

/// True if the next octet of `s` is an ASCII digit.
fn digit_next(s: &[u8]) -> bool {
    s.first().is_some_and(u8::is_ascii_digit)
}

fn parse(mut s: &[u8]) -> Option<Timestamp> {
    let year = digits(&mut s, 4)?;
    let month = digits(&mut s, 2)?;
    let day = digits(&mut s, 2)?;
    let hour = digits(&mut s, 2)?;
    let (mut minute, mut second, mut milli) = (0, 0, 0);
    if digit_next(s) {
        minute = digits(&mut s, 2)?;
        if digit_next(s) {
            second = digits(&mut s, 2)?;
            if let Some(rest) = s.strip_prefix(b".") {
                s = rest;
                let count = s.iter().take(3).take_while(|b| b.is_ascii_digit()).count();
                if count == 0 {
                    return None;
                }
                milli = digits(&mut s, count)?;
            }
        }
    }
    let offset_minutes = match s {
        [] | [b'Z'] => 0,
        [sign @ (b'+' | b'-'), rest @ ..] => {
            let mut rest = rest;
            let hh = digits(&mut rest, 2)?;
            let mm = digits(&mut rest, 2)?;
            if !rest.is_empty() || hh > 23 || mm > 59 {
                return None;
            }
            let minutes = hh * 60 + mm;
            if *sign == b'-' { -minutes } else { minutes }
        }
        _ => return None,
    };
    let valid = (1..=12).contains(&month)
        && (1..=days_in_month(year, month)).contains(&day)
        && hour <= 23
        && minute <= 59
        && second <= 59;
    if !valid {
        return None;
    }
    let seconds_in_day = hour * 3600 + minute * 60 + second - offset_minutes * 60;
    let ms = days_from_civil(year, month, day) * DAY_MS + seconds_in_day * 1000 + milli;
    Timestamp::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<Timestamp, DecodeError> {
        Timestamp::parse_generalized(s.as_bytes())
    }

    #[test]
    fn calendar_round_trips() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(0, 1, 1), -719_528);
        assert_eq!(civil_from_days(-719_528), (0, 1, 1));
        assert_eq!(civil_from_days(2_932_896), (9999, 12, 31));
        for days in (-719_528..2_932_897).step_by(97) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn encodes_like_albatross() {
        let t = parse_str("20250822130443Z").unwrap();
        assert_eq!(t.millis(), 1_755_867_883_000);
        assert_eq!(t.generalized(), "20250822130443Z");
        assert_eq!(t.rfc3339(), "2025-08-22T13:04:43Z");
        let t = Timestamp::from_millis(1_755_867_883_042).unwrap();
        assert_eq!(t.generalized(), "20250822130443.042Z");
        assert_eq!(t.rfc3339(), "2025-08-22T13:04:43.042Z");
        assert_eq!(Timestamp::EPOCH.generalized(), "19700101000000Z");
        assert_eq!(Timestamp::MIN.generalized(), "00000101000000Z");
        assert_eq!(Timestamp::MAX.generalized(), "99991231235959.999Z");
        assert_eq!(
            Timestamp::from_millis(-1).unwrap().rfc3339(),
            "1969-12-31T23:59:59.999Z"
        );
        assert_eq!(Timestamp::from_millis(Timestamp::MAX.millis() + 1), None);
    }

    #[test]
    fn parses_leniently() {
        let base = parse_str("20250822130000Z").unwrap().millis();
        assert_eq!(parse_str("2025082213").unwrap().millis(), base);
        assert_eq!(parse_str("2025082213Z").unwrap().millis(), base);
        assert_eq!(parse_str("202508221304").unwrap().millis(), base + 240_000);
        assert_eq!(parse_str("20250822130000.5Z").unwrap().millis(), base + 5);
        assert_eq!(parse_str("20250822130000.50Z").unwrap().millis(), base + 50);
        assert_eq!(
            parse_str("20250822130000.500").unwrap().millis(),
            base + 500
        );
        assert_eq!(parse_str("20250822150000+0200").unwrap().millis(), base);
        assert_eq!(parse_str("20250822123000-0030").unwrap().millis(), base);
        assert_eq!(
            parse_str("20240229000000Z").unwrap().rfc3339(),
            "2024-02-29T00:00:00Z"
        );
    }

    #[test]
    fn rejects_invalid_times() {
        for bad in [
            "",
            "202508221",
            "20250822130000.Z",
            "20250822130000.5000Z",
            "20250822130000ZZ",
            "20251322130000Z",
            "20250230130000Z",
            "20230229000000Z",
            "20250822240000Z",
            "20250822136000Z",
            "20250822130060Z",
            "20250822130000+2400",
            "20250822130000+01",
            "2025082213000",
            "00000101000000+0100",
            "99991231235959-0001",
            "2025-08-22T13:04:43Z",
        ] {
            assert_eq!(parse_str(bad), Err(DecodeError::BadTime), "{bad}");
        }
    }
}
