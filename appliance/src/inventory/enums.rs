//! SMD's enumerated Component fields and how SMD checks them.
//!
//! SMD (hms-base `VerifyNormalize*`) matches State, Flag, Role, SubRole, NetType, Arch and Class
//! case-insensitively and stores the canonical spelling; anything else is refused with 400. A
//! missing State is refused too, a missing Flag becomes `OK`, and `Type` is always derived from
//! the xname. Roles are the one place rackboot is looser: SMD lets a site add roles in its config
//! file, rackboot has no such file, so an unknown role of plain characters is kept as given.

use super::xname;
use crate::http::Problem;
use crate::store::Component;

pub const STATES: &[&str] = &[
    "Unknown",
    "Empty",
    "Populated",
    "Off",
    "On",
    "Standby",
    "Halt",
    "Ready",
];
pub const FLAGS: &[&str] = &["Unknown", "OK", "Warning", "Alert", "Locked"];
pub const ROLES: &[&str] = &[
    "Compute",
    "Service",
    "System",
    "Application",
    "Storage",
    "Management",
];
pub const SUB_ROLES: &[&str] = &["Master", "Worker", "Storage"];
pub const NET_TYPES: &[&str] = &["Sling", "Infiniband", "Ethernet", "OEM", "None"];
/// SMD accepts `UNKNOWN` in upper case next to the spec's X86, ARM and Other.
pub const ARCHES: &[&str] = &["X86", "ARM", "Other", "UNKNOWN"];
pub const CLASSES: &[&str] = &["River", "Mountain", "Hill"];

/// The canonical spelling of `value` in `table` (case-insensitive), or a 400 naming the field.
pub fn normalize(field: &str, value: &str, table: &[&str]) -> Result<String, Problem> {
    // hms-base also takes "warn" for Warning.
    if field == "Flag" && value.eq_ignore_ascii_case("warn") {
        return Ok("Warning".into());
    }
    table
        .iter()
        .find(|v| v.eq_ignore_ascii_case(value))
        .map(|v| (*v).to_owned())
        .ok_or_else(|| {
            Problem::bad_request(format!(
                "{field} {value:?} is not one of {}",
                table.join(", ")
            ))
        })
}

/// A known role in its canonical spelling, or an unknown one kept as given if it is a plain word.
pub fn normalize_role(field: &str, value: &str, table: &[&str]) -> Result<String, Problem> {
    if let Ok(v) = normalize(field, value, table) {
        return Ok(v);
    }
    if !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        Ok(value.to_owned())
    } else {
        Err(Problem::bad_request(format!(
            "{field} {value:?} is invalid: use one of {} or a word of letters, digits, - _ .",
            table.join(", ")
        )))
    }
}

/// SMD's xname normalisation: lower case (SMD also drops leading zeros; rackboot refuses them).
pub fn normalize_xname(id: &str) -> Result<(String, xname::XnameKind), Problem> {
    let id = id.trim().to_ascii_lowercase();
    let kind = xname::parse(&id).map_err(Problem::bad_request)?;
    Ok((id, kind))
}

/// Any HMS xname, including the ones rackboot's parser does not model (`…e0` enclosures,
/// `…p0` processors, `…d0` memory): `x<digits>` then letter-and-digits groups, lower-cased.
pub fn loose_xname(id: &str) -> Result<String, Problem> {
    let id = id.trim().to_ascii_lowercase();
    let mut rest = id.strip_prefix('x').unwrap_or("");
    let mut ok = rest.starts_with(|c: char| c.is_ascii_digit());
    while ok && !rest.is_empty() {
        let letters = rest.len()
            - rest
                .trim_start_matches(|c: char| c.is_ascii_lowercase())
                .len();
        let after = rest.get(letters..).unwrap_or("");
        let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        ok = digits > 0 && (letters == 1 || rest.len() == id.len() - 1);
        rest = after.get(digits..).unwrap_or("");
    }
    if ok {
        Ok(id)
    } else {
        Err(Problem::bad_request(format!(
            "invalid xname {id:?}: expected one like x1000c0s0b0n0p0"
        )))
    }
}

