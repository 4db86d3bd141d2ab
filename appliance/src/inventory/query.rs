//! Query parameters of the SMD list operations: every parameter is honoured or refused with a
//! 400 that names it, never silently ignored (an ignored filter returns everything, and a
//! script acting on "the nodes in group X" would act on all of them).
//!
//! Names match case-insensitively, as SMD's form decoding into Go structs does; values may be
//! repeated or comma-separated.

use std::collections::HashSet;

use super::enums;
use crate::http::Problem;
use crate::store::{Component, Group};

pub type Pairs = Vec<(String, String)>;

/// Refuses any parameter not in `allowed`, naming it and the ones this operation takes.
pub fn allow_only(q: &[(String, String)], op: &str, allowed: &[&str]) -> Result<(), Problem> {
    for (k, _) in q {
        if !allowed.iter().any(|a| a.eq_ignore_ascii_case(k)) {
            let known = if allowed.is_empty() {
                "none".to_owned()
            } else {
                allowed.join(", ")
            };
            return Err(Problem::bad_request(format!(
                "query parameter {k:?} is not supported by {op} (supported: {known})"
            )));
        }
    }
    Ok(())
}

/// Every value given for `key` (repeated or comma-separated), trimmed, empties dropped.
pub fn values<'a>(q: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    q.iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(key))
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect()
}

/// A single boolean parameter (`true`/`false`/`1`/`0`), refused if it is anything else.
pub fn boolean(q: &[(String, String)], key: &str) -> Result<Option<bool>, Problem> {
    let v = values(q, key);
    match v.as_slice() {
        [] => Ok(None),
        [one] => parse_bool(key, one).map(Some),
        _ => Err(Problem::bad_request(format!(
            "{key} takes one value, got {}",
            v.join(",")
        ))),
    }
}

fn parse_bool(key: &str, v: &str) -> Result<bool, Problem> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "t" => Ok(true),
        "false" | "0" | "f" => Ok(false),
        _ => Err(Problem::bad_request(format!(
            "{key}={v:?}: expected true or false"
        ))),
    }
}

fn int(key: &str, v: &str) -> Result<i64, Problem> {
    v.parse::<i64>()
        .map_err(|_| Problem::bad_request(format!("{key}={v:?}: expected an integer")))
}

/// Does `filter` (empty = anything) contain `value`, ignoring case?
pub fn matches(filter: &[String], value: Option<&str>) -> bool {
    filter.is_empty() || value.is_some_and(|v| filter.iter().any(|f| f.eq_ignore_ascii_case(v)))
}

/// The parameters of `GET /State/Components` and `GET /memberships` (SMD's ComponentFilter).
pub const COMPONENT_FILTERS: &[&str] = &[
    "id",
    "type",
    "state",
    "flag",
    "role",
    "subrole",
    "enabled",
    "softwarestatus",
    "subtype",
    "arch",
    "class",
    "nid",
    "nid_start",
    "nid_end",
    "partition",
    "group",
];
/// `GET /State/Components` also takes SMD's field filters.
pub const FIELD_FILTERS: &[&str] = &["stateonly", "flagonly", "roleonly", "nidonly"];

/// SMD's ComponentFilter, parsed and checked.
#[derive(Debug, Default, Clone)]
pub struct ComponentFilter {
    pub ids: Vec<String>,
    types: Vec<String>,
    states: Vec<String>,
    flags: Vec<String>,
    roles: Vec<String>,
    subroles: Vec<String>,
    enabled: Option<bool>,
    software_status: Vec<String>,
    subtypes: Vec<String>,
    arches: Vec<String>,
    classes: Vec<String>,
    nids: Vec<i64>,
    nid_start: Option<i64>,
    nid_end: Option<i64>,
    groups: Vec<String>,
    /// Which fields to return: stateonly, flagonly, roleonly, nidonly.
    only: Option<&'static str>,
}

impl ComponentFilter {
    /// Parses the query of `op`; `fields` says whether SMD's `*only` field filters are allowed.
    pub fn from_query(q: &[(String, String)], op: &str, fields: bool) -> Result<Self, Problem> {
        let mut allowed: Vec<&str> = COMPONENT_FILTERS.to_vec();
        if fields {
            allowed.extend_from_slice(FIELD_FILTERS);
        }
        allow_only(q, op, &allowed)?;
        // SMD reads a leading `!` as "not"; matching it literally would quietly return nothing.
        if let Some((k, v)) = q.iter().find(|(_, v)| v.trim_start().starts_with('!')) {
            return Err(Problem::bad_request(format!(
                "{k}={v}: negated filters (!value) are not supported; list the values wanted"
            )));
        }
        let list =
            |k: &str| -> Vec<String> { values(q, k).into_iter().map(str::to_owned).collect() };
        let mut f = ComponentFilter {
            ids: values(q, "id")
                .into_iter()
                .map(|x| enums::normalize_xname(x).map(|(id, _)| id))
                .collect::<Result<_, _>>()?,
            types: list("type"),
            states: norm_all(q, "state", "State", enums::STATES)?,
            flags: norm_all(q, "flag", "Flag", enums::FLAGS)?,
            roles: list("role"),
            subroles: list("subrole"),
            enabled: boolean(q, "enabled")?,
            software_status: list("softwarestatus"),
            subtypes: list("subtype"),
            arches: norm_all(q, "arch", "Arch", enums::ARCHES)?,
            classes: norm_all(q, "class", "Class", enums::CLASSES)?,
            nids: values(q, "nid")
                .into_iter()
                .map(|v| int("nid", v))
                .collect::<Result<_, _>>()?,
            nid_start: values(q, "nid_start")
                .first()
                .map(|v| int("nid_start", v))
                .transpose()?,
            nid_end: values(q, "nid_end")
                .first()
                .map(|v| int("nid_end", v))
                .transpose()?,
            groups: values(q, "group")
                .into_iter()
                .map(str::to_ascii_lowercase)
                .collect(),
            only: None,
        };
        if !values(q, "partition").is_empty() {
            return Err(Problem::bad_request(
                "partition: rackboot has no partitions (the rack is one partition); drop the filter",
            ));
        }
        for name in FIELD_FILTERS {
            if fields && boolean(q, name)?.unwrap_or(false) {
                if f.only.is_some() {
                    return Err(Problem::bad_request(
                        "give at most one of stateonly, flagonly, roleonly, nidonly",
                    ));
                }
                f.only = Some(name);
            }
        }
        Ok(f)
    }

