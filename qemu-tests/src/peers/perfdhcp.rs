//! perfdhcp's report.

/// The numbers of one perfdhcp run (DORA, relay mode).
#[derive(Debug, Clone, Copy, Default)]
pub struct PerfdhcpStats {
    pub discovers: u64,
    pub offers: u64,
    pub requests: u64,
    pub acks: u64,
    pub non_unique: u64,
    /// perfdhcp's achieved rate (`Rate:` in its rate statistics): completed exchanges per
    /// second over the test period, not the offered `-r`.
    pub rate: Option<f64>,
}

impl PerfdhcpStats {
    /// Parses perfdhcp's final report.
    pub fn parse(text: &str) -> Option<PerfdhcpStats> {
        let section = |name: &str| {
            text.split(name)
                .nth(1)
                .unwrap_or("")
                .trim_start_matches('*')
                .split("***")
                .next()
                .unwrap_or("")
                .to_owned()
        };
        let get = |sec: &str, key: &str| -> Option<u64> {
            sec.lines()
                .find_map(|l| l.trim().strip_prefix(key))
                .and_then(|v| {
                    v.trim_start_matches(':')
                        .split_whitespace()
                        .next()?
                        .parse()
                        .ok()
                })
        };
        let d = section("DISCOVER-OFFER");
        let r = section("REQUEST-ACK");
        Some(PerfdhcpStats {
            discovers: get(&d, "sent packets")?,
            offers: get(&d, "received packets")?,
            requests: get(&r, "sent packets")?,
            acks: get(&r, "received packets")?,
            non_unique: get(&r, "non unique addresses").unwrap_or(0),
            rate: achieved_rate(text),
        })
    }

    /// Parses the report of a DISCOVER-OFFER only run (`-i`): no REQUEST-ACK section.
    pub fn parse_discover_only(text: &str) -> Option<PerfdhcpStats> {
        let d = text
            .split("Statistics for: DISCOVER-OFFER")
            .nth(1)?
            .trim_start_matches('*')
            .split("***")
            .next()?
            .to_owned();
        let get = |key: &str| -> Option<u64> {
            d.lines()
                .find_map(|l| l.trim().strip_prefix(key))
                .and_then(|v| {
                    v.trim_start_matches(':')
                        .split_whitespace()
                        .next()?
                        .parse()
                        .ok()
                })
        };
        Some(PerfdhcpStats {
            discovers: get("sent packets")?,
            offers: get("received packets")?,
            rate: achieved_rate(text),
            ..Default::default()
        })
    }

    /// Lost exchanges as a fraction of started ones.
    pub fn drop_ratio(&self) -> f64 {
        if self.discovers == 0 {
            return 1.0;
        }
        1.0 - self.acks as f64 / self.discovers as f64
    }
}

/// The number after `Rate:` in perfdhcp's rate statistics
/// (`Rate: 3998.1 4-way exchanges/second, expected rate: 4000`).
fn achieved_rate(text: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Rate:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_achieved_rate_is_read_not_the_offered_one() {
        let text =
            "***Rate statistics***\nRate: 3998.17 4-way exchanges/second, expected rate: 4000\n";
        assert_eq!(achieved_rate(text), Some(3998.17));
        assert_eq!(achieved_rate("no statistics"), None);
    }
}
