//! Reading the output of `reachmap nodes --format json`.

use serde_json::Value;

/// One node as reported by `reachmap nodes --format json`: the fields the
/// tests rely on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub name: String,
    pub addresses: Vec<String>,
    pub connected: bool,
}

impl NodeView {
    /// Whether the node reports this address (given without prefix length).
    pub fn has_address(&self, addr: &str) -> bool {
        self.addresses.iter().any(|a| a == addr)
    }
}

/// Parses every node of the JSON array. Errors describe what was malformed.
pub fn node_views(nodes: &Value) -> Result<Vec<NodeView>, String> {
    let array = nodes
        .as_array()
        .ok_or_else(|| format!("expected a JSON array of nodes, got: {nodes}"))?;
    array.iter().map(parse_one).collect()
}

/// The node called `name`, if the JSON array has it.
pub fn node_view(nodes: &Value, name: &str) -> Result<Option<NodeView>, String> {
    Ok(node_views(nodes)?.into_iter().find(|n| n.name == name))
}

fn parse_one(node: &Value) -> Result<NodeView, String> {
    let name = node
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("node without a string `name`: {node}"))?;
    let connected = node
        .get("connected")
        .and_then(Value::as_bool)
        .ok_or_else(|| format!("node {name} without a boolean `connected`: {node}"))?;
    let addresses = node
        .get("addresses")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("node {name} without an `addresses` array: {node}"))?
        .iter()
        .map(|a| {
            a.as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("node {name} has a non-string address: {a}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(NodeView {
        name: name.to_string(),
        addresses,
        connected,
    })
}

/// The rules of a firewall as JSON shows it (`{"tables": [{"chains":
/// [{"rules": [...]}]}]}`), counted over every table and chain.
pub fn firewall_rule_count(firewall: &Value) -> usize {
    firewall["tables"]
        .as_array()
        .map(|t| {
            t.iter()
                .flat_map(|t| t["chains"].as_array().cloned().unwrap_or_default())
                .map(|c| c["rules"].as_array().map_or(0, Vec::len))
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nodes() {
        let v = serde_json::json!([
            {"name": "node-0", "addresses": ["127.0.0.1", "198.18.0.11"], "connected": true, "x": 1},
            {"name": "node-1", "addresses": [], "connected": false}
        ]);
        let n0 = node_view(&v, "node-0").expect("valid").expect("present");
        assert!(n0.connected && n0.has_address("198.18.0.11"));
        assert_eq!(node_view(&v, "node-9").expect("valid"), None);
        assert_eq!(node_views(&v).expect("valid").len(), 2);
    }

    #[test]
    fn rejects_malformed() {
        assert!(node_views(&serde_json::json!({"name": "x"})).is_err());
        assert!(
            node_views(&serde_json::json!([{"name": "x", "connected": "yes", "addresses": []}]))
                .is_err()
        );
        assert!(node_views(&serde_json::json!([{"name": "x", "connected": true}])).is_err());
    }
}
