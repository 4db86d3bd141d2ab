//! Single byte-range requests (RFC 9110 §14.1.2, §14.2).

/// What to send for a `Range` header against a representation of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeReq {
    /// No (usable) Range: send everything with 200.
    Full,
    /// Send bytes `start..=end` with 206.
    Partial { start: u64, end: u64 },
    /// 416 with `Content-Range: bytes */size`.
    Unsatisfiable,
}

/// Parses `header`. Syntactically invalid ranges and multi-range requests are ignored (a server
/// MAY ignore Range, §14.2; firmware only ever asks for one range), which means 200 + all.
pub(crate) fn parse(header: Option<&[u8]>, size: u64) -> RangeReq {
    let Some(spec) = header
        .and_then(|h| std::str::from_utf8(h).ok())
        .and_then(|h| h.trim().strip_prefix("bytes="))
    else {
        return RangeReq::Full;
    };
    let spec = spec.trim();
    if spec.contains(',') {
        return RangeReq::Full;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return RangeReq::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // Suffix range: the last N bytes.
        let Some(n) = digits(last) else {
            return RangeReq::Full;
        };
        if n == 0 || size == 0 {
            return RangeReq::Unsatisfiable;
        }
        return RangeReq::Partial {
            start: size.saturating_sub(n),
            end: size - 1,
        };
    }
    let Some(start) = digits(first) else {
        return RangeReq::Full;
    };
    let end = if last.is_empty() {
        None
    } else {
        match digits(last) {
            Some(e) if e >= start => Some(e),
            _ => return RangeReq::Full,
        }
    };
    if start >= size {
        return RangeReq::Unsatisfiable;
    }
    let end = end.map_or(size - 1, |e| e.min(size - 1));
    RangeReq::Partial { start, end }
}

/// 1*DIGIT, no sign, no overflow.
fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::RangeReq::*;
    use super::*;

    fn p(h: &str, size: u64) -> RangeReq {
        parse(Some(h.as_bytes()), size)
    }

    #[test]
    fn ranges() {
        assert_eq!(parse(None, 10), Full);
        assert_eq!(p("bytes=0-99", 1000), Partial { start: 0, end: 99 });
        assert_eq!(p("bytes=0-99", 50), Partial { start: 0, end: 49 });
        assert_eq!(p("bytes=10-", 50), Partial { start: 10, end: 49 });
        assert_eq!(p("bytes=-10", 50), Partial { start: 40, end: 49 });
        assert_eq!(p("bytes=-100", 50), Partial { start: 0, end: 49 });
        assert_eq!(p("bytes=50-", 50), Unsatisfiable);
        assert_eq!(p("bytes=60-70", 50), Unsatisfiable);
        assert_eq!(p("bytes=-0", 50), Unsatisfiable);
        assert_eq!(p("bytes=0-", 0), Unsatisfiable);
        assert_eq!(p("bytes=5-1", 50), Full);
        assert_eq!(p("bytes=0-1,5-6", 50), Full);
        assert_eq!(p("items=0-1", 50), Full);
        assert_eq!(p("bytes=+1-2", 50), Full);
        assert_eq!(p("bytes=99999999999999999999999-", 50), Full);
        assert_eq!(p("bytes=-", 50), Full);
    }
}
