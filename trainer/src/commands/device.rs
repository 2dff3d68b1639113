//! `trainer device`: build the firmware for any model blob, run it on the emulated board, check
//! it byte for byte against the host runtime and show where the instructions go, layer by
//! layer. For a real board it builds the ELF and says how to flash it.

use crate::commands::data::DataArgs;
use crate::data::source::DataSource;
use crate::deploy::device;
use anyhow::{bail, Context};
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::PathBuf;

#[derive(clap::Args, Clone, Debug)]
pub struct DeviceArgs {
    /// Model blob to run (what `export` wrote).
    #[arg(long)]
    pub model: PathBuf,
    /// Board to build for, a folder of `firmware/boards/` (an unknown name lists them): the
    /// emulated ones run in QEMU here; for silicon the ELF is built and the probe-rs command
    /// to flash it printed.
    #[arg(long, default_value = "mps2-an386")]
    pub board: String,
    /// Test inputs run on the board, each compared byte for byte with the host runtime.
    #[arg(long, default_value_t = 20)]
    pub images: usize,
    #[command(flatten)]
    pub data: DataArgs,
    /// Keep the build folder (the firmware, the embedded model and inputs) in the system's
    /// temporary directory; by default it is removed after an emulated run.
    #[arg(long)]
    pub keep_build: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Instructions of one layer in the profiling inference.
#[derive(Debug, Clone, Serialize)]
pub struct LayerCost {
    pub index: usize,
    pub kind: String,
    pub out_shape: [u16; 3],
    pub macs: usize,
    pub instructions: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeviceReport {
    pub model: PathBuf,
    pub board: String,
    /// Where the inputs came from (test split, canvases, or seeded random bytes).
    pub inputs: String,
    pub images: usize,
    /// Images whose device output equals the host runtime's, byte for byte.
    pub bit_exact: usize,
    /// A classifier on labelled test images: how many the device classified as labelled.
    pub correct: Option<usize>,
    pub instructions_per_inference: u64,
    pub macs: usize,
    pub layers: Vec<LayerCost>,
    pub arena_bytes: usize,
    pub peak_stack_bytes: usize,
    pub static_ram_bytes: u64,
    pub flash_bytes: u64,
    /// The built ELF: kept for a real board and with `--keep-build`; `None` when the build
    /// folder was removed after the run.
    pub elf: Option<PathBuf>,
    /// Instructions per SysTick count on this board (40 at 25 MHz; 0 for silicon).
    pub systick_resolution: f64,
    /// The emulated board's core clock (its SysTick clock); 0 for silicon, which counts cycles.
    pub clock_hz: u64,
    /// probe-rs's chip name (silicon boards).
    pub probe_chip: Option<String>,
}

/// Test inputs for the model: a classifier's `--data` test split (which must have the model's
/// input shape); else the built-in data's test split (or canvases) when the model's input
/// shape matches a built-in architecture of its kind; else seeded random bytes. The second
/// value says which.
fn inputs_for(
    m: &runtime::Model,
    data: &DataSource,
    n: usize,
) -> anyhow::Result<(Vec<u8>, String, Vec<u8>)> {
    let labels = |d: &crate::data::Dataset| match m.def().head {
        runtime::format::Head::Classifier { .. } => d.labels[..n.min(d.len())].to_vec(),
        _ => Vec::new(),
    };
    let s = m.def().input.shape;
    let shape = [s.h as usize, s.w as usize, s.c as usize];
    if let (Some(dir), runtime::format::Head::Classifier { classes }) = (&data.data, m.def().head) {
        let (_, test) = data.load_channels(classes as usize, shape[2])?;
        crate::deploy::run::check_data_classes(m, &test)?;
        if [test.h, test.w, test.c] != shape {
            bail!(
                "--data {}: its images are {}x{}x{} but the model takes {:?}",
                dir.display(),
                test.h,
                test.w,
                test.c,
                shape
            );
        }
        let v = crate::deploy::run::test_vectors_for(m, &test, n);
        let k = n.min(test.len());
        let mut what = format!("the first {k} test images of {}", dir.display());
        if !m.def().labels.is_empty() {
            what += &format!(" (classes {})", crate::deploy::run::class_list(m));
        }
        return Ok((v, what, labels(&test)));
    }
    let builtin = crate::deploy::run::builtin_arch_for(m);
    if let Some(arch) = builtin.filter(|a| a.input == shape) {
        let (_, test) = data.load_for(&arch)?;
        let v = crate::deploy::run::test_vectors_for(m, &test, n);
        let what = format!(
            "the first {} test images of {}",
            n.min(test.len()),
            arch.name
        );
        return Ok((v, what, labels(&test)));
    }
    let len = m.input_len();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let raw: Vec<u8> = (0..n * len).map(|_| rng.gen::<u8>()).collect();
    let v = device::vector_file(len, &raw);
    let why = match m.def().head {
        runtime::format::Head::Values { .. } => "the model outputs values, not classes".into(),
        _ if !m.def().labels.is_empty() => format!(
            "the model's classes are its own ({}), the built-in data is not its data",
            crate::deploy::run::class_list(m)
        ),
        _ => format!("no built-in data set has input {shape:?}"),
    };
    Ok((
        v,
        format!("{n} seeded random inputs ({why}; --data DIR runs your own test images)"),
        Vec::new(),
    ))
}

pub fn cmd_device(a: &DeviceArgs) -> anyhow::Result<DeviceReport> {
    let spec = device::board(&a.board)?;
    let (board, runs) = (spec.name.as_str(), spec.emulated);
    if a.images == 0 {
        bail!("--images must be at least 1");
    }
    let blob = crate::deploy::run::read_blob(&a.model)?;
    let m = runtime::Model::from_bytes(&blob)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.model.display()))?;
    let (vectors, inputs, labels) = inputs_for(&m, &a.data.source(), a.images)?;
    let dir = tempdir()?;
    // Removed on every way out (errors included) unless kept; silicon keeps its ELF to flash.
    let build = BuildDir {
        path: dir.clone(),
        keep: a.keep_build || !runs,
    };
    let vpath = dir.join("inputs.bin");
    let mpath = dir.join("model.bin");
    std::fs::write(&vpath, &vectors)?;
    std::fs::write(&mpath, &blob)?;
    // A refusal names the user's model, not the build folder's copy of it.
    let elf = device::build_firmware_for(board, &mpath, &vpath, &dir).map_err(|e| {
        let copy = mpath.display().to_string();
        anyhow::anyhow!(
            "{}",
            format!("{e:#}").replace(&copy, &a.model.display().to_string())
        )
    })?;
    let (flash, ram) = device::firmware_size(&elf)?;
    let mut r = DeviceReport {
        model: a.model.clone(),
        board: board.into(),
        inputs,
        images: 0,
        bit_exact: 0,
        correct: None,
        instructions_per_inference: 0,
        macs: m.macs(),
        layers: Vec::new(),
        arena_bytes: m.arena_bytes(),
        peak_stack_bytes: 0,
        static_ram_bytes: ram,
        flash_bytes: flash,
        elf: Some(elf.clone()),
        probe_chip: spec.probe_chip.clone(),
        systick_resolution: if spec.systick_hz > 0 {
            1e9 / spec.systick_hz as f64
        } else {
            0.0
        },
        clock_hz: spec.systick_hz,
    };
    if !runs {
        return Ok(r);
    }
    let run = device::run_qemu_on(board, &elf)?;
    if run.status != 0 {
        bail!(
            "the firmware exited with status {} ({}):\n{}",
            run.status,
            run.error.as_deref().unwrap_or("no ERR line"),
            run.stdout
        );
    }
    let host = device::host_outputs(&blob, &device::read_vectors(&vectors)?)?;
    r.images = run.outputs.len();
    r.bit_exact = host
        .iter()
        .zip(&run.outputs)
        .filter(|(h, d)| h == d)
        .count();
    if let Some(mm) = device::first_mismatch(&host, &run.outputs) {
        bail!("device differs from the host runtime: {mm}");
    }
    if labels.len() == run.outputs.len() {
        let right = |(o, &l): (&Vec<i8>, &u8)| runtime::argmax(o) == Some(l as usize);
        r.correct = Some(
            run.outputs
                .iter()
                .zip(&labels)
                .filter(|p| right(*p))
                .count(),
        );
    }
    r.instructions_per_inference = run.insns.iter().sum::<u64>() / run.insns.len().max(1) as u64;
    r.peak_stack_bytes = run.stack.unwrap_or(0);
    r.layers = run
        .layers
        .iter()
        .zip(m.layer_info())
        .map(|((k, kind, n), info)| LayerCost {
            index: *k,
            kind: kind.clone(),
            out_shape: info.out_shape.dims(),
            macs: info.macs,
            instructions: *n,
        })
        .collect();
    if !build.keep {
        r.elf = None;
    }
    Ok(r)
}

