//! cloud-init (NoCloud over HTTP), compatible with OpenCHAMI's paths and shapes, persistent.
//!
//! Documents (all in the store, so they survive restarts and `kill -9`):
//! - **cluster defaults** (one): `cluster-name`, `public-keys`, `meta-data{}`, `file{}`;
//! - **groups** keyed by SMD group label: `{name, description, priority, meta-data{}, file{}}`;
//! - **nodes** keyed by xname: `{meta-data{}, public-keys[], file{}}`.
//!
//! `file` is `{content, encoding: plain|base64}` holding `#cloud-config` YAML. What a node gets
//! is merged on the server in one documented order, lowest first:
//!
//! 1. cluster defaults, 2. the node's groups by ascending `priority` (then name), 3. the node.
//!
//! Mappings merge key by key (recursively), lists are concatenated, anything else is replaced
//! by the later document. Each `file` is first rendered as a template (minijinja, strict: an
//! unknown variable is an error) with the node's variables `xname, nid, hostname, ip, mac,
//! groups, cluster_name`; templates are checked when written, so a bad one is refused with the
//! line at fault instead of failing a boot. A file that starts with `## template: jinja` is
//! cloud-init's own template: rackboot leaves it alone and serves it only through the
//! OpenCHAMI `#include` vendor-data (`/cloud-init/<xname>/<group>.yaml`).
//!
//! Owns: `cloud_init` table, `/cloud-init/*`, phone-home, `rackboot cloud-init`. May call:
//! `client`, `http`, `inventory`, `output`, `store`, `timeline`.

pub mod cli;
pub mod routes;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Encoding of a `file`'s content.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Plain,
    Base64,
}

/// A cloud-config document (possibly a template).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CiFile {
    pub content: String,
    #[serde(default)]
    pub encoding: Encoding,
}

/// `/cloud-init/admin/cluster-defaults`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterDefaults {
    #[serde(rename = "cluster-name", default)]
    pub cluster_name: String,
    #[serde(rename = "public-keys", default)]
    pub public_keys: Vec<String>,
    #[serde(rename = "meta-data", default)]
    pub meta_data: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<CiFile>,
    /// Other OpenCHAMI fields (region, short-name, …): kept and shown, not interpreted.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `/cloud-init/admin/groups/{name}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CiGroup {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Merge order among groups: lower first, so higher wins.
    #[serde(default)]
    pub priority: i64,
    #[serde(rename = "meta-data", default)]
    pub meta_data: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<CiFile>,
}

/// `/cloud-init/admin/instance-info/{xname}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeData {
    #[serde(rename = "meta-data", default)]
    pub meta_data: Map<String, Value>,
    #[serde(rename = "public-keys", default)]
    pub public_keys: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<CiFile>,
}

/// What the templates and meta-data know about a node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeVars {
    pub xname: String,
    pub nid: Option<i64>,
    pub hostname: String,
    pub ip: Option<String>,
    pub mac: Option<String>,
    pub groups: Vec<String>,
    pub cluster_name: String,
}

impl NodeVars {
    /// Variables for checking a template when it is written.
    pub fn sample() -> Self {
        NodeVars {
            xname: "x1000c0s0b0n0".into(),
            nid: Some(1),
            hostname: "nid0001".into(),
            ip: Some("192.0.2.10".into()),
            mac: Some("52:54:00:00:00:01".into()),
            groups: vec!["compute".into()],
            cluster_name: "cluster".into(),
        }
    }
}

/// Errors in a cloud-init document, with what to fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CiError {
    #[error("{what}: content is not valid base64: {why}")]
    Base64 { what: String, why: String },
    #[error("{what}: content is not UTF-8")]
    Utf8 { what: String },
    #[error("{what}: template error: {why}")]
    Template { what: String, why: String },
    #[error("{what}: not valid YAML after rendering: {why}")]
    Yaml { what: String, why: String },
    #[error("{what}: a cloud-config must be a YAML mapping (key: value), got {got}")]
    NotAMapping { what: String, got: String },
}

/// The content of `file`, decoded.
pub fn decode(file: &CiFile, what: &str) -> Result<String, CiError> {
    match file.encoding {
        Encoding::Plain => Ok(file.content.clone()),
        Encoding::Base64 => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(file.content.trim())
                .map_err(|e| CiError::Base64 {
                    what: what.into(),
                    why: e.to_string(),
                })?;
            String::from_utf8(bytes).map_err(|_| CiError::Utf8 { what: what.into() })
        }
    }
}

/// Whether the text is cloud-init's own Jinja template (left for cloud-init to render).
pub fn is_cloud_init_template(text: &str) -> bool {
    text.trim_start().starts_with("## template: jinja")
}

