//! One reviewed snapshot per fixture and target: any change to what users apply shows in review.

use crate::support::{render, TARGETS};

#[test]
fn every_target_for_every_fixture() {
    insta::glob!("../fixtures", "*.json", |path| {
        for target in TARGETS {
            let text = render(target, path, &[]);
            insta::assert_snapshot!(target, text);
        }
    });
}

#[test]
fn necessary_only_and_exact_domains_on_the_seed() {
    let seed = crate::support::fixture("seed.json");
    for target in ["squid", "pfsense", "iptables"] {
        let text = render(target, &seed, &["--necessary-only", "--exact-domains"]);
        insta::assert_snapshot!(format!("{target}_necessary_exact"), text);
    }
}

#[test]
fn pfsense_source_and_log_on_the_rich_list() {
    let rich = crate::support::fixture("rich.json");
    let text = render(
        "pfsense",
        &rich,
        &["--pfsense-source", "10.0.0.0/8", "--pfsense-log"],
    );
    insta::assert_snapshot!("pfsense_source_v4_log", text);
}

#[test]
fn ipset_address_sets_on_the_seed() {
    let seed = crate::support::fixture("seed.json");
    for target in ["ipset", "iptables", "ip6tables"] {
        let text = render(target, &seed, &["--ipset"]);
        insta::assert_snapshot!(format!("{target}_address_sets"), text);
    }
}