/// The build folder, removed when dropped unless `keep`.
struct BuildDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for BuildDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A build folder of its own per call (calls from several threads of one process included).
fn tempdir() -> anyhow::Result<PathBuf> {
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let k = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("trainer-device-{}-{k}", std::process::id()));
    std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
    Ok(d)
}

impl DeviceReport {
    /// The per-layer table and the totals, as `device` prints them.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "model {} on {}", self.model.display(), self.board);
        if self.images == 0 {
            let _ = writeln!(
                s,
                "built {} ({} B flash, {} B static RAM incl. the {} B arena)\n\
                 flash it with: probe-rs run --chip {} {}\n\
                 (the board prints CYCLES lines instead of INSN; untested on silicon)",
                self.elf
                    .as_deref()
                    .unwrap_or(std::path::Path::new("?"))
                    .display(),
                self.flash_bytes,
                self.static_ram_bytes,
                self.arena_bytes,
                self.probe_chip.as_deref().unwrap_or("CHIP"),
                self.elf
                    .as_deref()
                    .unwrap_or(std::path::Path::new("?"))
                    .display()
            );
            return s;
        }
        let _ = writeln!(s, "inputs: {}", self.inputs);
        let _ = writeln!(
            s,
            "{:>5}  {:<16} {:>14} {:>10} {:>12} {:>8}",
            "layer", "kind", "output", "MACs", "instructions", "per MAC"
        );
        for l in &self.layers {
            let per = if l.macs > 0 {
                format!("{:.2}", l.instructions as f64 / l.macs as f64)
            } else {
                "-".into()
            };
            let sh = format!("{}x{}x{}", l.out_shape[0], l.out_shape[1], l.out_shape[2]);
            let _ = writeln!(
                s,
                "{:>5}  {:<16} {:>14} {:>10} {:>12} {:>8}",
                l.index, l.kind, sh, l.macs, l.instructions, per
            );
        }
        let _ = writeln!(
            s,
            "instructions per inference: {} ({:.2} per MAC; per-layer lines are one profiling \
             inference, SysTick resolution {} instructions)",
            self.instructions_per_inference,
            self.instructions_per_inference as f64 / self.macs.max(1) as f64,
            self.systick_resolution
        );
        if let Some(line) = latency_line(self.instructions_per_inference, self.clock_hz) {
            let _ = writeln!(s, "{line}");
        }
        let _ = writeln!(
            s,
            "bit-exact with the host runtime: {} / {}",
            self.bit_exact, self.images
        );
        if let Some(c) = self.correct {
            let _ = writeln!(
                s,
                "classified as labelled on the device: {c} / {}",
                self.images
            );
        }
        let _ = writeln!(
            s,
            "RAM: {} B static (arena {} B) + {} B peak stack; flash {} B",
            self.static_ram_bytes, self.arena_bytes, self.peak_stack_bytes, self.flash_bytes
        );
        if let Some(elf) = &self.elf {
            let _ = writeln!(s, "build kept: {}", elf.display());
        }
        s
    }
}

