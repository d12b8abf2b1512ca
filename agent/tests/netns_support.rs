//! The per-thread namespace helper really isolates: a link made inside is
//! not visible outside, and two namespaces do not see each other.

mod support;

use support::{in_new_netns, require_root, sh};

#[test]
fn a_link_made_inside_is_invisible_outside() {
    if !require_root() {
        return;
    }
    let name = format!("rmt{}x", std::process::id() % 100000);
    let inside = {
        let name = name.clone();
        in_new_netns(move || {
            sh(&format!("ip link add {name} type veth peer name {name}p"));
            sh("ip -o link show")
        })
    };
    assert!(inside.contains(&name), "{inside}");
    let outside = sh("ip -o link show");
    assert!(!outside.contains(&name), "{outside}");
}
