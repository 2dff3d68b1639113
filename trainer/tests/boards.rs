//! The board registry (`firmware/boards/B/board.env`) is the one list of boards: every entry
//! has the keys its readers need and a Cargo feature, and Cargo has no feature for a board the
//! registry lacks.

use trainer::deploy::device::{boards, repo_root};

#[test]
fn every_board_has_its_keys_and_its_cargo_feature() {
    let all = boards().unwrap();
    assert!(all.len() >= 9, "{all:?}");
    let cargo = std::fs::read_to_string(repo_root().join("firmware/Cargo.toml")).unwrap();
    let features: Vec<&str> = cargo
        .lines()
        .filter_map(|l| l.strip_prefix("board-")?.split_once(" = ").map(|(n, _)| n))
        .collect();
    for b in &all {
        assert!(!b.description.is_empty(), "{}: no DESCRIPTION", b.name);
        assert!(
            b.emulated || b.probe_chip.is_some(),
            "{}: silicon without PROBE_CHIP",
            b.name
        );
        assert!(
            features.contains(&b.name.as_str()),
            "{}: no Cargo feature",
            b.name
        );
        let env = std::fs::read_to_string(
            repo_root().join(format!("firmware/boards/{}/board.env", b.name)),
        )
        .unwrap();
        for key in [
            "TARGET",
            "TARGET_CPU",
            "QEMU_MACHINE",
            "QEMU_CPU",
            "RAM_BUDGET_KIB",
            "FLASH_BUDGET_KIB",
            "BUDGET_NOTE",
            "CODE_RESERVE_KIB",
            "COUNTER",
            "SYSTICK_HZ",
            "GUARD",
        ] {
            assert!(
                env.lines().any(|l| l.starts_with(&format!("{key}="))),
                "{}: no {key}=",
                b.name
            );
        }
        assert!(
            repo_root()
                .join(format!("firmware/boards/{}/memory.x", b.name))
                .is_file(),
            "{}: no memory.x",
            b.name
        );
    }
    for f in &features {
        assert!(
            all.iter().any(|b| b.name == *f),
            "feature board-{f} has no board folder"
        );
    }
}

#[test]
fn an_unknown_board_is_an_error_that_lists_the_known_ones() {
    let e = trainer::deploy::device::board("pdp-11")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown board 'pdp-11'") && e.contains("mps2-an386"),
        "{e}"
    );
}