/// What `insns` instructions take at the board's clock, at the emulator's one instruction per
/// cycle: a lower bound on silicon, where loads, multiplies and taken branches can take more.
/// `None` without a clock (silicon counts cycles itself) or a count.
fn latency_line(insns: u64, clock_hz: u64) -> Option<String> {
    if clock_hz == 0 || insns == 0 {
        return None;
    }
    let ms = insns as f64 * 1e3 / clock_hz as f64;
    let mhz = clock_hz as f64 / 1e6;
    Some(format!(
        "at the board's {mhz} MHz clock: {ms:.2} ms per inference at one instruction per cycle \
         (a lower bound: on silicon some instructions take more than one cycle)"
    ))
}

/// `trainer device`: the per-layer table and totals (or the report as JSON with `--json`).
pub fn run(a: &DeviceArgs) -> anyhow::Result<()> {
    let r = cmd_device(a)?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        print!("{}", r.to_text());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::latency_line;

    /// Milliseconds at the board's clock beside the count (#33: instructions but no time).
    #[test]
    fn latency_is_printed_at_the_boards_clock() {
        let line = latency_line(745_808, 25_000_000).unwrap();
        assert!(line.contains("25 MHz clock: 29.83 ms"), "{line}");
        let m0 = latency_line(2_684_506, 16_000_000).unwrap();
        assert!(m0.contains("16 MHz clock: 167.78 ms"), "{m0}");
        assert_eq!(latency_line(745_808, 0), None);
    }
}
