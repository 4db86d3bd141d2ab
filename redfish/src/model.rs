//! Tolerant access to Redfish resources: vendors omit fields, add OEM blocks and spell links
//! differently, so nothing here assumes a field exists or has the expected type.

use serde_json::Value;

/// A Redfish resource as received.
#[derive(Debug, Clone, PartialEq)]
pub struct Res(pub Value);

/// The `@odata.id` of a link object (`{"@odata.id": "/redfish/v1/…"}`), or a bare string link.
pub fn odata_id(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if s.starts_with('/') => Some(s.clone()),
        Value::Object(o) => o
            .get("@odata.id")
            .and_then(Value::as_str)
            .map(|s| s.trim_end_matches('/').to_owned())
            .filter(|s| !s.is_empty()),
        _ => None,
    }
}

impl Res {
    /// A string field (numbers are shown as text, since some BMCs send them that way).
    pub fn str(&self, key: &str) -> Option<String> {
        match self.0.get(key)? {
            Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// A string found by JSON pointer (`/Status/State`).
    pub fn at(&self, pointer: &str) -> Option<String> {
        self.0
            .pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    /// The link under `key` (`"Systems": {"@odata.id": …}`).
    pub fn link(&self, key: &str) -> Option<String> {
        odata_id(self.0.get(key)?)
    }

    /// The member links of a collection.
    pub fn members(&self) -> Vec<String> {
        self.0
            .get("Members")
            .and_then(Value::as_array)
            .map(|m| m.iter().filter_map(odata_id).collect())
            .unwrap_or_default()
    }

    /// The MAC of an EthernetInterface (`MACAddress`, else `PermanentMACAddress`), lowercase
    /// `aa:bb:cc:dd:ee:ff`, if it is a valid unicast MAC.
    pub fn mac(&self) -> Option<String> {
        ["MACAddress", "PermanentMACAddress"]
            .iter()
            .filter_map(|k| self.str(k))
            .find_map(|m| normalize_mac(&m))
    }

    /// The reset types the ComputerSystem advertises for `#ComputerSystem.Reset`.
    pub fn reset_types(&self) -> Vec<String> {
        self.0
            .pointer("/Actions/#ComputerSystem.Reset/ResetType@Redfish.AllowableValues")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The target of `#ComputerSystem.Reset`.
    pub fn reset_target(&self) -> Option<String> {
        self.at("/Actions/#ComputerSystem.Reset/target")
    }
}

/// A NIC MAC reported by a BMC in any layout (`AA-BB-…`, `aabb.ccdd.eeff`, `aa:bb:…`) as
/// `aa:bb:cc:dd:ee:ff`; `None` for garbage and for all-zero, broadcast or multicast addresses
/// (the rules are [`pxe_core::MacAddr::parse_nic`]'s).
pub fn normalize_mac(s: &str) -> Option<String> {
    pxe_core::MacAddr::parse_nic(s).ok().map(|m| m.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tolerant_accessors() {
        let r = Res(json!({
            "Members": [{"@odata.id": "/redfish/v1/Systems/1/"}, "/redfish/v1/Systems/2", 7, {"x": 1}],
            "MACAddress": "", "PermanentMACAddress": "AA-BB-CC-00-11-22",
            "SerialNumber": 12345,
            "Actions": {"#ComputerSystem.Reset": {"target": "/t", "ResetType@Redfish.AllowableValues": ["On", 3, "ForceOff"]}},
        }));
        assert_eq!(
            r.members(),
            vec!["/redfish/v1/Systems/1", "/redfish/v1/Systems/2"]
        );
        assert_eq!(r.mac().as_deref(), Some("aa:bb:cc:00:11:22"));
        assert_eq!(r.str("SerialNumber").as_deref(), Some("12345"));
        assert_eq!(r.reset_types(), vec!["On", "ForceOff"]);
        assert_eq!(r.reset_target().as_deref(), Some("/t"));
        assert_eq!(Res(json!([1, 2])).members(), Vec::<String>::new());
        assert_eq!(normalize_mac("zz:bb:cc:00:11:22"), None);
    }
}
