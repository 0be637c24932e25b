//! Small value syntaxes of the job file: durations (`500ms`, `30s`, `30m`) and rates (`20/s`).

use super::Rate;
use std::time::Duration;

/// Parses `250ms`, `30s`, `5m`, `2h`, `1d` (one whole number and a unit).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration like 500ms, 30s, 5m or 2h"))?;
    let d = match unit.trim() {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" | "min" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        "d" => Duration::from_secs(n * 86_400),
        _ => return Err(format!("'{s}' is not a duration like 500ms, 30s, 5m or 2h")),
    };
    Ok(d)
}

/// Parses a rate: `20/s`, `600/m` or `600/min`, `1000/h`.
pub fn parse_rate(s: &str) -> Result<Rate, String> {
    let bad = || format!("'{s}' is not a rate like 20/s, 600/m or 1000/h");
    let (count, per) = s.trim().split_once('/').ok_or_else(bad)?;
    let count: u32 = count.trim().parse().map_err(|_| bad())?;
    let per = match per.trim() {
        "s" | "sec" => Duration::from_secs(1),
        "m" | "min" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => return Err(bad()),
    };
    if count == 0 {
        return Err(format!("rate '{s}' must allow at least one request"));
    }
    Ok(Rate { count, per })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        for bad in ["", "30", "s", "1.5s", "-1s", "3 days"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rates() {
        assert_eq!(
            parse_rate("20/s").unwrap(),
            Rate {
                count: 20,
                per: Duration::from_secs(1)
            }
        );
        assert_eq!(parse_rate("600/min").unwrap().per, Duration::from_secs(60));
        for bad in ["20", "0/s", "x/s", "20/week", "20 per s"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }
}
