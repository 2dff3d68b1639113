//! `trainer compare`: every detector on the same test canvases, as a markdown table.

use crate::detect::compare::CompareArgs;

pub fn run(a: &CompareArgs) -> anyhow::Result<()> {
    let c = crate::detect::compare::compare(a)?;
    let md = c.to_markdown();
    print!("{md}");
    if let Some(p) = &a.out {
        crate::io::write_atomic(p, md.as_bytes())?;
    }
    if a.json {
        println!("{}", serde_json::to_string(&c)?);
    }
    Ok(())
}
