//! `trainer device`: the firmware built for a blob and a board, run in QEMU and checked against
//! the host runtime (library call `deploy::board::cmd_device`), printed.

use crate::deploy::board::{cmd_device, DeviceArgs};

pub fn run(a: &DeviceArgs) -> anyhow::Result<()> {
    let r = cmd_device(a)?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        print!("{}", r.to_text());
    }
    Ok(())
}
