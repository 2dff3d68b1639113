//! Build script: board memory layout, the embedded model and test inputs, and the budget check.
//!
//! - copies `boards/<board>/memory.x` to OUT_DIR (cortex-m-rt's `link.x` includes it);
//! - copies the model blob (`FIRMWARE_MODEL`, default `models/ref-cnn.bin`) and the test inputs
//!   (`FIRMWARE_INPUTS`, default `models/test-inputs.bin`) to OUT_DIR for `include_bytes!`;
//!   relative paths are taken from this crate's folder (`firmware/`);
//! - reads the board from its registry entry `boards/<board>/board.env`, and the blob's arena
//!   size, layer count and test-vector header with the runtime itself (a build dependency:
//!   the format has one owner), and writes `OUT_DIR/config.rs`;
//! - fails the build when the model, arena and stack do not fit the board.
//!
//! A blob the runtime refuses still builds (with a warning): the device must detect a corrupted
//! payload at run time (`runtime::Model::from_bytes`), and a test shows that error path.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

const KIB: u64 = 1024;

/// A board, as its registry entry `boards/B/board.env` describes it.
struct Board {
    name: String,
    /// The Rust target the board's image is built for.
    target: String,
    /// RAM and flash the fit check allows (may be less than memory.x, see mps2-an386).
    ram_budget: u64,
    flash_budget: u64,
    /// Why those budgets (printed when a model does not fit).
    why: String,
    /// SysTick clock under QEMU (`-icount shift=0`: one instruction per ns), so instructions
    /// = ticks * 1e9 / hz; 0 for silicon, which counts core cycles (`counter`).
    systick_hz: u64,
    /// What counts: "systick", "dwt" or "systick-cycles".
    counter: String,
    /// Flash for code, vector table and constants besides the model and the test inputs.
    code_reserve: u64,
    /// How a stack overflow is caught: "mpu", "msplim" or "canary".
    guard: String,
}