    /// The same filter from a JSON query body (`/State/Components/Query`, `/ByNID/Query`).
    pub fn from_body(
        body: &serde_json::Map<String, serde_json::Value>,
        op: &str,
        skip: &[&str],
    ) -> Result<Self, Problem> {
        let mut pairs: Pairs = Vec::new();
        for (k, v) in body {
            if skip.iter().any(|s| s.eq_ignore_ascii_case(k)) {
                continue;
            }
            match v {
                serde_json::Value::Array(items) => {
                    for i in items {
                        pairs.push((k.clone(), scalar(k, i)?));
                    }
                }
                other => pairs.push((k.clone(), scalar(k, other)?)),
            }
        }
        Self::from_query(&pairs, op, true)
    }

    /// Keeps the components that pass, in ID order; `groups` resolves the `group` filter.
    pub fn apply(&self, comps: Vec<Component>, groups: &[Group]) -> Vec<Component> {
        let in_groups: Option<HashSet<&str>> = (!self.groups.is_empty()).then(|| {
            groups
                .iter()
                .filter(|g| self.groups.contains(&g.label.to_ascii_lowercase()))
                .flat_map(|g| g.members.ids.iter().map(String::as_str))
                .collect()
        });
        comps
            .into_iter()
            .filter(|c| {
                let extra = |k: &str| c.extra.get(k).and_then(|v| v.as_str());
                matches(&self.ids, Some(&c.id))
                    && matches(&self.types, c.kind.as_deref())
                    && matches(&self.states, c.state.as_deref())
                    && matches(&self.flags, c.flag.as_deref())
                    && matches(&self.roles, c.role.as_deref())
                    && matches(&self.subroles, c.sub_role.as_deref())
                    && matches(&self.software_status, extra("SoftwareStatus"))
                    && matches(&self.subtypes, extra("Subtype"))
                    && matches(&self.arches, c.arch.as_deref())
                    && matches(&self.classes, c.class.as_deref())
                    // SMD's default for a component without Enabled is true.
                    && self.enabled.is_none_or(|e| c.enabled.unwrap_or(true) == e)
                    && (self.nids.is_empty() || c.nid.is_some_and(|n| self.nids.contains(&n)))
                    && self.nid_start.is_none_or(|s| c.nid.is_some_and(|n| n >= s))
                    && self.nid_end.is_none_or(|e| c.nid.is_some_and(|n| n <= e))
                    && in_groups.as_ref().is_none_or(|m| m.contains(c.id.as_str()))
            })
            .map(|c| self.project(c))
            .collect()
    }

    /// SMD's field filters: ID and Type plus the named fields only.
    fn project(&self, c: Component) -> Component {
        let Some(only) = self.only else { return c };
        let mut out = Component {
            id: c.id,
            kind: c.kind,
            state: None,
            flag: None,
            enabled: None,
            role: None,
            sub_role: None,
            nid: None,
            arch: None,
            class: None,
            extra: serde_json::Map::new(),
        };
        match only {
            "stateonly" => {
                out.state = c.state;
                out.flag = c.flag;
            }
            "flagonly" => out.flag = c.flag,
            "roleonly" => {
                out.role = c.role;
                out.sub_role = c.sub_role;
            }
            _ => out.nid = c.nid,
        }
        out
    }
}

fn norm_all(
    q: &[(String, String)],
    key: &str,
    field: &str,
    table: &[&str],
) -> Result<Vec<String>, Problem> {
    values(q, key)
        .into_iter()
        .map(|v| enums::normalize(field, v, table))
        .collect()
}

fn scalar(k: &str, v: &serde_json::Value) -> Result<String, Problem> {
    match v {
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Bool(b) => Ok(b.to_string()),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        _ => Err(Problem::bad_request(format!(
            "{k}: expected a string, number or boolean"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &[(&str, &str)]) -> Pairs {
        s.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
    }

    #[test]
    fn unknown_and_bad_parameters_are_refused() {
        assert!(ComponentFilter::from_query(&q(&[("bogus", "1")]), "GET x", true).is_err());
        assert!(ComponentFilter::from_query(&q(&[("state", "Nope")]), "GET x", true).is_err());
        assert!(ComponentFilter::from_query(&q(&[("enabled", "maybe")]), "GET x", true).is_err());
        assert!(ComponentFilter::from_query(&q(&[("partition", "p1")]), "GET x", true).is_err());
        assert!(ComponentFilter::from_query(&q(&[("role", "!Compute")]), "GET x", true).is_err());
        assert!(ComponentFilter::from_query(&q(&[("stateonly", "true")]), "GET x", false).is_err());
        assert!(
            ComponentFilter::from_query(
                &q(&[("STATE", "ready"), ("nid_start", "3")]),
                "GET x",
                true
            )
            .is_ok()
        );
    }
}
