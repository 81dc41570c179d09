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

/// A template of the user's that loops over the members and reads every field the README
/// documents (and the `--dump-context` of the same list): the members reach templates lazily,
/// and must print as the per-member maps printed them.
#[test]
fn custom_templates_that_loop_over_members() {
    let dir = tempfile::tempdir().unwrap();
    let loop_over = "{% for g in groups %}\
# {{ g.slug }}: {{ g.members|length }} members, {{ g.members|selectattr(\"necessary\")|list|length }} necessary, first {{ g.members[0].value }}, last {{ g.members[-1].short }}\n\
# shorts {{ g.members|map(attribute=\"short\")|join(\",\") }}\n\
{% for m in g.members %}\
{{ loop.index }} {{ m.value }} {{ m.short }} {{ m.wildcard }} {{ m.necessary }} \"{{ m.note }}\" \"{{ m.note|comment(20) }}\"\n\
{% endfor %}\
{% for part in g.members|chunks(3) %}\
part {{ loop.index }}:{% for m in part %} {{ m.short }}{% endfor %}\n\
{% endfor %}\
{% for m in g.members %}{% for k, v in m|items %}{{ k }}={{ v }};{% endfor %}\n{% endfor %}\
{% endfor %}";
    for name in [
        "iptables.rules",
        "nftables.nft",
        "pfsense.xml",
        "squid.conf",
    ] {
        std::fs::write(dir.path().join(name), loop_over).unwrap();
    }
    let templates = dir.path().to_str().unwrap();
    for fixture in ["hostile_notes.json", "rich.json"] {
        let path = crate::support::fixture(fixture);
        for target in ["iptables", "nftables", "pfsense", "squid"] {
            let text = render(target, &path, &["--templates", templates]);
            insta::assert_snapshot!(format!("custom_members_{target}_{fixture}"), text);
        }
        let context = render("iptables", &path, &["--dump-context"]);
        insta::assert_snapshot!(format!("dump_context_{fixture}"), context);
    }
}
