//! The engine's RFC 3339 timestamps (log lines, `FinishedAt`) as epoch milliseconds.

use crate::shell::runtime::wall_ms;

/// `2026-11-26T12:00:00.123456789Z rest` -> (ms, rest); lines without a stamp keep ours.
pub(super) fn split_timestamp(line: &[u8]) -> (i64, &[u8]) {
    let Some(space) = memchr::memchr(b' ', line) else {
        return (wall_ms(), line);
    };
    match parse_rfc3339_ms(&line[..space]) {
        Some(ms) => (ms, &line[space + 1..]),
        None => (wall_ms(), line),
    }
}

pub(super) fn parse_rfc3339_ms(stamp: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(stamp).ok()?;
    let (date, time) = s.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (h, mi, sec) = (t.next()??, t.next()??, t.next()??);
    let millis: i64 = format!("{:0<3}", &frac[..frac.len().min(3)]).parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + mi) * 60_000 + sec * 1000 + millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_timestamps() {
        let (ms, rest) = split_timestamp(b"2026-11-26T12:38:03.396123456Z hello world");
        assert_eq!((ms, rest), (1_795_696_683_396, &b"hello world"[..]));
        let (_, rest) = split_timestamp(b"no stamp here");
        assert_eq!(rest, b"no stamp here");
    }
}
