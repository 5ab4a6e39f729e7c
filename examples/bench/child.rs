//! The runner child: this benchmark program re-executed as the runner
//! (`bench --runner-child DIR`), built from the daemon's own parts, for when
//! the release binary is not there or does not run.

use std::path::Path;

pub fn run(dir: &Path) -> anyhow::Result<()> {
    anyhow::bail!(
        "the in-process runner needs the daemon's HTTP transport, which this build does not have (runner directory {})",
        dir.display()
    )
}
