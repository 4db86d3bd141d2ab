//! HPE/Cray xnames: `x1000` cabinet › `c0` chassis › `s0` slot › `b0` BMC › `n0` node.
//!
//! BSS once answered 201 to garbage xnames and stored nothing; we refuse them with a 400 that
//! says what a valid one looks like.

/// The component type an xname names (SMD's `Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XnameKind {
    Cabinet,
    Chassis,
    ComputeModule,
    NodeBmc,
    Node,
}

impl XnameKind {
    /// SMD's type string.
    pub fn as_smd(self) -> &'static str {
        match self {
            XnameKind::Cabinet => "Cabinet",
            XnameKind::Chassis => "Chassis",
            XnameKind::ComputeModule => "ComputeModule",
            XnameKind::NodeBmc => "NodeBMC",
            XnameKind::Node => "Node",
        }
    }
}

/// Parses and range-checks an xname; the error says how to fix it.
pub fn parse(s: &str) -> Result<XnameKind, String> {
    const LEVELS: [(char, u32, XnameKind); 5] = [
        ('x', 9999, XnameKind::Cabinet),
        ('c', 7, XnameKind::Chassis),
        ('s', 63, XnameKind::ComputeModule),
        ('b', 7, XnameKind::NodeBmc),
        ('n', 7, XnameKind::Node),
    ];
    let hint = "expected an xname like x1000c0s0b0n0 (cabinet x0-9999, chassis c0-7, slot s0-63, BMC b0-7, node n0-7)";
    let mut rest = s;
    let mut kind = None;
    for (prefix, max, k) in LEVELS {
        if rest.is_empty() {
            break;
        }
        let Some(tail) = rest.strip_prefix(prefix) else {
            return Err(format!("invalid xname {s:?}: {hint}"));
        };
        let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
        let (num, after) = tail.split_at(digits);
        if num.is_empty() || num.len() > 4 || (num.len() > 1 && num.starts_with('0')) {
            return Err(format!("invalid xname {s:?}: {hint}"));
        }
        match num.parse::<u32>() {
            Ok(n) if n <= max => {}
            _ => {
                return Err(format!(
                    "invalid xname {s:?}: {prefix}{num} is out of range; {hint}"
                ));
            }
        }
        kind = Some(k);
        rest = after;
    }
    match (kind, rest.is_empty()) {
        (Some(k), true) => Ok(k),
        _ => Err(format!("invalid xname {s:?}: {hint}")),
    }
}

/// Like [`parse`], but only node xnames are accepted (BSS `hosts`, node Components).
pub fn parse_node(s: &str) -> Result<(), String> {
    match parse(s)? {
        XnameKind::Node => Ok(()),
        other => Err(format!(
            "{s:?} is a {} xname, not a node (…b0n0)",
            other.as_smd()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_and_invalid() {
        assert_eq!(parse("x1000c0s0b0n0"), Ok(XnameKind::Node));
        assert_eq!(parse("x3000c7s63b1"), Ok(XnameKind::NodeBmc));
        assert_eq!(parse("x0"), Ok(XnameKind::Cabinet));
        for bad in [
            "",
            "x",
            "x1000c8",
            "y1000",
            "x1000c0s0b0n0z",
            "x01",
            "x1000c0n0",
            "x1000 c0",
            "x10000",
            "garbage",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse_node("x1000c0s0b0").is_err());
        assert!(parse_node("x1000c0s0b0n1").is_ok());
    }
}
