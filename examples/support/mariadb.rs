//! Shared by the MariaDB benchmarks (`bench_engines`, `bench_peers`): a clean demo
//! estate generated into a temp folder and its OpenCare loaded into the server.

use escr_gateway::demo::{generate, FaultRates, GenerateOptions};

/// `people` generated without faults into a temp folder (kept while the result is),
/// OpenCare loaded into the database `opts` names; the rows loaded.
pub async fn opencare_loaded(
    people: usize,
    opts: &mysql_async::Opts,
) -> anyhow::Result<(tempfile::TempDir, u64)> {
    let work = tempfile::tempdir()?;
    generate(
        &GenerateOptions {
            people,
            faults: FaultRates::none(),
            ..GenerateOptions::default()
        },
        work.path(),
    )?;
    let rows =
        escr_gateway::demo::load::sqlite_to_mysql(&work.path().join("opencare.db"), opts.clone())
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
    Ok((work, rows))
}
