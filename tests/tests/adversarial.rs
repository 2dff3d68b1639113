//! Hostile but valid blobs through the device's own code: models from the runtime's
//! structure-aware generator (`runtime/tests/support/structured.rs`: every layer kind,
//! extreme and inconsistent fields, both roundings, shifts above 0) that load on the host run
//! in the firmware on the emulated Cortex-M4 (its DSP assembly) and the Cortex-M0 (the
//! micro:bit: no DSP, no unaligned loads), and every output byte must equal the host
//! runtime's. The host-side search (60,000 models a run, and the cargo-fuzz target) compares
//! the host kernels with the reference; this checks that the device's paths agree too.

#[path = "../../runtime/tests/support/structured.rs"]
#[allow(dead_code)]
mod structured;

use tests::*;

/// The first `n` generated blobs that load, fit the micro:bit (16 KiB of RAM: an arena of at
/// most 8 KiB) and run in a few million instructions, with one seeded input each.
fn hostile_blobs(n: usize) -> Vec<(Vec<u8>, Vec<i8>)> {
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let mut out = Vec::new();
    let mut kinds = std::collections::BTreeSet::new();
    for _ in 0..200_000 {
        if out.len() == n {
            break;
        }
        let bytes: Vec<u8> = (0..64 + next() % 1024).map(|_| next() as u8).collect();
        let mut u = arbitrary::Unstructured::new(&bytes);
        let Ok(blob) = structured::blob(&mut u) else {
            continue;
        };
        let (fits, names, input_len) = match runtime::Model::from_bytes(&blob) {
            Ok(m) => (
                m.arena_bytes() <= 8 << 10 && m.macs() <= 200_000 && blob.len() <= 24 << 10,
                m.layer_info()
                    .iter()
                    .map(|l| l.step.name())
                    .collect::<Vec<_>>(),
                m.input_len(),
            ),
            Err(_) => continue,
        };
        if !fits {
            continue;
        }
        // Prefer models that bring a layer kind not seen yet, then any.
        let before = kinds.len();
        kinds.extend(names.iter().copied());
        let new_kind = kinds.len() > before;
        if !new_kind && out.len() < n / 2 {
            continue;
        }
        let input: Vec<i8> = (0..input_len).map(|_| next() as i8).collect();
        out.push((blob, input));
    }
    assert_eq!(
        out.len(),
        n,
        "the generator gave too few small valid models"
    );
    eprintln!("layer kinds in the hostile models: {kinds:?}");
    assert!(kinds.len() >= 5, "too few layer kinds: {kinds:?}");
    out
}

#[test]
#[ignore = "long: a firmware build and run per model on two cores; CI runs it"]
fn hostile_valid_blobs_run_on_the_device_as_on_the_host() {
    let blobs = hostile_blobs(6);
    for board in ["mps2-an386", "microbit"] {
        for (k, (blob, input)) in blobs.iter().enumerate() {
            let dir = temp_dir(&format!("adversarial-{board}-{k}"));
            std::fs::write(dir.join("model.bin"), blob).unwrap();
            std::fs::write(
                dir.join("inputs.bin"),
                vector_file(input.len(), &as_u8(input)),
            )
            .unwrap();
            let host = host_outputs(blob, std::slice::from_ref(input)).unwrap();
            let elf =
                build_firmware_for(board, &dir.join("model.bin"), &dir.join("inputs.bin"), &dir)
                    .unwrap_or_else(|e| panic!("model {k} on {board}: {e:#}"));
            let run = run_qemu_on(board, &elf).unwrap();
            assert_eq!(run.status, 0, "model {k} on {board}: {}", run.stdout);
            assert_eq!(
                run.outputs, host,
                "model {k} on {board}: device differs from host"
            );
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

fn as_u8(v: &[i8]) -> Vec<u8> {
    v.iter().map(|&x| x as u8).collect()
}
