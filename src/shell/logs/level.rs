//! The level of a log line, read from its text as Iris reads it (`rigging.log_setup.
//! parse_log_level`: the one-letter prefix of its own format, `W20261207 12:00:00 ...`), and
//! also from Python's default logging format (`WARNING:root:...`), which Iris leaves UNKNOWN.
//! The log service filters and colours by it.

/// A line's level, as finelog's `LogLevel` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warning,
    Error,
    Critical,
}

fn named(name: &str) -> Option<Level> {
    Some(match name {
        "DEBUG" => Level::Debug,
        "INFO" => Level::Info,
        "WARNING" | "WARN" => Level::Warning,
        "ERROR" => Level::Error,
        "CRITICAL" | "FATAL" => Level::Critical,
        _ => return None,
    })
}

/// The level a line announces, if it announces one.
pub fn parse(line: &str) -> Option<Level> {
    let bytes = line.as_bytes();
    // Iris's (and glog's) prefix: a level letter, then the date's first digit.
    if bytes.len() >= 2 && bytes[1].is_ascii_digit() {
        let level = match bytes[0] {
            b'D' => Level::Debug,
            b'I' => Level::Info,
            b'W' => Level::Warning,
            b'E' => Level::Error,
            b'C' => Level::Critical,
            _ => return None,
        };
        return Some(level);
    }
    // Python's `logging.basicConfig` default: `LEVEL:logger:message`.
    let (name, rest) = line.split_once(':')?;
    named(name).filter(|_| rest.contains(':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_read_as_iris_and_python_write_them() {
        assert_eq!(
            parse("W20261207 12:00:00 140 iris.x careful"),
            Some(Level::Warning)
        );
        assert_eq!(
            parse("E20261207 12:00:00 140 iris.x broke"),
            Some(Level::Error)
        );
        assert_eq!(parse("I1207 12:00:00.1 glog too"), Some(Level::Info));
        assert_eq!(parse("WARNING:root:disk nearly full"), Some(Level::Warning));
        assert_eq!(parse("CRITICAL:app.db:gone"), Some(Level::Critical));
        assert_eq!(parse("Iris is fine"), None);
        assert_eq!(parse("X2026 not a level"), None);
        assert_eq!(parse("ERROR: no logger part"), None);
        assert_eq!(parse("hello"), None);
        assert_eq!(parse(""), None);
    }
}