/// Renders `text` with `vars` (strict undefined, bounded work).
pub fn render_template(text: &str, vars: &NodeVars, what: &str) -> Result<String, CiError> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_fuel(Some(100_000));
    let err = |e: minijinja::Error| CiError::Template {
        what: what.into(),
        why: match e.line() {
            Some(l) => format!("line {l}: {}", e.detail().unwrap_or(&e.to_string())),
            None => e.to_string(),
        },
    };
    let tmpl = env.template_from_str(text).map_err(err)?;
    tmpl.render(minijinja::value::Serde(vars)).map_err(err)
}

/// Renders and parses one cloud-config fragment; `None` for cloud-init's own templates.
pub fn fragment(file: &CiFile, vars: &NodeVars, what: &str) -> Result<Option<Value>, CiError> {
    let text = decode(file, what)?;
    if is_cloud_init_template(&text) {
        return Ok(None);
    }
    let rendered = render_template(&text, vars, what)?;
    let v: Value = if rendered.trim().is_empty() {
        Value::Object(Map::new())
    } else {
        serde_norway::from_str(&rendered).map_err(|e| CiError::Yaml {
            what: what.into(),
            why: e.to_string(),
        })?
    };
    match v {
        Value::Object(_) => Ok(Some(v)),
        Value::Null => Ok(Some(Value::Object(Map::new()))),
        other => Err(CiError::NotAMapping {
            what: what.into(),
            got: kind(&other).into(),
        }),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Checks a document's template when it is written (with sample variables).
pub fn check(file: Option<&CiFile>, what: &str) -> Result<(), CiError> {
    if let Some(f) = file {
        fragment(f, &NodeVars::sample(), what)?;
    }
    Ok(())
}

/// Merges `over` into `base`: mappings key by key, lists concatenated, the rest replaced.
pub fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (Value::Array(b), Value::Array(o)) => b.extend(o),
        (slot, v) => *slot = v,
    }
}

/// Everything that goes into one node's documents.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub defaults: ClusterDefaults,
    /// The node's groups that have a cloud-init document, sorted by (priority, name).
    pub groups: Vec<CiGroup>,
    /// Every SMD group the node is in (for `groups` and vendor_data), sorted.
    pub group_labels: Vec<String>,
    pub node: NodeData,
}

impl Inputs {
    pub fn sort(&mut self) {
        self.groups
            .sort_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)));
        self.group_labels.sort();
    }
}

/// The node's meta-data (as JSON; served as YAML).
pub fn meta_data(inp: &Inputs, vars: &NodeVars) -> Value {
    let mut groups = Map::new();
    for label in &inp.group_labels {
        let meta = inp
            .groups
            .iter()
            .find(|g| &g.name == label)
            .map(|g| Value::Object(g.meta_data.clone()))
            .unwrap_or_else(|| json!({}));
        groups.insert(label.clone(), meta);
    }
    let keys: Vec<&String> = inp
        .defaults
        .public_keys
        .iter()
        .chain(&inp.node.public_keys)
        .collect();
    let mut md = json!({
        "instance-id": format!("i-{}", vars.xname),
        "local-hostname": vars.hostname,
        "hostname": vars.hostname,
        "cluster-name": vars.cluster_name,
        "instance_data": { "v1": {
            "local_ipv4": vars.ip,
            "public_keys": keys,
            "vendor_data": { "groups": groups },
        }},
    });
    merge(&mut md, Value::Object(inp.defaults.meta_data.clone()));
    for g in &inp.groups {
        merge(&mut md, Value::Object(g.meta_data.clone()));
    }
    merge(&mut md, Value::Object(inp.node.meta_data.clone()));
    md
}

/// The node's merged `#cloud-config` user-data.
pub fn user_data(inp: &Inputs, vars: &NodeVars) -> Result<String, CiError> {
    let mut merged = Value::Object(Map::new());
    let mut parts: Vec<(String, &CiFile)> = Vec::new();
    if let Some(f) = &inp.defaults.file {
        parts.push(("cluster defaults".into(), f));
    }
    for g in &inp.groups {
        if let Some(f) = &g.file {
            parts.push((format!("group {}", g.name), f));
        }
    }
    if let Some(f) = &inp.node.file {
        parts.push((format!("node {}", vars.xname), f));
    }
    for (what, f) in parts {
        if let Some(v) = fragment(f, vars, &what)? {
            merge(&mut merged, v);
        }
    }
    Ok(format!("#cloud-config\n{}", to_yaml(&merged)))
}

/// OpenCHAMI's vendor-data: an `#include` of each of the node's group files.
pub fn vendor_data(inp: &Inputs, base: &str, xname: &str) -> String {
    let lines: Vec<String> = inp
        .groups
        .iter()
        .filter(|g| {
            g.file
                .as_ref()
                .is_some_and(|f| !f.content.trim().is_empty())
        })
        .map(|g| format!("{base}/cloud-init/{xname}/{}.yaml", g.name))
        .collect();
    if lines.is_empty() {
        "#cloud-config\n{}\n".to_owned()
    } else {
        format!("#include\n{}\n", lines.join("\n"))
    }
}