/// Checks and normalises a Component as SMD's POST and PUT do.
pub fn verify_component(mut c: Component) -> Result<Component, Problem> {
    let (id, kind) = normalize_xname(&c.id)?;
    c.id = id;
    c.kind = Some(kind.as_smd().to_owned());
    let state = c.state.as_deref().unwrap_or("");
    if state.is_empty() {
        return Err(Problem::bad_request(format!(
            "{}: State is required (one of {})",
            c.id,
            STATES.join(", ")
        )));
    }
    c.state = Some(normalize("State", state, STATES)?);
    c.flag = Some(match c.flag.as_deref() {
        None | Some("") => "OK".to_owned(),
        Some(f) => normalize("Flag", f, FLAGS)?,
    });
    c.role = opt(c.role, |v| normalize_role("Role", v, ROLES))?;
    c.sub_role = opt(c.sub_role, |v| normalize_role("SubRole", v, SUB_ROLES))?;
    c.arch = opt(c.arch, |v| normalize("Arch", v, ARCHES))?;
    c.class = opt(c.class, |v| normalize("Class", v, CLASSES))?;
    if let Some(n) = c.extra.get("NetType").and_then(|v| v.as_str())
        && !n.is_empty()
    {
        let n = normalize("NetType", n, NET_TYPES)?;
        c.extra.insert("NetType".into(), n.into());
    }
    if c.nid.is_some_and(|n| n < 0) {
        return Err(Problem::bad_request(format!(
            "{}: NID must not be negative",
            c.id
        )));
    }
    Ok(c)
}

/// Empty strings count as absent, as in SMD.
fn opt(
    v: Option<String>,
    f: impl Fn(&str) -> Result<String, Problem>,
) -> Result<Option<String>, Problem> {
    match v.as_deref() {
        None | Some("") => Ok(None),
        Some(s) => f(s).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comp(v: serde_json::Value) -> Component {
        serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn case_is_normalised_and_bad_values_refused() {
        let c = verify_component(comp(serde_json::json!({
            "ID": "X1000C0S0B0N0", "State": "ready", "Flag": "warn", "Arch": "x86",
            "Role": "compute", "Class": "river", "NetType": "sling"
        })))
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(c.id, "x1000c0s0b0n0");
        assert_eq!(c.kind.as_deref(), Some("Node"));
        assert_eq!(c.state.as_deref(), Some("Ready"));
        assert_eq!(c.flag.as_deref(), Some("Warning"));
        assert_eq!(c.arch.as_deref(), Some("X86"));
        assert_eq!(c.role.as_deref(), Some("Compute"));
        assert_eq!(c.class.as_deref(), Some("River"));
        assert_eq!(c.extra["NetType"], "Sling");
        for bad in [
            serde_json::json!({"ID": "x1000c0s0b0n0", "State": "Bogus"}),
            serde_json::json!({"ID": "x1000c0s0b0n0"}),
            serde_json::json!({"ID": "x1000c0s0b0n0", "State": "On", "Flag": "Meh"}),
            serde_json::json!({"ID": "x1000c0s0b0n0", "State": "On", "Arch": "sparc"}),
            serde_json::json!({"ID": "x1000c0s0b0n0", "State": "On", "Class": "Valley"}),
            serde_json::json!({"ID": "x1000c0s0b0n0", "State": "On", "Role": "a b"}),
            serde_json::json!({"ID": "nonsense", "State": "On"}),
        ] {
            assert!(verify_component(comp(bad.clone())).is_err(), "{bad}");
        }
        let c = verify_component(comp(
            serde_json::json!({"ID": "x1000c0s0b0n0", "State": "On", "Role": "Login"}),
        ))
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(c.flag.as_deref(), Some("OK"));
        assert_eq!(c.role.as_deref(), Some("Login"));
    }

    #[test]
    fn loose_xnames() {
        for ok in ["x1000c0s3e0", "X1000C0S3B0N0P1", "x0", "x1000c0s3b0n0d12"] {
            assert!(loose_xname(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "x",
            "xc0",
            "x1000c",
            "x1000c0s3e",
            "y1000",
            "x10-0",
            "x1000cc0",
        ] {
            assert!(loose_xname(bad).is_err(), "{bad}");
        }
    }
}
