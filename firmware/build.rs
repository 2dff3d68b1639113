//! Build script: board memory layout, the embedded model and test inputs, and the budget check.
//!
//! - copies `boards/<board>/memory.x` to OUT_DIR (cortex-m-rt's `link.x` includes it);
//! - copies the model blob (`FIRMWARE_MODEL`, default `models/ref-cnn.bin`) and the test inputs
//!   (`FIRMWARE_INPUTS`, default `models/test-inputs.bin`) to OUT_DIR for `include_bytes!`;
//!   relative paths are taken from this crate's folder (`firmware/`);
//! - reads `arena_bytes` from the blob preamble and writes `OUT_DIR/config.rs`;
//! - fails the build when the model, arena and stack do not fit the board.
//!
//! The blob's CRC is deliberately not checked here: the device must detect a corrupted payload
//! at run time (`runtime::Model::from_bytes`), and a test shows that error path.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

/// Blob preamble, little endian: magic, u16 version, u16 reserved, u32 arena_bytes,
/// u32 payload_len, u32 CRC-32 of the payload; the postcard payload starts at byte 20.
const MAGIC: &[u8; 4] = b"TMCU";
const PREAMBLE_BYTES: usize = 20;

/// Test-inputs file: u32 count, u32 bytes per input, then count * len raw int8 values.
const INPUTS_HEADER_BYTES: usize = 8;

const KIB: u64 = 1024;

struct Board {
    name: &'static str,
    /// RAM the budget check allows (may be less than memory.x, see mps2-an386).
    ram_budget: u64,
    /// Flash the budget check allows.
    flash_budget: u64,
    why: &'static str,
    /// SysTick clock under QEMU (`-icount shift=0`: one instruction per ns), so instructions
    /// = ticks * 1e9 / hz; 0 for silicon, which counts core cycles (`counter`).
    systick_hz: u64,
    /// What counts: "systick" (instructions under QEMU), "dwt" (cycles, DWT CYCCNT) or
    /// "systick-cycles" (cycles on a core without CYCCNT: SysTick on the core clock).
    counter: &'static str,
    /// Flash for code, vector table and constants besides the model and the test inputs:
    /// Armv6-M code (no DSP instructions, no wide immediates) is about 90 KiB.
    code_reserve: u64,
    /// How a stack overflow is caught: the MPU (Armv7-M), the stack limit register MSPLIM
    /// (Armv8-M Mainline) or, on cores with neither (the micro:bit's Cortex-M0), a canary
    /// checked after every inference.
    guard: &'static str,
}

