//! Provenance a user can read: the README's lists of what is seen from QQ and what is
//! assumed are the catalogue's, and `qqmx replies` prints every kind of every generation
//! with its text, stage and provenance.

use std::path::Path;

use qqmx::provenance;
use qqmx::reply::Profile;
use qqmx::{Generation, ReplyKind};

const BEGIN: &str = "<!-- provenance: begin (generated from src/provenance.rs) -->\n";
const END: &str = "<!-- provenance: end -->";

/// The README's lists are rendered from the catalogue. After a change to the catalogue,
/// `QQMX_UPDATE_README=1 cargo test --test provenance` writes them into the README.
#[test]
fn the_readme_lists_are_the_catalogues() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&path).expect("README.md");
    let start = readme.find(BEGIN).expect("the README has the begin marker") + BEGIN.len();
    let end = start
        + readme[start..]
            .find(END)
            .expect("the README has the end marker");
    let lists = provenance::readme_lists();
    if std::env::var_os("QQMX_UPDATE_README").is_some() {
        let updated = format!("{}{lists}{}", &readme[..start], &readme[end..]);
        std::fs::write(&path, updated).expect("write README.md");
        return;
    }
    assert!(
        readme[start..end] == lists,
        "the README's provenance lists differ from the catalogue; run \
         `QQMX_UPDATE_README=1 cargo test --test provenance` and review the diff"
    );
}

#[test]
fn every_kind_of_every_generation_is_listed_with_its_provenance() {
    for generation in Generation::ALL {
        let entries = provenance::entries(generation);
        for &kind in ReplyKind::ALL {
            let entry = entries
                .iter()
                .find(|e| e.kind == kind && e.profile == Profile::Qq)
                .unwrap_or_else(|| panic!("{kind} missing in {generation}"));
            let json = serde_json::to_value(entry).expect("serialises");
            let source = &json["text_source"]["provenance"];
            assert!(source == "seen" || source == "assumed", "{json}");
            assert!(json["stage"]["stage"].is_string(), "{json}");
        }
    }
}

#[test]
fn qqs_refusals_with_a_capture_are_seen_and_inventions_are_assumed() {
    use Generation::*;
    use ReplyKind::*;
    let seen = |kind, generation| {
        provenance::text(kind, generation)
            .expect("provenance")
            .is_seen()
    };
    assert!(seen(SpfFailed, G2025) && seen(SpfFailedOther, G2025));
    assert!(seen(Greeting, G2017) && seen(IpFrequency, G2017));
    for (kind, generation) in [
        (ConnectionFrequency, G2017),
        (SenderFrequency, G2019),
        (DomainFrequency, G2019),
        (BounceAttack, G2017),
        (BounceAttack, G2019),
        (SpfFailed, G2017),
        (SpfFailed, G2019),
        (MailboxUnavailable, G2017),
        (Bye, G2017),
        (RsetOk, G2025),
        (NoopOk, G2019),
    ] {
        assert!(
            !seen(kind, generation),
            "{kind} {generation} is not from QQ"
        );
    }
    for kind in [
        SenderFrequency,
        DomainFrequency,
        RejectedByRecipients,
        SuspectedSpamSender,
        BounceAttack,
        ConnectionDenied,
        MessageTooLarge,
    ] {
        let stage = provenance::stage(kind).expect("stage");
        assert!(!stage.source.is_seen(), "{kind}: QQ's stage is unknown");
    }
}

#[cfg(feature = "cli")]
#[test]
fn qqmx_replies_prints_the_catalogue_as_json_and_text() {
    let qqmx = env!("CARGO_BIN_EXE_qqmx");
    let output = std::process::Command::new(qqmx)
        .args(["replies", "--generation", "2025", "--format", "json"])
        .output()
        .expect("qqmx replies runs");
    assert!(output.status.success());
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let entries = json.as_array().expect("an array");
    let spf = entries
        .iter()
        .find(|e| e["kind"] == "spf_failed_other" && e["profile"] == "qq")
        .expect("spf_failed_other");
    assert_eq!(
        spf["text"],
        "550 SPF check failed [{b64}  IP: {ip}]. https://service.mail.qq.com/detail/122/72."
    );
    assert_eq!(spf["generation"], "2025");
    assert_eq!(spf["stage"]["stage"], "end_of_data");
    assert_eq!(spf["text_source"]["provenance"], "seen");
    let qq_kinds = entries.iter().filter(|e| e["profile"] == "qq").count();
    assert_eq!(qq_kinds, ReplyKind::ALL.len());

    let output = std::process::Command::new(qqmx)
        .args(["replies"])
        .output()
        .expect("qqmx replies runs");
    let text = String::from_utf8(output.stdout).expect("UTF-8");
    assert!(
        text.contains(
            "2017 connection_frequency\n  | 550 Connection frequency limited. \
             http://service.mail.qq.com/cgi-bin/help?subtype=1&&id=20022&&no=1000722\n  \
             text: assumed: "
        ),
        "{text}"
    );
    assert!(text.contains("2025 greeting (exmail profile)\n"), "{text}");
}
