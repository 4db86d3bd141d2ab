//! Scope rules: `<area>:read`, `<area>:write`, and `admin`.

use std::collections::BTreeSet;

/// The API areas a scope can name.
pub const AREAS: &[&str] = &[
    "boot",
    "inventory",
    "images",
    "dhcp",
    "rackboot",
    "status",
    "cloud-init",
    "discovery",
    "power",
    "firmware",
    "identity",
    "appliance",
];

/// Whether `s` is a scope rackboot knows (minting refuses anything else, so typos fail early).
pub fn valid_scope(s: &str) -> bool {
    if s == "admin" {
        return true;
    }
    match s.split_once(':') {
        Some((area, "read" | "write")) => AREAS.contains(&area),
        _ => false,
    }
}

/// Whether `scopes` allow a request with `method` to `area`: reads (GET/HEAD) need
/// `<area>:read` or `<area>:write`, anything else `<area>:write`; `admin` allows all.
pub fn allows(scopes: &BTreeSet<String>, area: &str, method: &axum::http::Method) -> bool {
    if scopes.contains("admin") {
        return true;
    }
    let write = format!("{area}:write");
    if scopes.contains(&write) {
        return true;
    }
    let read_only = matches!(*method, axum::http::Method::GET | axum::http::Method::HEAD);
    read_only && scopes.contains(&format!("{area}:read"))
}

/// The scope a request with `method` to `area` needs, for the 403 detail.
pub fn needed(area: &str, method: &axum::http::Method) -> String {
    if matches!(*method, axum::http::Method::GET | axum::http::Method::HEAD) {
        format!("{area}:read")
    } else {
        format!("{area}:write")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn read_write_admin() {
        assert!(allows(&set(&["boot:read"]), "boot", &Method::GET));
        assert!(allows(&set(&["boot:read"]), "boot", &Method::HEAD));
        assert!(!allows(&set(&["boot:read"]), "boot", &Method::POST));
        assert!(allows(&set(&["boot:write"]), "boot", &Method::GET));
        assert!(allows(&set(&["boot:write"]), "boot", &Method::DELETE));
        assert!(!allows(&set(&["inventory:write"]), "boot", &Method::GET));
        assert!(allows(&set(&["admin"]), "images", &Method::PUT));
        assert!(!allows(&set(&[]), "boot", &Method::GET));
    }

    #[test]
    fn scope_names() {
        assert!(valid_scope("admin"));
        assert!(valid_scope("images:write"));
        assert!(!valid_scope("images:delete"));
        assert!(!valid_scope("smd.read"));
    }
}