const BOARDS: &[(&str, Board)] = &[
    (
        "CARGO_FEATURE_BOARD_MPS2_AN386",
        Board {
            name: "mps2-an386",
            // QEMU gives 4 MiB of each; a board a model like this would ship on is far smaller.
            ram_budget: 256 * KIB,
            flash_budget: 1024 * KIB,
            why:
                "QEMU mps2-an386 has 4 MiB of each, but the budget is a realistic Cortex-M4F part \
                  (256 KiB RAM, 1 MiB flash; override with FIRMWARE_RAM_BUDGET / \
                  FIRMWARE_FLASH_BUDGET)",
            systick_hz: 25_000_000,
            counter: "systick",
            guard: "mpu",
            code_reserve: 64 * KIB,
        },
    ),
    (
        "CARGO_FEATURE_BOARD_STM32L4R5",
        Board {
            name: "stm32l4r5",
            ram_budget: 640 * KIB,
            flash_budget: 2048 * KIB,
            why: "STM32L4R5ZI (NUCLEO-L4R5ZI, MLPerf Tiny's Cortex-M4 board): 640 KiB SRAM, \
                  2 MiB flash",
            systick_hz: 0,
            counter: "dwt",
            guard: "mpu",
            code_reserve: 64 * KIB,
        },
    ),
    (
        "CARGO_FEATURE_BOARD_STM32F411",
        Board {
            name: "stm32f411",
            ram_budget: 128 * KIB,
            flash_budget: 512 * KIB,
            why: "STM32F411xE: 128 KiB SRAM, 512 KiB flash",
            systick_hz: 0,
            counter: "dwt",
            guard: "mpu",
            code_reserve: 64 * KIB,
        },
    ),
    (
        "CARGO_FEATURE_BOARD_STM32G071",
        Board {
            name: "stm32g071",
            ram_budget: 36 * KIB,
            flash_budget: 128 * KIB,
            why: "STM32G071RB (Nucleo-G071RB, Cortex-M0+): 36 KiB RAM, 128 KiB flash; \
                  untested on silicon",
            systick_hz: 0,
            counter: "systick-cycles",
            guard: "canary",
            code_reserve: 96 * KIB,
        },
    ),
    (
        "CARGO_FEATURE_BOARD_MICROBIT",
        Board {
            name: "microbit",
            ram_budget: 16 * KIB,
            flash_budget: 256 * KIB,
            why: "BBC micro:bit v1 (nRF51822, Cortex-M0): 16 KiB RAM, 256 KiB flash, as QEMU \
                  models it",
            systick_hz: 16_000_000,
            counter: "systick",
            guard: "canary",
            code_reserve: 96 * KIB,
        },
    ),
    (
        "CARGO_FEATURE_BOARD_MPS2_AN385",
        Board {
            name: "mps2-an385",
            ram_budget: 256 * KIB,
            flash_budget: 1024 * KIB,
            why: "QEMU mps2-an385 has 4 MiB of each; the budget is a realistic Cortex-M3 part \
                  (256 KiB RAM, 1 MiB flash; override with FIRMWARE_RAM_BUDGET / \
                  FIRMWARE_FLASH_BUDGET)",
            systick_hz: 25_000_000,
            counter: "systick",
            guard: "mpu",
            code_reserve: 64 * KIB,
        },
    ),
    (
        "CARGO_FEATURE_BOARD_MPS2_AN500",
        Board {
            name: "mps2-an500",
            ram_budget: 512 * KIB,
            flash_budget: 2048 * KIB,
            why: "QEMU mps2-an500 has 4 MiB of each; the budget is a realistic Cortex-M7 part \
                  (512 KiB RAM, 2 MiB flash; override with FIRMWARE_RAM_BUDGET / \
                  FIRMWARE_FLASH_BUDGET)",
            systick_hz: 25_000_000,
            counter: "systick",
            guard: "mpu",
            code_reserve: 64 * KIB,
        },
    ),
    (
        "CARGO_FEATURE_BOARD_MPS2_AN505",
        Board {
            name: "mps2-an505",
            ram_budget: 256 * KIB,
            flash_budget: 1024 * KIB,
            why: "QEMU mps2-an505 gives 4 MiB of code and 2 MiB of data SRAM; the budget is a \
                  realistic Cortex-M33 part (256 KiB RAM, 1 MiB flash; override with \
                  FIRMWARE_RAM_BUDGET / FIRMWARE_FLASH_BUDGET)",
            systick_hz: 20_000_000,
            counter: "systick",
            guard: "msplim",
            code_reserve: 64 * KIB,
        },
    ),
    (
        "CARGO_FEATURE_BOARD_MPS3_AN547",
        Board {
            name: "mps3-an547",
            ram_budget: 512 * KIB,
            flash_budget: 512 * KIB,
            why: "QEMU mps3-an547 (Cortex-M55): 512 KiB ITCM for code, 512 KiB DTCM for data",
            systick_hz: 32_000_000,
            counter: "systick",
            guard: "msplim",
            code_reserve: 64 * KIB,
        },
    ),
];

/// Stack the firmware keeps free for itself and the runtime's kernels (the STACK line reports
/// the measured peak, about 1.5 to 2 KiB for the built-in models; raise this with
/// FIRMWARE_STACK_RESERVE if that comes close). An overflow hits the stack guard.
const DEFAULT_STACK_RESERVE: u64 = 4 * KIB;
/// RAM for the firmware's own statics besides the arena and the model's table.
const STATICS_RESERVE: u64 = KIB;
/// The model's per-layer table, a static (`runtime::LayerInfo` is 160 B on a 32-bit core;
/// the rest of `Model` is under 200 B), per layer.
const TABLE_BYTES_PER_LAYER: u64 = 192;

