//! The table's partition path: `date=YYYY-MM-DD/hour=HH` (UTC).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Timelike, Utc};

use crate::error::{Result, SchemaError};

/// One hour partition of the flow table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionPath {
    date: NaiveDate,
    hour: u8,
}

impl PartitionPath {
    /// The partition for a date and hour; `None` if the hour is not 0–23.
    pub fn new(date: NaiveDate, hour: u8) -> Option<Self> {
        (hour < 24).then_some(PartitionPath { date, hour })
    }

    /// The partition that holds a record starting at `t`.
    pub fn for_timestamp(t: DateTime<Utc>) -> Self {
        PartitionPath {
            date: t.date_naive(),
            hour: t.hour() as u8,
        }
    }

    /// The partition for a timestamp in microseconds since the epoch.
    pub fn for_micros(micros: i64) -> Self {
        Self::for_timestamp(DateTime::from_timestamp_micros(micros).unwrap_or_default())
    }

    pub fn date(&self) -> NaiveDate {
        self.date
    }

    pub fn hour(&self) -> u8 {
        self.hour
    }

    /// Value of the `date` column: `YYYY-MM-DD`.
    pub fn date_value(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}",
            self.date.year(),
            self.date.month(),
            self.date.day()
        )
    }

    /// Value of the `hour` column: `HH`.
    pub fn hour_value(&self) -> String {
        format!("{:02}", self.hour)
    }

    /// First instant of the partition.
    pub fn start(&self) -> DateTime<Utc> {
        let naive = self
            .date
            .and_hms_opt(u32::from(self.hour), 0, 0)
            .expect("hour < 24 is a valid time");
        Utc.from_utc_datetime(&naive)
    }

    /// First instant after the partition.
    pub fn end(&self) -> DateTime<Utc> {
        self.start() + Duration::hours(1)
    }

    /// The next hour's partition.
    pub fn next(&self) -> Self {
        Self::for_timestamp(self.end())
    }

    /// Every partition that overlaps `[from, to)`, in order.
    pub fn covering(from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Self> {
        let mut out = Vec::new();
        if to <= from {
            return out;
        }
        let mut p = Self::for_timestamp(from);
        while p.start() < to {
            out.push(p);
            p = p.next();
        }
        out
    }
}

impl fmt::Display for PartitionPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "date={}/hour={}", self.date_value(), self.hour_value())
    }
}

impl FromStr for PartitionPath {
    type Err = SchemaError;

    fn from_str(s: &str) -> Result<Self> {
        let err = |reason| SchemaError::InvalidPartitionPath {
            path: s.to_string(),
            reason,
        };
        let (date, hour) = s
            .trim_end_matches('/')
            .split_once('/')
            .ok_or_else(|| err("expected date=YYYY-MM-DD/hour=HH"))?;
        let date = date
            .strip_prefix("date=")
            .ok_or_else(|| err("first segment must be date="))?;
        let hour = hour
            .strip_prefix("hour=")
            .ok_or_else(|| err("second segment must be hour="))?;
        if date.len() != 10 || hour.len() != 2 {
            return Err(err("date must be YYYY-MM-DD and hour HH"));
        }
        let date = NaiveDate::parse_from_str(date, "%Y-%m-%d").map_err(|_| err("invalid date"))?;
        let hour: u8 = hour.parse().map_err(|_| err("hour is not a number"))?;
        PartitionPath::new(date, hour).ok_or_else(|| err("hour must be 00-23"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_and_parse_round_trip() {
        let p = PartitionPath::new(NaiveDate::from_ymd_opt(2026, 3, 7).unwrap(), 5).unwrap();
        assert_eq!(p.to_string(), "date=2026-03-07/hour=05");
        assert_eq!(
            "date=2026-03-07/hour=05".parse::<PartitionPath>().unwrap(),
            p
        );
        assert_eq!(
            "date=2026-03-07/hour=05/".parse::<PartitionPath>().unwrap(),
            p
        );
        // Every hour of a leap day round-trips.
        let leap = NaiveDate::from_ymd_opt(2028, 2, 29).unwrap();
        for h in 0..24 {
            let p = PartitionPath::new(leap, h).unwrap();
            assert_eq!(p.to_string().parse::<PartitionPath>().unwrap(), p);
        }
    }

    #[test]
    fn rejects_malformed_paths() {
        for bad in [
            "",
            "date=2026-03-07",
            "hour=05/date=2026-03-07",
            "date=2026-3-7/hour=05",
            "date=2026-02-30/hour=05",
            "date=2026-03-07/hour=24",
            "date=2026-03-07/hour=5",
            "date=2026-03-07/hour=xx",
        ] {
            assert!(
                bad.parse::<PartitionPath>().is_err(),
                "{bad} must be refused"
            );
        }
    }

    #[test]
    fn for_timestamp_and_covering() {
        let t = Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 59).unwrap();
        let p = PartitionPath::for_timestamp(t);
        assert_eq!(p.to_string(), "date=2026-12-31/hour=23");
        assert_eq!(p.next().to_string(), "date=2027-01-01/hour=00");
        let from = Utc.with_ymd_and_hms(2026, 12, 31, 22, 30, 0).unwrap();
        let to = Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap();
        let covered: Vec<String> = PartitionPath::covering(from, to)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            covered,
            ["date=2026-12-31/hour=22", "date=2026-12-31/hour=23"]
        );
        assert!(PartitionPath::covering(to, from).is_empty());
    }
}
