//! The emulated board from the host's side: build the firmware with a given model and inputs,
//! run it in QEMU, parse its output protocol (see firmware/README.md), and compute the host
//! runtime's answer for the same inputs. Used by `demo` and by the parity tests.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The firmware's build output path is shared, so build + copy happen under one lock.
static FIRMWARE_BUILD: Mutex<()> = Mutex::new(());

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repo root")
}

/// A board of the registry, `firmware/boards/B/board.env` (the file `build.rs` and the
/// scripts read too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Board {
    pub name: String,
    /// One line: the core and the board.
    pub description: String,
    /// QEMU emulates it here (its `QEMU_MACHINE` is set).
    pub emulated: bool,
    /// probe-rs's chip name, for silicon.
    pub probe_chip: Option<String>,
    /// SysTick's clock under QEMU, Hz (0 for silicon): with one instruction per nanosecond
    /// (`-icount shift=0`), a count is a multiple of `1e9 / systick_hz` instructions.
    pub systick_hz: u64,
}

/// Every board of the registry, sorted by name.
pub fn boards() -> anyhow::Result<Vec<Board>> {
    let dir = repo_root().join("firmware/boards");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = e?.path().join("board.env");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let get = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(|v| v.trim().trim_matches('"').to_string())
                .unwrap_or_default()
        };
        let name = path
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let chip = get("PROBE_CHIP");
        out.push(Board {
            name,
            description: get("DESCRIPTION"),
            emulated: !get("QEMU_MACHINE").is_empty(),
            probe_chip: (!chip.is_empty()).then_some(chip),
            systick_hz: get("SYSTICK_HZ").parse().unwrap_or(0),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The registry's board named `name`, or an error listing them.
pub fn board(name: &str) -> anyhow::Result<Board> {
    let all = boards()?;
    match all.iter().find(|b| b.name == name) {
        Some(b) => Ok(b.clone()),
        None => {
            let names: Vec<&str> = all.iter().map(|b| b.name.as_str()).collect();
            bail!("unknown board '{name}' (known: {})", names.join(", "))
        }
    }
}

/// Builds the firmware embedding `model` and `inputs`; returns a private copy of the ELF.
pub fn build_firmware(model: &Path, inputs: &Path, out_dir: &Path) -> anyhow::Result<PathBuf> {
    build_firmware_for("mps2-an386", model, inputs, out_dir)
}

/// [`build_firmware`] for a named board (`scripts/build-firmware.sh --board`).
pub fn build_firmware_for(
    board: &str,
    model: &Path,
    inputs: &Path,
    out_dir: &Path,
) -> anyhow::Result<PathBuf> {
    build_firmware_with(board, &[], model, inputs, out_dir)
}

/// [`build_firmware_for`] with extra firmware cargo features (e.g. `overflow-test`).
pub fn build_firmware_with(
    board: &str,
    features: &[&str],
    model: &Path,
    inputs: &Path,
    out_dir: &Path,
) -> anyhow::Result<PathBuf> {
    let _guard = FIRMWARE_BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let root = repo_root();
    let mut cmd = Command::new(root.join("scripts/build-firmware.sh"));
    if !features.is_empty() {
        cmd.arg("--features").arg(features.join(","));
    }
    let out = cmd
        .arg("--board")
        .arg(board)
        .arg("--model")
        .arg(model)
        .arg("--inputs")
        .arg(inputs)
        .current_dir(&root)
        .output()
        .context("cannot start scripts/build-firmware.sh")?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if let Some(msg) = budget_refusal(&stderr) {
            bail!("{msg}");
        }
        bail!(
            "firmware build failed ({}); run scripts/firmware-toolchain.sh first if the toolchain is missing:\n{stderr}",
            out.status,
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let elf = stdout
        .lines()
        .last()
        .context("build-firmware.sh printed no ELF path")?
        .trim();
    let copy = out_dir.join("firmware.elf");
    std::fs::copy(elf, &copy).with_context(|| format!("cannot copy {elf}"))?;
    Ok(copy)
}

/// The budget check's refusal (firmware/build.rs) out of cargo's output: it is the whole
/// answer when a model does not fit a board, so it is said alone.
fn budget_refusal(stderr: &str) -> Option<String> {
    let at = stderr.find("error: firmware does not fit board")?;
    let msg: Vec<&str> = stderr[at + "error: ".len()..]
        .lines()
        .map(str::trim)
        .take_while(|l| !l.is_empty())
        .collect();
    Some(msg.join("\n"))
}

/// What the firmware printed, parsed.
#[derive(Debug, Default, Clone)]
pub struct DeviceRun {
    pub status: i32,
    pub outputs: Vec<Vec<i8>>,
    pub insns: Vec<u64>,
    /// `BOX` lines of localization models: (index, detection).
    pub boxes: Vec<(usize, runtime::Detection)>,
    /// `DET` lines of grid detectors: (index, detection), in printed order.
    pub detections: Vec<(usize, runtime::Detection)>,
    /// `LAYER` lines: (index, kind, instructions) of the profiling inference.
    pub layers: Vec<(usize, String, u64)>,
    pub stack: Option<usize>,
    pub done: Option<usize>,
    pub error: Option<String>,
    pub stdout: String,
}

fn unhex(s: &str) -> anyhow::Result<Vec<i8>> {
    if !s.len().is_multiple_of(2) {
        bail!("odd-length hex '{s}'");
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&s[i..i + 2], 16)
                .map(|b| b as i8)
                .with_context(|| format!("bad hex '{s}'"))
        })
        .collect()
}

pub fn parse_device_output(stdout: &str, status: i32) -> anyhow::Result<DeviceRun> {
    let mut run = DeviceRun {
        status,
        stdout: stdout.to_owned(),
        ..Default::default()
    };
    for line in stdout.lines() {
        let mut w = line.split_whitespace();
        match (w.next(), w.next(), w.next()) {
            (Some("OUT"), Some(i), Some(hex)) => {
                let i: usize = i.parse()?;
                if i != run.outputs.len() {
                    bail!(
                        "OUT lines out of order: got {i}, expected {}",
                        run.outputs.len()
                    );
                }
                run.outputs.push(unhex(hex)?);
            }
            (Some("INSN"), Some(_), Some(n)) => run.insns.push(n.parse()?),
            (Some(kind @ ("BOX" | "DET")), Some(i), Some(class)) => {
                let rest: Vec<i32> = w.map(|v| v.parse()).collect::<Result<_, _>>()?;
                let [score, x0, y0, x1, y1] = rest[..] else {
                    bail!("bad {kind} line '{line}'")
                };
                let bbox = runtime::BoxQ4 { x0, y0, x1, y1 };
                let d = runtime::Detection {
                    class: class.parse()?,
                    score: score as i8,
                    bbox,
                };
                let list = if kind == "BOX" {
                    &mut run.boxes
                } else {
                    &mut run.detections
                };
                list.push((i.parse()?, d));
            }
            (Some("LAYER"), Some(k), Some(kind)) => {
                let n = w.next().context("LAYER line without a count")?;
                run.layers.push((k.parse()?, kind.to_owned(), n.parse()?));
            }
            (Some("STACK"), Some("OVERFLOW:"), _) => run.error = Some(line.to_owned()),
            (Some("STACK"), Some(n), _) => run.stack = Some(n.parse()?),
            (Some("DONE"), Some(n), _) => run.done = Some(n.parse()?),
            (Some("ERR"), _, _) => run.error = Some(line[4..].to_owned()),
            _ => {}
        }
    }
    Ok(run)
}

/// Runs an ELF in QEMU (mps2-an386, semihosting, -icount) through scripts/run-qemu.sh.
pub fn run_qemu(elf: &Path) -> anyhow::Result<DeviceRun> {
    run_qemu_on("mps2-an386", elf)
}

/// [`run_qemu`] on the emulated `board` the ELF was built for.
pub fn run_qemu_on(board: &str, elf: &Path) -> anyhow::Result<DeviceRun> {
    let out = Command::new(repo_root().join("scripts/run-qemu.sh"))
        .arg("--board")
        .arg(board)
        .arg(elf)
        .output()
        .context("cannot start scripts/run-qemu.sh")?;
    let status = out.status.code().unwrap_or(-1);
    parse_device_output(&String::from_utf8_lossy(&out.stdout), status)
}

/// A firmware test-vector file ([`runtime::vectors`]) for `raw`, inputs of `len` bytes.
pub fn vector_file(len: usize, raw: &[u8]) -> Vec<u8> {
    runtime::vectors::write(len, raw)
}

/// Splits a firmware test-vector file ([`runtime::vectors`]) into its inputs.
pub fn read_vectors(bytes: &[u8]) -> anyhow::Result<Vec<Vec<i8>>> {
    let v = runtime::vectors::Vectors::parse(bytes)
        .map_err(|e| anyhow::anyhow!("test-vector file: {e}"))?;
    Ok(v.inputs()
        .map(|c| c.iter().map(|&b| b as i8).collect())
        .collect())
}

/// The host runtime's output for each input.
pub fn host_outputs(blob: &[u8], inputs: &[Vec<i8>]) -> anyhow::Result<Vec<Vec<i8>>> {
    let m = runtime::Model::from_bytes(blob).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut arena = vec![0u8; m.arena_bytes()];
    let mut it = runtime::Interpreter::new(&m, &mut arena).map_err(|e| anyhow::anyhow!("{e}"))?;
    inputs
        .iter()
        .map(|x| {
            it.input_mut().copy_from_slice(x);
            it.invoke().map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok(it.output().to_vec())
        })
        .collect()
}

/// The host runtime's decoded detection for each output (localization models), else empty.
pub fn host_boxes(
    blob: &[u8],
    outputs: &[Vec<i8>],
) -> anyhow::Result<Vec<(usize, runtime::Detection)>> {
    let m = runtime::Model::from_bytes(blob).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(match m.box_decoder() {
        Some(d) => outputs
            .iter()
            .enumerate()
            .map(|(i, o)| (i, d.decode(o)))
            .collect(),
        None => Vec::new(),
    })
}

/// The host runtime's grid detections for each output (grid detectors), else empty.
pub fn host_detections(
    blob: &[u8],
    outputs: &[Vec<i8>],
) -> anyhow::Result<Vec<(usize, runtime::Detection)>> {
    let m = runtime::Model::from_bytes(blob).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(match m.grid_decoder() {
        Some(d) => outputs
            .iter()
            .enumerate()
            .flat_map(|(i, o)| d.decode(o).into_iter().map(move |x| (i, x)))
            .collect(),
        None => Vec::new(),
    })
}

/// First image whose device output differs from the host's, with both outputs, or `None`.
pub fn first_mismatch(host: &[Vec<i8>], device: &[Vec<i8>]) -> Option<String> {
    if host.len() != device.len() {
        return Some(format!(
            "host has {} outputs, device {}",
            host.len(),
            device.len()
        ));
    }
    host.iter().zip(device).enumerate().find(|(_, (h, d))| h != d).map(|(i, (h, d))| {
        let byte = h.iter().zip(d).position(|(a, b)| a != b).unwrap_or(0);
        format!("image {i}: first differing output byte {byte} (final layer)\n  host   {h:?}\n  device {d:?}")
    })
}

/// Flash (.vector_table + .text + .rodata + .data) and static RAM (.data + .bss + .uninit).
pub fn firmware_size(elf: &Path) -> anyhow::Result<(u64, u64)> {
    let out = Command::new(repo_root().join("scripts/firmware-size.sh"))
        .arg(elf)
        .output()
        .context("cannot start scripts/firmware-size.sh")?;
    if !out.status.success() {
        bail!(
            "firmware-size.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let get = |k: &str| -> anyhow::Result<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(k).and_then(|v| v.trim().parse().ok()))
            .with_context(|| format!("firmware-size.sh printed no '{k}' line"))
    };
    Ok((get("flash ")?, get("ram_static ")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What cargo prints when build.rs refuses a model: the refusal alone comes out.
    #[test]
    fn a_refused_budget_is_said_alone() {
        let stderr = "   Compiling firmware v0.1.0\nerror: failed to run custom build command\n  --- stderr\n\n  error: firmware does not fit board microbit: arena (11136 B) + stack: 18944 B of RAM exceeds board RAM (16384 B).\n         BBC micro:bit v1.\n         Model: m.bin\n\nwarning: build failed";
        assert_eq!(
            budget_refusal(stderr).unwrap(),
            "firmware does not fit board microbit: arena (11136 B) + stack: 18944 B of RAM exceeds board RAM (16384 B).\nBBC micro:bit v1.\nModel: m.bin"
        );
        assert_eq!(budget_refusal("error: linker failed"), None);
    }
}