fn main() {
    if let Err(msg) = run() {
        // A panic would bury the message under a backtrace hint; print it plainly and fail.
        eprintln!("\nerror: {msg}\n");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-changed=build.rs");

    // ---- board ----
    let selected: Vec<&Board> = BOARDS
        .iter()
        .filter(|(feature, _)| env::var_os(feature).is_some())
        .map(|(_, b)| b)
        .collect();
    let board = match selected.as_slice() {
        [b] => *b,
        [] => {
            return Err(
                "no board selected: enable one board-* feature (board-mps2-an386 is the \
                        default; scripts/build-firmware.sh --board picks one)"
                    .into(),
            )
        }
        _ => {
            return Err(
                "more than one board feature enabled; use --no-default-features \
                        --features board-stm32f411 for the STM32"
                    .into(),
            )
        }
    };
    println!("cargo::rustc-check-cfg=cfg(guard, values(\"mpu\", \"msplim\", \"canary\"))");
    println!(
        "cargo::rustc-check-cfg=cfg(counter, values(\"systick\", \"dwt\", \"systick-cycles\"))"
    );
    println!("cargo:rustc-cfg=guard=\"{}\"", board.guard);
    println!("cargo:rustc-cfg=counter=\"{}\"", board.counter);
    // The board's Rust target (boards/B/board.env) must be the one being compiled for: plain
    // cargo with another board's feature would build an image for the wrong core.
    let board_env = manifest_dir
        .join("boards")
        .join(board.name)
        .join("board.env");
    println!("cargo:rerun-if-changed={}", board_env.display());
    let want = fs::read_to_string(&board_env)
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("TARGET=").map(|v| v.trim().to_string()))
        })
        .unwrap_or_default();
    let target = env::var("TARGET").unwrap_or_default();
    if want != target {
        return Err(format!(
            "board {} is built for {want} (boards/{}/board.env), not {target}: use \
             scripts/build-firmware.sh --board {}",
            board.name, board.name, board.name
        ));
    }
    let memory_x = manifest_dir
        .join("boards")
        .join(board.name)
        .join("memory.x");
    println!("cargo:rerun-if-changed={}", memory_x.display());
    fs::copy(&memory_x, out_dir.join("memory.x"))
        .map_err(|e| format!("cannot copy {}: {e}", memory_x.display()))?;
    println!("cargo:rustc-link-search={}", out_dir.display());
    if env::var_os("CARGO_FEATURE_DEFMT").is_some() {
        println!("cargo:rustc-link-arg=-Tdefmt.x");
    }

    // ---- model ----
    let model_path = input_path(&manifest_dir, "FIRMWARE_MODEL", "models/ref-cnn.bin");
    let model = read_input(&model_path, "FIRMWARE_MODEL", "model blob")?;
    let header = parse_preamble(&model, &model_path)?;
    // Sizes the firmware's per-layer table to this model; 32 (the format's maximum) when the
    // payload cannot be read here, in which case the runtime reports the real error.
    let layers = layer_count(&model)
        .filter(|&n| (1..=32).contains(&n))
        .unwrap_or(32);
    fs::write(out_dir.join("model.bin"), &model).map_err(|e| e.to_string())?;

    // ---- test inputs ----
    let inputs_path = input_path(&manifest_dir, "FIRMWARE_INPUTS", "models/test-inputs.bin");
    let inputs = read_input(&inputs_path, "FIRMWARE_INPUTS", "test inputs")?;
    let (count, input_len) = parse_inputs(&inputs, &inputs_path)?;
    // Only the raw int8 bytes go into flash; the header becomes constants.
    fs::write(out_dir.join("inputs.bin"), &inputs[INPUTS_HEADER_BYTES..])
        .map_err(|e| e.to_string())?;

    // ---- budget ----
    let stack_reserve = env_u64("FIRMWARE_STACK_RESERVE")?.unwrap_or(DEFAULT_STACK_RESERVE);
    let ram_budget = env_u64("FIRMWARE_RAM_BUDGET")?.unwrap_or(board.ram_budget);
    let flash_budget = env_u64("FIRMWARE_FLASH_BUDGET")?.unwrap_or(board.flash_budget);
    let arena = u64::from(header.arena_bytes);
    let model_len = model.len() as u64;
    let inputs_len = (inputs.len() - INPUTS_HEADER_BYTES) as u64;

    let statics = STATICS_RESERVE + TABLE_BYTES_PER_LAYER * layers as u64;
    let ram_need = arena + stack_reserve + statics;
    if ram_need > ram_budget {
        return Err(format!(
            "firmware does not fit board {}: model ({model_len} B, in flash) + arena ({arena} B) \
             + stack reserve ({stack_reserve} B) + statics and model table ({statics} B): \
             {ram_need} B of RAM exceeds board RAM ({ram_budget} B).\n       {}.\n       \
             Model: {}",
            board.name,
            board.why,
            model_path.display()
        ));
    }
    // The model's table starts as a copy in flash too (its initial value is in .data).
    let code_reserve = board.code_reserve + TABLE_BYTES_PER_LAYER * layers as u64;
    let flash_need = model_len + inputs_len + code_reserve;
    if flash_need > flash_budget {
        return Err(format!(
            "firmware does not fit board {}: model ({model_len} B) + test inputs ({inputs_len} B) \
             + code reserve ({code_reserve} B) = {flash_need} B exceeds board flash \
             ({flash_budget} B); arena ({arena} B) + stack reserve ({stack_reserve} B) would fit \
             RAM.\n       {}.\n       Model: {}",
            board.name,
            board.why,
            model_path.display()
        ));
    }

    // The figures of the check, also when it passes: what a model leaves free on the board.
    println!(
        "cargo:warning=fits board {}: flash {flash_need} of {flash_budget} B (model \
         {model_len} + test inputs {inputs_len} + code reserve {code_reserve}), RAM {ram_need} \
         of {ram_budget} B (arena {arena} + stack reserve {stack_reserve} + statics and model \
         table {statics})",
        board.name
    );

    // ---- generated constants ----
    let mut cfg = String::new();
    let _ = writeln!(
        cfg,
        "// Generated by build.rs from {}",
        model_path.display()
    );
    let _ = writeln!(cfg, "/// Board this image was built for.");
    let _ = writeln!(cfg, "pub const BOARD: &str = {:?};", board.name);
    let _ = writeln!(
        cfg,
        "/// SysTick clock under QEMU, Hz (0: silicon, the DWT counts cycles)."
    );
    let _ = writeln!(cfg, "pub const SYSTICK_HZ: u64 = {};", board.systick_hz);
    let _ = writeln!(
        cfg,
        "/// Arena bytes the model needs (blob preamble, bytes 8..12)."
    );
    let _ = writeln!(
        cfg,
        "pub const ARENA_BYTES: usize = {};",
        header.arena_bytes
    );
    let _ = writeln!(cfg, "/// Blob format version (preamble bytes 4..6).");
    let _ = writeln!(
        cfg,
        "pub const MODEL_FORMAT_VERSION: u16 = {};",
        header.version
    );
    let _ = writeln!(cfg, "/// Size of the whole model blob in flash, bytes.");
    let _ = writeln!(cfg, "pub const MODEL_BYTES: usize = {model_len};");
    let _ = writeln!(
        cfg,
        "/// Layers of the model (capacity of the firmware's per-layer table)."
    );
    let _ = writeln!(cfg, "pub const LAYERS: usize = {layers};");
    let _ = writeln!(cfg, "/// Number of embedded test inputs.");
    let _ = writeln!(cfg, "pub const INPUT_COUNT: usize = {count};");
    let _ = writeln!(cfg, "/// Bytes (int8 values) per embedded test input.");
    let _ = writeln!(cfg, "pub const INPUT_LEN: usize = {input_len};");
    let _ = writeln!(cfg, "/// Stack the budget check reserved, bytes.");
    let _ = writeln!(
        cfg,
        "pub const STACK_RESERVE_BYTES: usize = {stack_reserve};"
    );
    fs::write(out_dir.join("config.rs"), cfg).map_err(|e| e.to_string())?;
    Ok(())
}