impl Board {
    /// The board whose `board-B` Cargo feature is enabled, read from `boards/B/board.env`.
    fn selected(boards_dir: &Path) -> Result<Board, String> {
        let mut names: Vec<String> = fs::read_dir(boards_dir)
            .map_err(|e| format!("cannot list {}: {e}", boards_dir.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("board.env").is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        let feature =
            |n: &str| format!("CARGO_FEATURE_BOARD_{}", n.to_uppercase().replace('-', "_"));
        let on: Vec<&String> = names
            .iter()
            .filter(|n| env::var_os(feature(n)).is_some())
            .collect();
        let name = match on.as_slice() {
            [n] => (*n).clone(),
            [] => {
                return Err(format!(
                    "no board selected: enable one board-* feature (board-mps2-an386 is the \
                     default; scripts/build-firmware.sh --board picks one). Boards: {}",
                    names.join(", ")
                ))
            }
            _ => {
                return Err(
                    "more than one board feature enabled; use --no-default-features \
                     --features board-B (scripts/build-firmware.sh --board B does)"
                        .into(),
                )
            }
        };
        let path = boards_dir.join(&name).join("board.env");
        println!("cargo:rerun-if-changed={}", path.display());
        let text = fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let get = |key: &str| -> Result<String, String> {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(|v| v.trim().trim_matches('"').to_string())
                .ok_or_else(|| format!("{} has no {key}=", path.display()))
        };
        let num = |key: &str| -> Result<u64, String> {
            let v = get(key)?;
            v.parse()
                .map_err(|_| format!("{}: {key}={v:?} is not a number", path.display()))
        };
        Ok(Board {
            target: get("TARGET")?,
            ram_budget: num("RAM_BUDGET_KIB")? * KIB,
            flash_budget: num("FLASH_BUDGET_KIB")? * KIB,
            why: get("BUDGET_NOTE")?,
            systick_hz: num("SYSTICK_HZ")?,
            counter: get("COUNTER")?,
            code_reserve: num("CODE_RESERVE_KIB")? * KIB,
            guard: get("GUARD")?,
            name,
        })
    }
}

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
    let board = Board::selected(&manifest_dir.join("boards"))?;
    println!("cargo::rustc-check-cfg=cfg(guard, values(\"mpu\", \"msplim\", \"canary\"))");
    println!(
        "cargo::rustc-check-cfg=cfg(counter, values(\"systick\", \"dwt\", \"systick-cycles\"))"
    );
    println!("cargo:rustc-cfg=guard=\"{}\"", board.guard);
    println!("cargo:rustc-cfg=counter=\"{}\"", board.counter);
    // The board's Rust target must be the one being compiled for: plain cargo with another
    // board's feature would build an image for the wrong core.
    let target = env::var("TARGET").unwrap_or_default();
    if board.target != target {
        return Err(format!(
            "board {} is built for {} (boards/{}/board.env), not {target}: use \
             scripts/build-firmware.sh --board {}",
            board.name, board.target, board.name, board.name
        ));
    }
    let memory_x = manifest_dir
        .join("boards")
        .join(&board.name)
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
    let header = runtime::format::Preamble::parse_head(&model).map_err(|e| {
        format!(
            "{} is not a model blob the runtime reads: {e}",
            model_path.display()
        )
    })?;
    // Sizes the firmware's per-layer table to this model. A blob the runtime refuses (a bad
    // CRC, say) still builds, with the format's maximum: the device must report that error at
    // run time (`runtime::Model::from_bytes`), and a test shows it does.
    // Links only the kernels of this model's layer kinds (every kind for a refused blob, so
    // the device reports the blob's own error).
    let (layers, kinds, heads) = match runtime::Model::from_bytes(&model) {
        Ok(m) => {
            let def = runtime::decode_def(&model).map_err(|e| e.to_string())?;
            let heads = (m.box_decoder().is_some(), m.grid_decoder().is_some());
            (
                m.layer_info().len(),
                runtime::format::kinds::of(&def),
                heads,
            )
        }
        Err(e) => {
            println!(
                "cargo:warning=model blob {}: {e}; the device will refuse it",
                model_path.display()
            );
            (
                runtime::format::MAX_LAYERS,
                runtime::format::kinds::ALL,
                (true, true),
            )
        }
    };
    fs::write(out_dir.join("model.bin"), &model).map_err(|e| e.to_string())?;

    // ---- test inputs ----
    let inputs_path = input_path(&manifest_dir, "FIRMWARE_INPUTS", "models/test-inputs.bin");
    let inputs = read_input(&inputs_path, "FIRMWARE_INPUTS", "test inputs")?;
    let vectors = runtime::vectors::Vectors::parse(&inputs)
        .map_err(|e| format!("{}: test-vector file: {e}", inputs_path.display()))?;
    let (count, input_len) = (vectors.count, vectors.len);
    if count == 0 {
        println!(
            "cargo:warning=test inputs {}: zero inputs",
            inputs_path.display()
        );
    }
    // Only the raw int8 bytes go into flash; the header becomes constants.
    fs::write(out_dir.join("inputs.bin"), vectors.data).map_err(|e| e.to_string())?;

    // ---- budget ----
    let stack_reserve = env_u64("FIRMWARE_STACK_RESERVE")?.unwrap_or(DEFAULT_STACK_RESERVE);
    let ram_budget = env_u64("FIRMWARE_RAM_BUDGET")?.unwrap_or(board.ram_budget);
    let flash_budget = env_u64("FIRMWARE_FLASH_BUDGET")?.unwrap_or(board.flash_budget);
    let arena = u64::from(header.arena_bytes);
    let model_len = model.len() as u64;
    let inputs_len = vectors.data.len() as u64;

    let statics = STATICS_RESERVE + TABLE_BYTES_PER_LAYER * layers as u64;
    let ram_need = arena + stack_reserve + statics;
    if ram_need > ram_budget {
        return Err(format!(
            "firmware does not fit board {}: arena ({arena} B) + stack reserve \
             ({stack_reserve} B) + statics and model table ({statics} B) = {ram_need} B of RAM \
             exceeds board RAM ({ram_budget} B); the model itself ({model_len} B) stays in \
             flash.\n       {}.\n       Model: {}",
            board.name,
            &board.why,
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
            &board.why,
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
    let _ = writeln!(
        cfg,
        "/// The model's layer kinds (`runtime::format::kinds`): the kernels linked."
    );
    let _ = writeln!(cfg, "pub const KINDS: u32 = {kinds:#x};");
    let _ = writeln!(
        cfg,
        "/// The model's head decodes boxes / grid detections (the reporting code linked)."
    );
    let _ = writeln!(cfg, "pub const HEAD_BOX: bool = {};", heads.0);
    let _ = writeln!(cfg, "pub const HEAD_GRID: bool = {};", heads.1);
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
