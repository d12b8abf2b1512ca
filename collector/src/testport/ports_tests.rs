use super::*;

#[test]
fn a_port_spec_is_ports_and_ranges_each_once() {
    assert_eq!(
        parse_spec("22,80,443,8080,9000-9003"),
        Ok(vec![22, 80, 443, 8080, 9000, 9001, 9002, 9003])
    );
    assert_eq!(parse_spec(" 80 , 80,79-80"), Ok(vec![80, 79]));
    assert!(parse_spec("80,x").expect_err("x").contains("\"x\""));
    assert!(parse_spec("0").expect_err("0").contains("1-65535"));
    assert!(
        parse_spec("90-80")
            .expect_err("empty")
            .contains("empty range")
    );
    assert!(parse_spec("1-2000").expect_err("many").contains("1024"));
    assert!(parse_spec("").is_err());
}

#[test]
fn a_request_s_ports_are_checked() {
    assert_eq!(check(&[80, 443]).expect("ok"), vec![80, 443]);
    assert!(
        check(&[80, 80])
            .expect_err("twice")
            .message()
            .contains("twice")
    );
    assert!(
        check(&[70_000])
            .expect_err("big")
            .message()
            .contains("70000")
    );
    let many: Vec<u32> = (1..=1025).collect();
    assert!(check(&many).expect_err("many").message().contains("1024"));
}

fn t(port: u32, open: bool, host_firewall: &str) -> pb::PortTest {
    pb::PortTest {
        port,
        open,
        outcome: if open {
            pb::ProbeOutcome::Open as i32
        } else {
            pb::ProbeOutcome::Timeout as i32
        },
        host_firewall: host_firewall.into(),
        ..Default::default()
    }
}

#[test]
fn some_passing_and_no_host_rule_is_a_filter_in_the_path() {
    let each = [
        t(22, false, ""),
        t(80, true, ""),
        t(443, true, ""),
        t(8080, false, ""),
    ];
    let (verdict, text) = summarise("a", "b", &each);
    assert_eq!(verdict, "path_filter");
    assert!(
        text.starts_with("only 80 and 443 pass from a to b"),
        "{text}"
    );
    assert!(
        text.contains("neither end's firewall blocks 22 and 8080"),
        "{text}"
    );
}

#[test]
fn nothing_passing_and_everything_passing_are_said() {
    let (verdict, text) = summarise("a", "b", &[t(22, false, ""), t(80, false, "")]);
    assert_eq!(verdict, "none_pass");
    assert!(text.contains("not one of 2 ports"), "{text}");
    assert!(text.contains("in the network between them"), "{text}");
    let (verdict, _) = summarise("a", "b", &[t(22, true, ""), t(80, true, "")]);
    assert_eq!(verdict, "all_pass");
}

#[test]
fn blocked_ports_a_host_rule_names_are_the_host_firewall() {
    let each = [t(22, false, "b's firewall: rule 4"), t(80, true, "")];
    let (verdict, text) = summarise("a", "b", &each);
    assert_eq!(verdict, "host_firewall");
    assert!(
        text.contains("22 blocked from a to b by a host firewall"),
        "{text}"
    );
    assert!(text.contains("80 pass"), "{text}");
}

#[test]
fn ports_that_could_not_be_tested_are_counted_apart() {
    let untested = pb::PortTest {
        port: 25,
        error: "in use".into(),
        ..Default::default()
    };
    let (verdict, text) = summarise("a", "b", &[untested.clone(), t(80, true, "")]);
    assert_eq!(verdict, "all_pass");
    assert!(text.contains("1 port(s) not tested"), "{text}");
    let (verdict, _) = summarise("a", "b", &[untested]);
    assert_eq!(verdict, "untested");
}