struct Preamble {
    version: u16,
    arena_bytes: u32,
}

fn input_path(manifest_dir: &Path, var: &str, default: &str) -> PathBuf {
    println!("cargo:rerun-if-env-changed={var}");
    let p = env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    let p = if p.is_absolute() {
        p
    } else {
        manifest_dir.join(p)
    };
    println!("cargo:rerun-if-changed={}", p.display());
    p
}

fn read_input(path: &Path, var: &str, what: &str) -> Result<Vec<u8>, String> {
    fs::read(path).map_err(|e| {
        format!(
            "cannot read the {what} {}: {e}.\n       Set {var} to the file (relative paths are \
             taken from firmware/), or produce it with the trainer's export.",
            path.display()
        )
    })
}

fn parse_preamble(blob: &[u8], path: &Path) -> Result<Preamble, String> {
    if blob.len() < PREAMBLE_BYTES || &blob[0..4] != MAGIC {
        let got = &blob[..blob.len().min(4)];
        return Err(format!(
            "{} is not a model blob: expected magic {:?} and at least {PREAMBLE_BYTES} bytes, \
             found {:?} in a {}-byte file",
            path.display(),
            String::from_utf8_lossy(MAGIC),
            String::from_utf8_lossy(got),
            blob.len()
        ));
    }
    let u32_at = |i: usize| u32::from_le_bytes(blob[i..i + 4].try_into().unwrap());
    let version = u16::from_le_bytes([blob[4], blob[5]]);
    let arena_bytes = u32_at(8);
    let payload_len = u32_at(12) as usize;
    if PREAMBLE_BYTES + payload_len != blob.len() {
        // Not fatal on purpose: the device's own validation reports this (see the module doc).
        println!(
            "cargo:warning=model blob {}: preamble says {payload_len} payload bytes, file has {}; \
             the device will reject it",
            path.display(),
            blob.len() - PREAMBLE_BYTES
        );
    }
    Ok(Preamble {
        version,
        arena_bytes,
    })
}