/// YAML text of a JSON value (JSON if YAML encoding fails, which YAML parsers read too).
pub fn to_yaml(v: &Value) -> String {
    serde_norway::to_string(v).unwrap_or_else(|_| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(s: &str) -> Option<CiFile> {
        Some(CiFile {
            content: s.into(),
            encoding: Encoding::Plain,
        })
    }

    fn inputs() -> Inputs {
        let mut inp = Inputs {
            defaults: ClusterDefaults {
                cluster_name: "demo".into(),
                public_keys: vec!["ssh-ed25519 AAAA admin".into()],
                file: file(
                    "packages: [vim]\nwrite_files:\n  - path: /etc/motd\n    content: base\n",
                ),
                ..Default::default()
            },
            groups: vec![
                CiGroup {
                    name: "gpu".into(),
                    priority: 20,
                    meta_data: serde_json::from_value(json!({"role": "gpu"})).unwrap(),
                    file: file("packages: [cuda]\nruncmd: [\"echo gpu {{ xname }}\"]\n"),
                    ..Default::default()
                },
                CiGroup {
                    name: "compute".into(),
                    priority: 10,
                    meta_data: serde_json::from_value(json!({"role": "compute", "rack": 1}))
                        .unwrap(),
                    file: file("packages: [slurm]\nntp: {enabled: true}\n"),
                    ..Default::default()
                },
            ],
            group_labels: vec!["gpu".into(), "compute".into(), "empty".into()],
            node: NodeData {
                file: file("hostname: {{ hostname }}\nntp: {enabled: false}\n"),
                ..Default::default()
            },
        };
        inp.sort();
        inp
    }

    #[test]
    fn user_data_merges_defaults_groups_by_priority_then_node() {
        let inp = inputs();
        let ud = user_data(&inp, &NodeVars::sample()).unwrap();
        assert!(ud.starts_with("#cloud-config\n"), "{ud}");
        let v: Value = serde_norway::from_str(&ud).unwrap();
        // Lists concatenate in merge order: defaults, compute (10), gpu (20).
        assert_eq!(v["packages"], json!(["vim", "slurm", "cuda"]));
        // The node overrides a group's scalar.
        assert_eq!(v["ntp"]["enabled"], json!(false));
        assert_eq!(v["hostname"], json!("nid0001"));
        assert_eq!(v["runcmd"], json!(["echo gpu x1000c0s0b0n0"]));
    }

    #[test]
    fn meta_data_has_openchami_shape_and_merge_order() {
        let inp = inputs();
        let md = meta_data(&inp, &NodeVars::sample());
        assert_eq!(md["instance-id"], "i-x1000c0s0b0n0");
        assert_eq!(md["local-hostname"], "nid0001");
        assert_eq!(md["cluster-name"], "cluster");
        let v1 = &md["instance_data"]["v1"];
        assert_eq!(v1["local_ipv4"], "192.0.2.10");
        assert_eq!(v1["public_keys"], json!(["ssh-ed25519 AAAA admin"]));
        assert_eq!(v1["vendor_data"]["groups"]["compute"]["rack"], 1);
        assert_eq!(v1["vendor_data"]["groups"]["empty"], json!({}));
        // gpu (priority 20) wins over compute (10).
        assert_eq!(md["role"], "gpu");
    }

    #[test]
    fn bad_templates_are_refused_with_the_line() {
        let err = check(file("a: 1\nb: {{ nope }}\n").as_ref(), "group g").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("group g") && text.contains("line 2"),
            "{text}"
        );
        let err = check(file("a: {% if %}\n").as_ref(), "node x").unwrap_err();
        assert!(matches!(err, CiError::Template { .. }), "{err}");
        let err = check(file("- a\n- b\n").as_ref(), "n").unwrap_err();
        assert!(matches!(err, CiError::NotAMapping { .. }), "{err}");
        let err = check(file("a: [\n").as_ref(), "n").unwrap_err();
        assert!(matches!(err, CiError::Yaml { .. }), "{err}");
        let b64 = CiFile {
            content: "!!!".into(),
            encoding: Encoding::Base64,
        };
        assert!(matches!(
            check(Some(&b64), "n"),
            Err(CiError::Base64 { .. })
        ));
        // cloud-init's own templates pass through unchecked.
        assert!(
            check(
                file("## template: jinja\n#cloud-config\n{{ v1.x }}").as_ref(),
                "n"
            )
            .is_ok()
        );
        // Runaway templates run out of fuel.
        let err = check(
            file(
                "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            )
            .as_ref(),
            "n",
        )
        .unwrap_err();
        assert!(matches!(err, CiError::Template { .. }), "{err}");
    }

    #[test]
    fn vendor_data_includes_group_files() {
        let inp = inputs();
        let vd = vendor_data(&inp, "http://192.0.2.1", "x1000c0s0b0n0");
        assert_eq!(
            vd,
            "#include\nhttp://192.0.2.1/cloud-init/x1000c0s0b0n0/compute.yaml\nhttp://192.0.2.1/cloud-init/x1000c0s0b0n0/gpu.yaml\n"
        );
    }
}