fn parse_inputs(data: &[u8], path: &Path) -> Result<(usize, usize), String> {
    if data.len() < INPUTS_HEADER_BYTES {
        return Err(format!(
            "{}: test-inputs file shorter than its 8-byte header (u32 count, u32 bytes per input)",
            path.display()
        ));
    }
    let count = u32::from_le_bytes(data[0..4].try_into().unwrap()) as usize;
    let len = u32::from_le_bytes(data[4..8].try_into().unwrap()) as usize;
    let want = count
        .checked_mul(len)
        .and_then(|n| n.checked_add(INPUTS_HEADER_BYTES))
        .ok_or_else(|| format!("{}: count {count} x len {len} overflows", path.display()))?;
    if want != data.len() {
        return Err(format!(
            "{}: header says {count} inputs of {len} bytes ({want} bytes with the header), file \
             has {} bytes",
            path.display(),
            data.len()
        ));
    }
    if count == 0 {
        println!("cargo:warning=test inputs {}: zero inputs", path.display());
    }
    Ok((count, len))
}

fn env_u64(var: &str) -> Result<Option<u64>, String> {
    println!("cargo:rerun-if-env-changed={var}");
    match env::var(var) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("{var}={v:?} is not a byte count")),
        _ => Ok(None),
    }
}

/// The payload's layer count, read the way postcard wrote it: name (varint length + bytes),
/// input and output specs (three varint u16, an f32, a zigzag varint i32 each), the rounding
/// (a varint enum index), then the layer list's varint length. `None` if the bytes do not
/// parse.
fn layer_count(blob: &[u8]) -> Option<u64> {
    fn varint(b: &[u8], at: &mut usize) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *b.get(*at)?;
            *at += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut at = 20; // after the preamble
    let name_len = varint(blob, &mut at)?;
    at = at.checked_add(usize::try_from(name_len).ok()?)?;
    for _ in 0..2 {
        for _ in 0..3 {
            varint(blob, &mut at)?;
        }
        at += 4; // f32 scale
        varint(blob, &mut at)?;
    }
    varint(blob, &mut at)?; // rounding
    varint(blob, &mut at)
}
